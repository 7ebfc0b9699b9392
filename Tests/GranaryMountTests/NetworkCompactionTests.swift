import Foundation
import GranaryTestSupport
import Testing

/// Compaction over real farmers (`granary up`: a seed and farmer processes,
/// contracts through the market): deleting three quarters of the data and
/// compacting deletes pieces on the farmers' disks and gives the bytes back
/// to the contracts; what is left reads back bit-exact, also cold.
@Suite(.serialized) struct NetworkCompactionTests {
    @Test(.timeLimit(.minutes(10)))
    func deleteThreeQuartersCompactFreesPiecesAndContractBytes() throws {
        try FuseEnvironment.require()
        let bin = try GranaryBinary.require()
        let dir = TemporaryDirectory("granary-up-gc")
        let state = dir.path + "/state", mnt = dir.path + "/mnt", refs = dir.sub("refs")
        defer {
            Shell.run("fusermount3 -u -z '\(mnt)' 2>/dev/null || umount -l '\(mnt)' 2>/dev/null; pkill -KILL -f '\(state)'; true", timeout: 20)
        }
        func startUp() throws -> ChildProcess {
            let up = try ChildProcess.granary(["up", "--state", state, "--mountpoint", mnt, "--farmers", "4", "--capacity", "8G",
                                               "--scheme", "2/3/3/4"], name: "granary-up", environment: ["GRANARY_POW_BITS": "4"])
            _ = try up.waitForLine(timeout: 150) { $0.hasPrefix("granary mount ready at") }
            return up
        }
        func stop(_ up: ChildProcess) throws {
            up.signal(SIGINT)
            #expect(try up.waitForExit(timeout: 90) == 0, "up exits cleanly on Ctrl-C: \(up.output.suffix(10))")
        }
        /// Piece files and their bytes on the farmers' disks.
        func farmerPieces() -> (count: Int, bytes: Int) {
            let r = Shell.run("find '\(state)/farmers' -path '*/pieces/*' -type f -printf '%s\\n' | awk '{n++; s+=$1} END {print n+0, s+0}'")
            let parts = r.output.split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
            return parts.count == 2 ? (parts[0], parts[1]) : (-1, -1)
        }
        func status() -> CompactOutput { CompactOutput(Shell.run("'\(bin)' status --state '\(state)/renter' --json", timeout: 30), requireDone: false) }
        func contractBytes(_ s: CompactOutput) -> Int { Int(s.extra?["network.contract_bytes_used"] ?? "") ?? -1 }
        let files = 50, kept = 12
        let cmpKept = (0..<kept).map { "cmp '\(refs)/f\($0)' '\(mnt)/f\($0)'" }.joined(separator: " && ")

        var up = try startUp()
        // 200 MiB in 50 files of 4 MiB (one chunk each), as the issue asks.
        let write = Shell.run("""
            set -e; for i in $(seq 0 \(files - 1)); do head -c 4194304 /dev/urandom > '\(refs)'/f$i; cp '\(refs)'/f$i '\(mnt)'/f$i; done
            '\(bin)' flush --state '\(state)/renter'
            """, timeout: 360)
        #expect(write.status == 0, "write and flush: \(write.output.suffix(2000))")
        let before = status(), piecesBefore = farmerPieces()

        // Delete three quarters, compact.
        #expect(Shell.run("cd '\(mnt)' && rm " + (kept..<files).map { "f\($0)" }.joined(separator: " ")).status == 0)
        let compact = CompactOutput(Shell.run("'\(bin)' compact --state '\(state)/renter' --json", timeout: 300))
        #expect(compact.ok, "compact: \(compact.raw)")
        let after = status(), piecesAfter = farmerPieces()

        let stored0 = before.status?["segmentBytes"] ?? 0, stored1 = after.status?["segmentBytes"] ?? 0
        let live1 = after.status?["liveBytes"] ?? 0
        let used0 = contractBytes(before), used1 = contractBytes(after)
        let facts = "stored \(stored0) -> \(stored1) (live \(live1)); contract bytes \(used0) -> \(used1); farmer pieces \(piecesBefore) -> \(piecesAfter); \(compact.raw)"
        print("network compaction: \(facts)")
        #expect(stored0 >= files << 22, "\(facts)")
        // Every remaining segment is at least half live, and a quarter of the data is live.
        #expect(live1 >= kept << 22 && stored1 <= 2 * live1 && stored1 < stored0 * 11 / 20, "\(facts)")
        // Farmers' disks and the contracts' counts fall with the stored bytes (the piece count
        // need not: a rewritten segment has as many pieces as the one it replaces).
        #expect(used0 > 0 && used1 > 0 && used1 < used0 * 11 / 20, "\(facts)")
        #expect(piecesBefore.bytes > 0 && piecesAfter.bytes < piecesBefore.bytes * 11 / 20 && piecesAfter.count <= piecesBefore.count, "\(facts)")
        #expect((after.status?["reclaimableBytes"] ?? -1) == stored1 - live1, "\(facts)")
        #expect(Shell.run(cmpKept, timeout: 60).status == 0, "kept files read back after compaction")
        try stop(up)

        // Cold: without the clean cache, the kept files come from the rewritten segments on the farmers.
        Shell.run("rm -rf '\(state)/renter/cache/clean'/*")
        up = try startUp()
        #expect(Shell.run(cmpKept, timeout: 120).status == 0, "kept files read back cold")
        #expect(Shell.run("ls '\(mnt)' | wc -l").output.trimmingCharacters(in: .whitespacesAndNewlines) == "\(kept)")
        try stop(up)
    }
}
