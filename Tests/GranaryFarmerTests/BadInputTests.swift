import Foundation
import GranaryContracts
import GranaryCore
import GranaryTestSupport
import GranaryWire
import NIOCore
import Testing

/// Each bad input gets a clear error, and the farmer keeps serving others.
@Suite(.serialized, .timeLimit(.minutes(3)))
final class BadInputTests {
    let dir = TemporaryDirectory()
    let farmer: FarmerProcess

    init() throws {
        farmer = try FarmerProcess(storage: dir.sub("farm"), capacity: "8M")
    }

    deinit { farmer.process.stop() }

    /// A well-behaved renter still gets served: contract, store, read.
    func assertStillServing() async throws {
        let renter = newRenter()
        let client = try await farmer.connect(renter)
        let c = try await client.proposeContract(proposal(renter: renter, farmer: farmer.nodeID, allowance: 1 << 20), difficulty: testDifficulty)
        let bytes = testBytes(10_000, seed: 99)
        let root = MerkleTree(data: bytes).root
        let id = Hash256.random()
        _ = try await client.storePiece(contract: c.id, pieceID: id, root: root, bytes: bytes)
        #expect(try await client.readRange(pieceID: id, root: root, pieceSize: bytes.count, range: 0..<bytes.count) == bytes)
        #expect(try await client.deletePiece(pieceID: id))
        await client.close()
    }

    func refusal(_ frame: Frame?) -> Granary_TransferError? {
        guard let frame, frame.type == .refusal else { return nil }
        return try? Granary_TransferError(serializedBytes: Array(frame.payload.readableBytesView))
    }

    @Test func oversizedFrameBeforeAndAfterHandshake() async throws {
        let raw = try RawConnection(port: farmer.port)
        raw.send([0x00, 0x50, 0x00, 0x00, 2])  // claims 5 MiB: refused before allocation
        let r = refusal(try raw.receive())
        #expect(r?.code == .frameTooLarge)
        #expect(r?.message.contains("exceeds the maximum") == true, "\(String(describing: r))")

        let raw2 = try RawConnection(port: farmer.port)
        try raw2.handshake(identity: newRenter(), expected: farmer.nodeID)
        raw2.send([0x7f, 0xff, 0xff, 0xff, 3])
        let answer = try raw2.receiveResponse()
        #expect(answer?.error.code == .frameTooLarge, "\(farmer.process.output.suffix(5))")
        #expect(try raw2.receive() == nil)  // then the session ends
        try await assertStillServing()
    }

    @Test func truncatedFrame() async throws {
        let raw = try RawConnection(port: farmer.port)
        try raw.handshake(identity: newRenter(), expected: farmer.nodeID)
        raw.send([0, 0, 1, 0, 2] + [UInt8](repeating: 7, count: 10))  // 256 announced, 10 sent
        raw.shutdownWrite()
        _ = try raw.receive()  // the farmer closes its side
        try farmer.waitForLog("connection ended inside a frame")
        try await assertStillServing()
    }

    @Test func garbageHandshakes() async throws {
        // Random bytes in a HELLO frame.
        let raw = try RawConnection(port: farmer.port)
        raw.send(Frame(type: .hello, payload: ByteBuffer(bytes: testBytes(200, seed: 5))))
        let r = refusal(try raw.receive())
        #expect(r?.code == .unauthenticated)
        #expect(r?.message.contains("handshake failed") == true)
        // Not our protocol at all.
        let http = try RawConnection(port: farmer.port)
        http.send(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        #expect(refusal(try http.receive()) != nil)
        // A sealed frame before any handshake.
        let early = try RawConnection(port: farmer.port)
        early.send(Frame(type: .sealed, payload: ByteBuffer(bytes: testBytes(64, seed: 6))))
        #expect(refusal(try early.receive())?.message.contains("not HELLO") == true)
        // A renter whose proof of work is short, and one asking for another farmer.
        let weak = NodeIdentity.generate(difficulty: 0)
        if weak.publicKey.proofOfWorkBits < testDifficulty {
            let w = try RawConnection(port: farmer.port)
            w.send(Frame(type: .hello, payload: ClientHandshake(identity: weak, expectedPeer: nil, difficulty: 0).hello))
            #expect(refusal(try w.receive())?.message.contains("proof of work") == true)
        }
        await #expect(throws: TransferError.self) {
            _ = try await TransferClient.connect(to: "127.0.0.1", port: self.farmer.port, identity: newRenter(),
                                                 expectedPeer: .random(), difficulty: testDifficulty)
        }
        try await assertStillServing()
    }

