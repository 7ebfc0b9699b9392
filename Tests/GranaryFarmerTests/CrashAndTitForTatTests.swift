import Foundation
import GranaryContracts
import GranaryCore
import GranaryFarmer
import GranaryTestSupport
import GranaryWire
import NIOCore
import Testing

@Suite(.serialized, .timeLimit(.minutes(3)))
struct CrashAndTitForTatTests {
    /// SIGKILL in the middle of an upload: the restarted farmer sweeps the
    /// partial file, keeps a consistent index, and serves what was stored.
    @Test func sigkillMidUploadRestartsConsistent() async throws {
        let dir = TemporaryDirectory()
        let storage = dir.sub("farm")
        let renter = newRenter()
        var farmer: FarmerProcess? = try FarmerProcess(storage: storage)
        let client = try await farmer!.connect(renter)
        let c = try await client.proposeContract(proposal(renter: renter, farmer: farmer!.nodeID, allowance: 16 << 20), difficulty: testDifficulty)
        let kept = testBytes(1 << 20, seed: 21)
        let keptRoot = MerkleTree(data: kept).root
        let keptID = Hash256.random()
        _ = try await client.storePiece(contract: c.id, pieceID: keptID, root: keptRoot, bytes: kept)
        await client.close()

        // Half an upload, then SIGKILL.
        let raw = try RawConnection(port: farmer!.port)
        try raw.handshake(identity: renter, expected: farmer!.nodeID)
        let partial = testBytes(4 << 20, seed: 22)
        let partialID = Hash256.random()
        var store = Granary_StorePiece()
        store.contractID = Data(c.id.bytes); store.pieceID = Data(partialID.bytes)
        store.size = UInt64(partial.count); store.merkleRoot = Data(MerkleTree(data: partial).root.bytes)
        try raw.sendRequest(request(1, .storePiece(store)))
        #expect(try raw.receiveResponse()?.storeReady.pieceID == Data(partialID.bytes))
        raw.send(Frame(type: .data, payload: ByteBuffer(bytes: partial[0..<(2 << 20)])))
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, (try? FileManager.default.contentsOfDirectory(atPath: storage + "/tmp"))?.isEmpty ?? true {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: storage + "/tmp").count == 1)
        farmer!.process.kill()
        raw.closeNow()
        farmer = nil

