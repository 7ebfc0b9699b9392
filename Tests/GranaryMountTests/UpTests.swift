import Foundation
import GranaryTestSupport
import Testing

/// `granary up` end to end: a seed and farmers as child processes, the
/// mount handed only the seed's address, contracts formed through the
/// market; Ctrl-C flushes, unmounts and stops everything; a second `up`
/// shows the same files, read cold from the farmers.
@Suite(.serialized) struct UpTests {
    @Test(.timeLimit(.minutes(5)))
    func upMountsTheEmbeddedNetworkStopsCleanlyAndComesBack() throws {
        try FuseEnvironment.require()
        let bin = try GranaryBinary.require()
        let dir = TemporaryDirectory("granary-up")
        let state = dir.path + "/state", mnt = dir.path + "/mnt"
        let env = ["GRANARY_POW_BITS": "4"]
        defer {
            Shell.run("fusermount3 -u -z '\(mnt)' 2>/dev/null || umount -l '\(mnt)' 2>/dev/null; pkill -KILL -f '\(state)'; true", timeout: 20)
        }
        func startUp() throws -> ChildProcess {
            let up = try ChildProcess.granary(["up", "--state", state, "--mountpoint", mnt, "--farmers", "8", "--capacity", "8G"],
                                              name: "granary-up", environment: env)
            _ = try up.waitForLine(timeout: 150) { $0.hasPrefix("granary mount ready at") }
            return up
        }
        func stop(_ up: ChildProcess) throws {
            up.signal(SIGINT)
            #expect(try up.waitForExit(timeout: 90) == 0, "up exits cleanly on Ctrl-C: \(up.output.suffix(10))")
            let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
            #expect(!mounts.contains(mnt), "unmounted after Ctrl-C")
            #expect(Shell.run("pgrep -f '\(state)/[f]armers'").status != 0, "no farmer outlives up")  // [f]: not the pgrep's own sh
        }

        var up = try startUp()
        // One `up` per state folder.
        let second = Shell.run("GRANARY_POW_BITS=4 '\(bin)' up --state '\(state)' --mountpoint '\(dir.path)/other'", timeout: 60)
        #expect(second.status != 0 && second.output.contains("another `granary up`"), "\(second.output)")

        #expect(Shell.run("head -c 3000000 /dev/urandom > '\(dir.path)/a.orig' && cp '\(dir.path)/a.orig' '\(mnt)/a' && mkdir '\(mnt)/d' && echo hi > '\(mnt)/d/h'").status == 0)
        let flush = Shell.run("'\(bin)' flush --state '\(state)/renter'", timeout: 150)
        #expect(flush.status == 0 && flush.output.contains("durable"), "\(flush.output)")
        let status = Shell.run("'\(bin)' status --state '\(state)/renter'", timeout: 30)
        #expect(status.status == 0 && status.output.contains("network.contracts"), "\(status.output)")
        // statfs reports the contracts' capacity (8 farmers of 8G at most,
        // in data bytes), not the cache disk's.
        let df = Shell.run("stat -f -c '%b %S' '\(mnt)'; stat -f -c '%b %S' '\(dir.path)'", timeout: 30)
        let sizes = df.output.split(separator: "\n").map { $0.split(separator: " ").compactMap { UInt64($0) }.reduce(1, *) }
        #expect(sizes.count == 2 && sizes[0] > 0 && sizes[0] <= 64 << 30 && sizes[0] != sizes[1], "statfs: \(df.output)")
        try stop(up)

        // Cold: without the clean cache, the data comes back from the farmers.
        Shell.run("rm -rf '\(state)/renter/cache/clean'/* '\(state)/renter/cache/slab-clean'")
        up = try startUp()
        #expect(Shell.run("cmp '\(dir.path)/a.orig' '\(mnt)/a' && grep -q hi '\(mnt)/d/h'", timeout: 120).status == 0)
        try stop(up)
    }
}