    @Test func replayedFrameEndsTheSession() async throws {
        let raw = try RawConnection(port: farmer.port)
        try raw.handshake(identity: newRenter(), expected: farmer.nodeID)
        var audit = Granary_Audit(); audit.pieceID = Data(Hash256.random().bytes)
        let sent = try raw.sendRequest(request(1, .audit(audit)))
        #expect(try raw.receiveResponse()?.error.code == .notFound)  // a normal refusal; session goes on
        raw.send(sent)  // the same sealed frame again
        #expect(try raw.receive() == nil)
        try farmer.waitForLog("failed to open")
        try await assertStillServing()
    }

    @Test func forgedContractSignatures() async throws {
        let renter = newRenter()
        let client = try await farmer.connect(renter)
        var envelope = try proposal(renter: renter, farmer: farmer.nodeID).envelope
        envelope.signature[3] ^= 1
        do {
            _ = try await client.proposeContract(envelope: envelope)
            Issue.record("forged contract accepted")
        } catch {
            #expect(error.code == .badSignature)
        }
        // A contract signed by someone else than the session's renter.
        let other = try proposal(renter: newRenter(), farmer: farmer.nodeID).envelope
        do { _ = try await client.proposeContract(envelope: other); Issue.record("foreign contract accepted") } catch {
            #expect(error.code == .badSignature)
        }
        // A contract for another farmer.
        do { _ = try await client.proposeContract(envelope: try proposal(renter: renter, farmer: .random()).envelope); Issue.record("accepted") } catch {
            #expect((error as? TransferError)?.code == .contractRejected)
        }
        #expect(await client.isUsable)
        // A countersignature that does not verify is caught on the renter side.
        let good = try await client.proposeContract(proposal(renter: renter, farmer: farmer.nodeID), difficulty: testDifficulty)
        var tampered = good.message
        tampered.farmerSignature[0] ^= 1
        #expect(throws: ContractError.badFarmerSignature) { _ = try SignedContract(verifying: tampered, difficulty: testDifficulty) }
        await client.close()
        try await assertStillServing()
    }

    @Test func vouchers() async throws {
        let renter = newRenter()
        let client = try await farmer.connect(renter)
        let c = try await client.proposeContract(proposal(renter: renter, farmer: farmer.nodeID), difficulty: testDifficulty)
        func voucher(_ amount: UInt64, _ seq: UInt64, signer: NodeIdentity? = nil) throws -> SignedVoucher {
            try PaymentVoucher(contractID: c.id, paymentChannelID: c.contract.paymentChannelID, cumulativeAmount: amount, sequence: seq)
                .signed(by: signer ?? renter)
        }
        _ = try await client.sendVoucher(voucher(100, 1))
        for (bad, why) in [(try voucher(50, 2), "lower"), (try voucher(100, 1), "reused"), (try voucher(200, 1), "same sequence")] {
            do { _ = try await client.sendVoucher(bad); Issue.record("\(why) voucher accepted") } catch {
                #expect(error.code == .staleVoucher, "\(why)")
                // The farmer names its highest, so a renter whose ledger is behind can continue above it.
                guard case let .staleVoucher(last, _) = error else { Issue.record("\(why): \(error)"); continue }
                #expect(last.cumulativeAmount == 100 && last.sequence == 1, "\(why)")
            }
        }
        var forged = try voucher(300, 3).envelope
        forged.signature[10] ^= 0x40
        do { _ = try await client.sendVoucher(envelope: forged); Issue.record("forged voucher accepted") } catch {
            #expect(error.code == .badSignature)
        }
        do { _ = try await client.sendVoucher(voucher(300, 3, signer: newRenter())); Issue.record("stranger's voucher accepted") } catch {
            #expect((error as? TransferError)?.code == .badSignature || (error as? TransferError)?.code == .unknownContract)
        }
        #expect(try await client.sendVoucher(voucher(300, 3)).cumulativeAmount == 300)
        await client.close()
    }