        let restarted = try FarmerProcess(storage: storage)
        #expect(restarted.logged("1 partial uploads removed"))
        #expect(restarted.logged("0 missing, 0 corrupt"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: storage + "/tmp").isEmpty)
        let again = try await restarted.connect(renter)
        #expect(try await again.readRange(pieceID: keptID, root: keptRoot, pieceSize: kept.count, range: 0..<kept.count) == kept)
        do { _ = try await again.audit(pieceID: partialID, leaf: 0); Issue.record("partial piece indexed") } catch {
            #expect(error.code == .notFound)
        }
        // The contract's accounting holds only the kept piece: the full piece fits.
        let stored = try await again.storePiece(contract: c.id, pieceID: partialID, root: MerkleTree(data: partial).root, bytes: partial)
        #expect(stored.contractBytesUsed == UInt64(kept.count + partial.count))
        await again.close()
        restarted.process.stop()
    }

    /// The startup check finds pieces whose files vanished or were damaged.
    @Test func startupCheckReportsMissingAndCorrupt() async throws {
        let dir = TemporaryDirectory()
        let storage = dir.sub("farm")
        let identity = NodeIdentity.generate(difficulty: testDifficulty)
        let config = FarmerConfiguration(storage: storage, capacity: 64 << 20, difficulty: testDifficulty)
        let farmer = try await Farmer.start(identity: identity, configuration: config)
        let running = Task { try await farmer.run() }
        let renter = newRenter()
        let client = try await TransferClient.connect(to: "127.0.0.1", port: farmer.port, identity: renter, expectedPeer: identity.id, difficulty: testDifficulty)
        let c = try await client.proposeContract(proposal(renter: renter, farmer: identity.id), difficulty: testDifficulty)
        var ids: [Hash256] = []
        for i in 0..<3 {
            let bytes = testBytes(100_000, seed: UInt64(30 + i))
            let id = Hash256.random()
            _ = try await client.storePiece(contract: c.id, pieceID: id, root: MerkleTree(data: bytes).root, bytes: bytes)
            ids.append(id)
        }
        await client.close()
        await farmer.shutdown()
        _ = try await running.value

        func path(_ id: Hash256) -> String { "\(storage)/pieces/\(id.hex.prefix(2))/\(id.hex.dropFirst(2).prefix(2))/\(id.hex)" }
        try FileManager.default.removeItem(atPath: path(ids[0]))
        let fh = try #require(FileHandle(forUpdatingAtPath: path(ids[1])))
        try fh.seek(toOffset: 5000); fh.write(Data([0xff, 0x00, 0xff])); try fh.close()

        let reopened = try PieceStore(root: storage, capacity: 64 << 20)
        let report = try reopened.checkOnStartup(verifyContents: true)
        #expect(report.checked == 3)
        #expect(report.missing == [ids[0]])
        #expect(report.corrupt == [ids[1]])
        #expect(try reopened.record(of: ids[2]) != nil)
        #expect(try reopened.record(of: ids[1]) == nil)
        #expect(reopened.pieceCount == 1 && reopened.usedBytes == 100_000)
    }

    /// Tit for tat with an injected clock: an unpaid contract past its grace
    /// period loses its pieces; a paid one keeps them; an expired one loses them.
    @Test func unpaidAndExpiredContractsAreDropped() async throws {
        let dir = TemporaryDirectory()
        let clock = ManualClock(now())
        let identity = NodeIdentity.generate(difficulty: testDifficulty)
        let config = FarmerConfiguration(storage: dir.sub("farm"), capacity: 64 << 20, gracePeriod: 600,
                                         sweepInterval: 3600, difficulty: testDifficulty)
        let farmer = try await Farmer.start(identity: identity, configuration: config, clock: clock)
        let running = Task { try await farmer.run() }
        defer { running.cancel() }
        let renter = newRenter()
        let client = try await TransferClient.connect(to: "127.0.0.1", port: farmer.port, identity: renter, expectedPeer: identity.id, difficulty: testDifficulty)
        let paid = try await client.proposeContract(proposal(renter: renter, farmer: identity.id, duration: 86_400), difficulty: testDifficulty)
        let unpaid = try await client.proposeContract(proposal(renter: renter, farmer: identity.id, duration: 86_400), difficulty: testDifficulty)
        let short = try await client.proposeContract(proposal(renter: renter, farmer: identity.id, duration: 900), difficulty: testDifficulty)
        let bytes = testBytes(50_000, seed: 40)
        let root = MerkleTree(data: bytes).root
        var pieces: [Hash256: Hash256] = [:]
        for contract in [paid, unpaid, short] {
            let id = Hash256.random()
            _ = try await client.storePiece(contract: contract.id, pieceID: id, root: root, bytes: bytes)
            pieces[contract.id] = id
        }
        clock.advance(by: 400)
        _ = try await client.sendVoucher(PaymentVoucher(contractID: paid.id, paymentChannelID: paid.contract.paymentChannelID,
                                                        cumulativeAmount: 10, sequence: 1).signed(by: renter))
        _ = try await client.sendVoucher(PaymentVoucher(contractID: short.id, paymentChannelID: short.contract.paymentChannelID,
                                                        cumulativeAmount: 10, sequence: 1).signed(by: renter))
        clock.advance(by: 300)  // unpaid: 700 s without payment > 600 s grace
        #expect(farmer.sweep() == [unpaid.id])
        #expect(try farmer.store.pieces(ofContract: unpaid.id).isEmpty)
        #expect(try farmer.store.pieces(ofContract: paid.id).count == 1)
        #expect(try farmer.contracts.contract(unpaid.id)?.state == .unpaid)
        do { _ = try await client.audit(pieceID: pieces[unpaid.id]!, leaf: 0); Issue.record("dropped piece still served") } catch {
            #expect(error.code == .notFound)
        }
        do {
            _ = try await client.storePiece(contract: unpaid.id, pieceID: .random(), root: root, bytes: bytes)
            Issue.record("stored under a dropped contract")
        } catch { #expect(error.code == .contractExpired) }

        clock.advance(by: 300)  // short contract (900 s) has ended
        #expect(farmer.sweep() == [short.id])
        #expect(try farmer.contracts.contract(short.id)?.state == .expired)
        let (leaf, proof) = try await client.audit(pieceID: pieces[paid.id]!, leaf: 3)
        #expect(MerkleTree.verify(proof, leafData: leaf, root: root))
        #expect(farmer.status().activeContracts == 1 && farmer.status().earnings == 20)
        await client.close()
        await farmer.shutdown()
    }
}
