import Foundation
import GranaryCore
import GranaryTestSupport
import GranaryWire
import Testing

/// A farmer whose disk fills before its declared capacity: the upload that
/// does not fit is refused with a clear error, leaves no temporary file and
/// no piece, the pieces stored before stay intact, and once space is freed
/// uploads work again.
@Suite(.serialized) struct DiskFullTests {
    @Test(.timeLimit(.minutes(2)))
    func fullDiskRefusesTheUploadAndKeepsEverythingElse() async throws {
        let dir = TemporaryDirectory("granary-farmer-full")
        let disk = try SmallDisk(megabytes: 16, under: dir)
        // It claims 64 MiB; the disk holds 16.
        let farmer = try FarmerProcess(storage: disk.sub("farm"), capacity: "64M")
        defer { farmer.process.stop() }
        let renter = newRenter()
        let client = try await farmer.connect(renter)
        let c = try await client.proposeContract(proposal(renter: renter, farmer: farmer.nodeID, allowance: 48 << 20), difficulty: testDifficulty)

        var stored: [(Hash256, [UInt8])] = []
        var refusal: TransferError?
        for i in 0..<6 {
            let bytes = testBytes(4 << 20, seed: UInt64(100 + i)), id = Hash256.random()
            do {
                _ = try await client.storePiece(contract: c.id, pieceID: id, root: MerkleTree(data: bytes).root, bytes: bytes)
                stored.append((id, bytes))
            } catch {
                refusal = error
                break
            }
        }
        let error = try #require(refusal, "16 MiB of disk took 24 MiB of pieces")
        #expect(error.code == .noCapacity || error.code == .internal, "\(error)")
        #expect(error.description.contains("space") || error.description.contains("disk"), "a person can tell why: \(error)")
        #expect(stored.count >= 1)
        #expect(try FileManager.default.contentsOfDirectory(atPath: farmer.storage + "/tmp").isEmpty, "no temporary file left")

        // Still serving on a fresh session, with every stored piece intact.
        await client.close()
        let again = try await farmer.connect(renter)
        for (id, bytes) in stored {
            let (data, proof) = try await again.audit(pieceID: id, leaf: 3)
            #expect(MerkleTree.verify(proof, leafData: data, root: MerkleTree(data: bytes).root))
        }
        // Freed space is usable again.
        #expect(try await again.deletePiece(pieceID: stored[0].0))
        let bytes = testBytes(2 << 20, seed: 9)
        _ = try await again.storePiece(contract: c.id, pieceID: .random(), root: MerkleTree(data: bytes).root, bytes: bytes)
        await again.close()
        withExtendedLifetime(disk) {}
    }
}