    @Test func capacityAllowanceAndRootMismatch() async throws {
        let renter = newRenter()
        let client = try await farmer.connect(renter)
        // Farmer capacity is 8 MiB. Two contracts of 6 MiB each are signed
        // (nothing stored yet), but their pieces cannot both fit.
        let a = try await client.proposeContract(proposal(renter: renter, farmer: farmer.nodeID, allowance: 6 << 20), difficulty: testDifficulty)
        let b = try await client.proposeContract(proposal(renter: renter, farmer: farmer.nodeID, allowance: 6 << 20), difficulty: testDifficulty)
        let big = testBytes(5 << 20, seed: 7)
        let bigRoot = MerkleTree(data: big).root
        _ = try await client.storePiece(contract: a.id, pieceID: .random(), root: bigRoot, bytes: big)
        do { _ = try await client.storePiece(contract: b.id, pieceID: .random(), root: bigRoot, bytes: big); Issue.record("stored past capacity") } catch {
            #expect(error.code == .noCapacity)
            #expect(error.description.contains("does not fit"))
        }
        let small = testBytes(1536 << 10, seed: 8)
        do { _ = try await client.storePiece(contract: a.id, pieceID: .random(), root: MerkleTree(data: small).root, bytes: small); Issue.record("allowance passed") } catch {
            #expect(error.code == .allowanceExceeded)
        }
        // Bytes that do not match the declared root: refused, nothing kept.
        let piece = Hash256.random()
        do { _ = try await client.storePiece(contract: b.id, pieceID: piece, root: bigRoot, bytes: small); Issue.record("root mismatch accepted") } catch {
            #expect(error.code == .rootMismatch)
        }
        #expect(await client.isUsable)
        do { _ = try await client.audit(pieceID: piece, leaf: 0); Issue.record("mismatched piece kept") } catch {
            #expect(error.code == .notFound)
        }
        // The same ID then stores fine with the right root: nothing was reserved or left.
        _ = try await client.storePiece(contract: b.id, pieceID: piece, root: MerkleTree(data: small).root, bytes: small)
        #expect(try FileManager.default.contentsOfDirectory(atPath: farmer.storage + "/tmp").isEmpty)
        await client.close()
    }

    @Test func disconnectMidUploadLeavesNoPiece() async throws {
        let renter = newRenter()
        let raw = try RawConnection(port: farmer.port)
        try raw.handshake(identity: renter, expected: farmer.nodeID)
        var propose = Granary_ProposeContract()
        let p = try proposal(renter: renter, farmer: farmer.nodeID, allowance: 4 << 20)
        propose.contract = p.envelope
        try raw.sendRequest(request(1, .proposeContract(propose)))
        #expect(try raw.receiveResponse()?.contractAccepted.hasContract == true)
        let bytes = testBytes(2 << 20, seed: 11)
        let root = MerkleTree(data: bytes).root
        let piece = Hash256.random()
        var store = Granary_StorePiece()
        store.contractID = Data(p.contract.id.bytes); store.pieceID = Data(piece.bytes)
        store.size = UInt64(bytes.count); store.merkleRoot = Data(root.bytes)
        try raw.sendRequest(request(2, .storePiece(store)))
        #expect(try raw.receiveResponse()?.storeReady.pieceID == Data(piece.bytes))
        raw.send(Frame(type: .data, payload: ByteBuffer(bytes: bytes[0..<(1 << 20)])))
        raw.closeNow()  // gone mid-upload
        try farmer.waitForLog("session ended")

        let client = try await farmer.connect(renter)
        do { _ = try await client.audit(pieceID: piece, leaf: 0); Issue.record("partial piece is readable") } catch {
            #expect(error.code == .notFound)
        }
        // Its reservation was released: the full piece fits the 4 MiB allowance again.
        _ = try await client.storePiece(contract: p.contract.id, pieceID: piece, root: root, bytes: bytes)
        #expect(try await client.readRange(pieceID: piece, root: root, pieceSize: bytes.count, range: 0..<4096) == Array(bytes[0..<4096]))
        #expect(try FileManager.default.contentsOfDirectory(atPath: farmer.storage + "/tmp").isEmpty)
        await client.close()
    }
}
