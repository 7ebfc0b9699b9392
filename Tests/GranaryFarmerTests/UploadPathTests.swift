import Foundation
import GranaryContracts
import GranaryCore
import GranaryTestSupport
import GranaryWire
import NIOCore
import Testing

/// The upload path as restructured for speed: frames are copied once out
/// of the socket's reads (header and payload may arrive in any split), the
/// farmer hashes each byte once and writes batches of frames on its disk
/// pool while the next ones arrive. Nothing of that may change what is kept.
@Suite(.serialized, .timeLimit(.minutes(3)))
final class UploadPathTests {
    let dir = TemporaryDirectory()
    let farmer: FarmerProcess

    init() throws {
        farmer = try FarmerProcess(storage: dir.sub("farm"), capacity: "16M")
    }

    deinit { farmer.process.stop() }

    /// Opens a raw session with a contract; returns the connection and the contract ID.
    func rawSession(_ renter: NodeIdentity, allowance: UInt64) throws -> (RawConnection, Hash256) {
        let raw = try RawConnection(port: farmer.port)
        try raw.handshake(identity: renter, expected: farmer.nodeID)
        var propose = Granary_ProposeContract()
        let p = try proposal(renter: renter, farmer: farmer.nodeID, allowance: allowance)
        propose.contract = p.envelope
        try raw.sendRequest(request(1, .proposeContract(propose)))
        #expect(try raw.receiveResponse()?.contractAccepted.hasContract == true)
        return (raw, p.contract.id)
    }

    func storeRequest(contract: Hash256, piece: Hash256, bytes: [UInt8]) -> Granary_Request {
        var store = Granary_StorePiece()
        store.contractID = Data(contract.bytes); store.pieceID = Data(piece.bytes)
        store.size = UInt64(bytes.count); store.merkleRoot = Data(MerkleTree(data: bytes).root.bytes)
        return request(2, .storePiece(store))
    }

    /// Hundreds of frames of odd sizes (empty ones, single bytes, more than
    /// a write batch holds in frames), some dribbled a byte at a time so
    /// headers and payloads arrive split: the piece is stored whole and reads
    /// back byte for byte.
    @Test func oddFramesAndSplitReadsStoreThePieceWhole() async throws {
        let renter = newRenter()
        let (raw, contract) = try rawSession(renter, allowance: 8 << 20)
        var one: Int32 = 1
        setsockopt(raw.fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let bytes = testBytes(5 << 20 + 777, seed: 21)
        let piece = Hash256.random()
        try raw.sendRequest(storeRequest(contract: contract, piece: piece, bytes: bytes))
        #expect(try raw.receiveResponse()?.storeReady.pieceID == Data(piece.bytes))

        let sizes = [0, 1, 4095, 4097, 1, 0, 65_536, 3, 100_000, 2]
        var offset = 0, i = 0
        while offset < bytes.count {
            let n = min(sizes[i % sizes.count], bytes.count - offset)
            let frame = Frame.header(type: .data, payloadLength: n) + Array(bytes[offset..<(offset + n)])
            if i % 50 == 7 {
                // Dribbled: header and the start of the payload one byte per send.
                for b in frame.prefix(12) { raw.send([b]); usleep(200) }
                raw.send(Array(frame.dropFirst(12)))
            } else {
                raw.send(frame)
            }
            offset += n; i += 1
        }
        #expect(i > 64)  // more frames than one write batch takes
        let stored = try raw.receiveResponse()
        #expect(stored?.pieceStored.size == UInt64(bytes.count), "\(String(describing: stored))")
        raw.closeNow()

        let client = try await farmer.connect(renter)
        let root = MerkleTree(data: bytes).root
        #expect(try await client.readRange(pieceID: piece, root: root, pieceSize: bytes.count, range: 0..<bytes.count) == bytes)
        await client.close()
        #expect(try FileManager.default.contentsOfDirectory(atPath: farmer.storage + "/tmp").isEmpty)
    }

    /// The renter vanishes after more than a write batch: a write may still
    /// be running on the disk pool. Nothing becomes valid, the temporary
    /// file is gone, and the reservation is released.
    @Test func disconnectWithWritesInFlightLeavesNothing() async throws {
        let renter = newRenter()
        let size = 6 << 20
        let (raw, contract) = try rawSession(renter, allowance: UInt64(size))
        let bytes = testBytes(size, seed: 22)
        let piece = Hash256.random()
        try raw.sendRequest(storeRequest(contract: contract, piece: piece, bytes: bytes))
        #expect(try raw.receiveResponse()?.storeReady.pieceID == Data(piece.bytes))
        for start in stride(from: 0, to: 5 << 20, by: 1 << 20) {
            raw.send(Frame(type: .data, payload: ByteBuffer(bytes: bytes[start..<(start + (1 << 20))])))
        }
        raw.closeNow()
        try farmer.waitForLog("session ended")

        let client = try await farmer.connect(renter)
        do { _ = try await client.audit(pieceID: piece, leaf: 0); Issue.record("partial piece is readable") } catch {
            #expect(error.code == .notFound)
        }
        // The whole allowance is free again: the full piece stores and reads back.
        let root = MerkleTree(data: bytes).root
        _ = try await client.storePiece(contract: contract, pieceID: piece, root: root, bytes: bytes)
        #expect(try await client.readRange(pieceID: piece, root: root, pieceSize: size, range: (size - 5000)..<size) == Array(bytes[(size - 5000)...]))
        #expect(try FileManager.default.contentsOfDirectory(atPath: farmer.storage + "/tmp").isEmpty)
        await client.close()
    }

    /// A wrong root after several batches were written: refused, nothing
    /// kept, the session goes on and the same ID stores with the right root.
    @Test func rootMismatchAfterBatchesKeepsNothing() async throws {
        let renter = newRenter()
        let client = try await farmer.connect(renter)
        let c = try await client.proposeContract(proposal(renter: renter, farmer: farmer.nodeID, allowance: 12 << 20), difficulty: testDifficulty)
        let bytes = testBytes(9 << 20 + 5, seed: 23)
        let piece = Hash256.random()
        do {
            _ = try await client.storePiece(contract: c.id, pieceID: piece, root: Hash256.random(), bytes: bytes)
            Issue.record("a wrong root was accepted")
        } catch {
            #expect(error.code == .rootMismatch)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: farmer.storage + "/tmp").isEmpty)
        let root = MerkleTree(data: bytes).root
        _ = try await client.storePiece(contract: c.id, pieceID: piece, root: root, bytes: bytes)
        #expect(try await client.readRange(pieceID: piece, root: root, pieceSize: bytes.count, range: 0..<bytes.count) == bytes)
        await client.close()
    }
}
