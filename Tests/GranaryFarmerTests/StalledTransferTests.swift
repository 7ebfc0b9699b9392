import Foundation
import GranaryContracts
import GranaryCore
import GranaryTestSupport
import GranaryWire
import Testing

/// A piece transfer given a stall timeout fails once no byte moved for that
/// long, read from the kernel's TCP counters, and not after a fixed time:
/// a renter on a slow uplink sends eight pieces at once, and a deadline for
/// the whole transfer failed every one of them. The farmer is slowed by
/// stopping and continuing its process (SIGSTOP/SIGCONT): while stopped,
/// its socket buffers fill and the renter's bytes stop being acknowledged.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct StalledTransferTests {
    static let pieceSize = 32 << 20

    /// Stops the farmer for `stopped` out of every `period` until cancelled,
    /// and leaves it running.
    static func throttle(_ farmer: FarmerProcess, stopped: Duration, running: Duration) -> Task<Void, Never> {
        Task {
            while !Task.isCancelled {
                farmer.process.signal(SIGSTOP)
                try? await Task.sleep(for: stopped)
                farmer.process.signal(SIGCONT)
                try? await Task.sleep(for: running)
            }
            farmer.process.signal(SIGCONT)
        }
    }

    /// A session to `farmer` with `requestTimeout`, and a contract with room for a piece.
    static func connect(_ renter: NodeIdentity, to farmer: FarmerProcess,
                        requestTimeout: Duration) async throws -> (TransferClient, SignedContract) {
        let client = try await TransferClient.connect(to: "127.0.0.1", port: farmer.port, identity: renter, expectedPeer: farmer.nodeID,
                                                      difficulty: testDifficulty, requestTimeout: requestTimeout)
        let signed = try await client.proposeContract(proposal(renter: renter, farmer: farmer.nodeID, allowance: 64 << 20),
                                                      difficulty: testDifficulty)
        return (client, signed)
    }

    @Test func transferThatKeepsMovingOutlivesTheRequestTimeout() async throws {
        let dir = TemporaryDirectory()
        let farmer = try FarmerProcess(storage: dir.sub("farm"), capacity: "256M")
        defer { farmer.process.signal(SIGCONT) }
        let renter = newRenter()
        let (client, signed) = try await Self.connect(renter, to: farmer, requestTimeout: .milliseconds(500))
        let bytes = testBytes(Self.pieceSize, seed: 11)
        let root = MerkleTree(data: bytes).root
        let pieceID = Hash256.random()

        let clock = ContinuousClock()
        let started = clock.now
        // Stopped first, longer than the request timeout: 32 MiB do not fit
        // in the socket buffers, so the store cannot end before it continues.
        let slow = Self.throttle(farmer, stopped: .milliseconds(700), running: .milliseconds(60))
        let stored = try await client.storePiece(contract: signed.id, pieceID: pieceID, root: root, bytes: bytes, stallTimeout: .seconds(3))
        let storeTook = clock.now - started
        let read = try await client.readRange(pieceID: pieceID, root: root, pieceSize: Self.pieceSize, range: 0..<Self.pieceSize,
                                              stallTimeout: .seconds(3))
        slow.cancel()
        await slow.value
        #expect(stored.size == Self.pieceSize)
        #expect(read == bytes)
        // Longer than the 500 ms request timeout, which bounds only the
        // requests given no stall timeout. (The read may fit in one running
        // window on a fast machine, so only the store's time is certain.)
        #expect(storeTook > .milliseconds(500))
        await client.close()
        farmer.process.stop()
    }

    @Test func stalledTransferFailsAfterTheStallTimeout() async throws {
        let dir = TemporaryDirectory()
        let farmer = try FarmerProcess(storage: dir.sub("farm"), capacity: "256M")
        defer { farmer.process.signal(SIGCONT) }
        let renter = newRenter()
        let (client, signed) = try await Self.connect(renter, to: farmer, requestTimeout: .seconds(100))
        let bytes = testBytes(Self.pieceSize, seed: 12)
        let root = MerkleTree(data: bytes).root
        let pieceID = Hash256.random()

        // Stopped before the request: a farmer stopped mid-piece may already
        // hold every byte and store the piece once continued (its answer
        // lost with the connection), which is its right.
        farmer.process.signal(SIGSTOP)
        let clock = ContinuousClock()
        let started = clock.now
        do {
            _ = try await client.storePiece(contract: signed.id, pieceID: pieceID, root: root, bytes: bytes, stallTimeout: .seconds(1))
            Issue.record("a store to a stopped farmer succeeded")
        } catch let TransferError.timedOut(what) {
            #expect(what.contains("no bytes moved"), "\(what)")
        } catch {
            Issue.record("expected a stall, got \(error)")
        }
        #expect(clock.now - started < .seconds(50), "the stall, not the 100 s request timeout, ended the upload")
        farmer.process.signal(SIGCONT)

        // The farmer serves again, and did not keep the half-sent piece.
        let again = try await farmer.connect(renter)
        await #expect(throws: TransferError.self) {
            _ = try await again.readRange(pieceID: pieceID, root: root, pieceSize: Self.pieceSize, range: 0..<10)
        }
        let small = testBytes(100_000, seed: 13)
        let smallID = Hash256.random()
        _ = try await again.storePiece(contract: signed.id, pieceID: smallID, root: MerkleTree(data: small).root, bytes: small,
                                       stallTimeout: .seconds(5))
        #expect(try await again.readRange(pieceID: smallID, root: MerkleTree(data: small).root, pieceSize: small.count,
                                          range: 0..<small.count) == small)
        await client.close()
        await again.close()
        farmer.process.stop()
    }
}
