import Foundation
import GranaryContracts
import GranaryCore
import GranaryTestSupport
import GranaryWire
import NIOCore
import Testing

@Suite(.serialized, .timeLimit(.minutes(3)))
struct RoundTripTests {
    @Test func storeReadAuditVoucherDeleteRenew() async throws {
        let dir = TemporaryDirectory()
        let farmer = try FarmerProcess(storage: dir.sub("farm"))
        let renter = newRenter()
        let client = try await farmer.connect(renter)
        #expect(await client.peer.id == farmer.nodeID)

        let signed = try await client.proposeContract(proposal(renter: renter, farmer: farmer.nodeID), difficulty: testDifficulty)
        #expect(signed.farmer.id == farmer.nodeID && signed.renter.id == renter.id)
        // Both signatures verify from the serialized form.
        _ = try SignedContract(serialized: signed.serialized, difficulty: testDifficulty)

        let size = 3 * 1024 * 1024 + 1234  // not a multiple of a leaf
        let bytes = testBytes(size, seed: 1)
        let root = MerkleTree(data: bytes).root
        let pieceID = Hash256.random()
        let stored = try await client.storePiece(contract: signed.id, pieceID: pieceID, root: root, bytes: bytes)
        #expect(stored.size == size && stored.contractBytesUsed == UInt64(size))

        for range in [0..<size, 0..<1, 4095..<4097, 100_000..<1_200_000, (size - 10)..<size, 8192..<12288, 5..<5] {
            let got = try await client.readRange(pieceID: pieceID, root: root, pieceSize: size, range: range)
            #expect(got == Array(bytes[range]), "range \(range)")
        }
        // A range checked against the wrong root is refused.
        await #expect(throws: TransferError.self) {
            _ = try await client.readRange(pieceID: pieceID, root: .random(), pieceSize: size, range: 0..<10)
        }
        let client2 = try await farmer.connect(renter)

        for leaf in [0, 17, MerkleTree.leafCount(byteCount: size) - 1] {
            let (data, proof) = try await client2.audit(pieceID: pieceID, leaf: leaf)
            #expect(proof.leaves == leaf..<(leaf + 1))
            #expect(MerkleTree.verify(proof, leafData: data, root: root))
        }
        let receipt = try await client2.sendVoucher(PaymentVoucher(contractID: signed.id, paymentChannelID: signed.contract.paymentChannelID,
                                                                   cumulativeAmount: 30, sequence: 1).signed(by: renter))
        #expect(receipt == VoucherReceipt(cumulativeAmount: 30, sequence: 1))

        // Renewal keeps the pieces.
        var renewed = signed.contract
        renewed.revision = 1
        renewed.endTime += 3600
        let renewal = try await client2.renewContract(renewed.proposal(signedBy: renter), difficulty: testDifficulty)
        #expect(renewal.contract.revision == 1 && renewal.contract.endTime == renewed.endTime)
        let again = try await client2.readRange(pieceID: pieceID, root: root, pieceSize: size, range: 0..<100)
        #expect(again == Array(bytes[0..<100]))

        #expect(try await client2.deletePiece(pieceID: pieceID))
        #expect(try await client2.deletePiece(pieceID: pieceID) == false)
        await #expect(throws: TransferError.self) {
            _ = try await client2.audit(pieceID: pieceID, leaf: 0)
        }
        await client.close()
        await client2.close()
        farmer.process.stop()
    }

    /// SIGTERM mid-upload: the farmer stops cleanly, and the half-sent piece
    /// is neither indexed nor left on disk.
    @Test func sigtermShutsDownCleanly() async throws {
        let dir = TemporaryDirectory()
        let storage = dir.sub("farm")
        let farmer = try FarmerProcess(storage: storage, extra: ["--status-interval", "0.2"])
        try farmer.waitForLog("bytes_used=0")  // the periodic status line
        let renter = newRenter()
        let raw = try RawConnection(port: farmer.port)
        try raw.handshake(identity: renter, expected: farmer.nodeID)
        var propose = Granary_ProposeContract()
        let p = try proposal(renter: renter, farmer: farmer.nodeID)
        propose.contract = p.envelope
        try raw.sendRequest(request(1, .proposeContract(propose)))
        _ = try raw.receiveResponse()
        var store = Granary_StorePiece()
        store.contractID = Data(p.contract.id.bytes); store.pieceID = Data(Hash256.random().bytes)
        store.size = 1 << 20; store.merkleRoot = Data(Hash256.random().bytes)
        try raw.sendRequest(request(2, .storePiece(store)))
        #expect(try raw.receiveResponse()?.storeReady.pieceID == store.pieceID)
        raw.send(Frame(type: .data, payload: ByteBuffer(bytes: testBytes(1000, seed: 3))))
        try await Task.sleep(for: .milliseconds(200))
        farmer.process.signal(SIGTERM)
        #expect(try farmer.process.waitForExit(timeout: 10) == 0)
        #expect(farmer.logged("shutting down") && farmer.logged("farmer stopped"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: storage + "/tmp").isEmpty)
    }
}
