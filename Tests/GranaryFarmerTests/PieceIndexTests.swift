import Foundation
import GranaryContracts
import GranaryCore
import GranaryTestSupport
import GranaryWire
import Testing

/// The index keeps each piece's Merkle leaf hashes (the inner levels are
/// rebuilt on load); rows written before that hold every level and must
/// still serve; a damaged row is refused rather than answered with a bad proof.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct PieceIndexTests {
    /// Runs the sqlite3 shell on the farmer's index; returns its output.
    func sql(_ db: String, _ statement: String) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["sqlite3", db, statement]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw TestSupportError.exited("sqlite3 failed on: \(statement)") }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func leafHashRowsOldFullTreeRowsAndDamagedRows() async throws {
        let dir = TemporaryDirectory()
        let storage = dir.sub("farm")
        let db = storage + "/farmer.db"
        let renter = newRenter()
        let bytes = testBytes((1 << 20) + 100, seed: 31)
        let tree = MerkleTree(data: bytes)
        let piece = Hash256.random()

        var farmer = try FarmerProcess(storage: storage)
        let client = try await farmer.connect(renter)
        let c = try await client.proposeContract(proposal(renter: renter, farmer: farmer.nodeID), difficulty: testDifficulty)
        _ = try await client.storePiece(contract: c.id, pieceID: piece, root: tree.root, bytes: bytes)
        await client.close()
        farmer.process.stop()
        #expect(try sql(db, "SELECT length(tree) FROM pieces") == "\(tree.leafCount * 32)")

        // A row as older farmers wrote it: every level.
        _ = try sql(db, "UPDATE pieces SET tree = X'\(Hex.encode(tree.serialized))'")
        farmer = try FarmerProcess(storage: storage)
        var again = try await farmer.connect(renter)
        let audit = try await again.audit(pieceID: piece, leaf: 256)
        #expect(audit.proof.leaves == 256..<257 && MerkleTree.verify(audit.proof, leafData: audit.leaf, root: tree.root))
        #expect(try await again.readRange(pieceID: piece, root: tree.root, pieceSize: bytes.count, range: 4000..<9000) == Array(bytes[4000..<9000]))
        await again.close()
        farmer.process.stop()

        // A damaged row: refused with a clear error, never a proof that fails later.
        _ = try sql(db, "UPDATE pieces SET tree = zeroblob(\(tree.leafCount * 32))")
        farmer = try FarmerProcess(storage: storage)
        again = try await farmer.connect(renter)
        do { _ = try await again.audit(pieceID: piece, leaf: 3); Issue.record("audit answered from a damaged tree") } catch {
            #expect(error.code == .internal)
        }
        await again.close()
        farmer.process.stop()
    }
}
