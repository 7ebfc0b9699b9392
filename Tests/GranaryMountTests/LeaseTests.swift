import Foundation
import GranaryTestSupport
import Testing

/// The mount lease on a real network (a seed and farmer processes on
/// loopback): a second mount of the same key, from another state folder,
/// is refused while the first holds the lease, takes it with --take-over
/// (the first is told it lost it), and after a clean unmount the lease is
/// free again; after a SIGKILL, the same state folder takes it back.
@Suite(.serialized) struct LeaseTests {
    static let env = ["GRANARY_POW_BITS": "4"]

    @Test(.timeLimit(.minutes(5)))
    func secondMountOfOneKeyIsRefusedUntilTakeOver() throws {
        try FuseEnvironment.require()
        let bin = try GranaryBinary.require()
        let dir = TemporaryDirectory("granary-lease")
        var processes: [ChildProcess] = []
        let mntA = dir.path + "/mnt-a", mntB = dir.path + "/mnt-b"
        defer {
            for p in processes.reversed() { p.kill() }
            Shell.run("fusermount3 -u -z '\(mntA)' 2>/dev/null; fusermount3 -u -z '\(mntB)' 2>/dev/null; true", timeout: 20)
        }
        let seed = try ChildProcess.granary(["seed", "--listen", "127.0.0.1:0", "--state", dir.sub("seed")], name: "seed", environment: Self.env)
        processes.append(seed)
        let seedLine = try seed.waitForLine(timeout: 30) { $0.contains("listening") && $0.contains("udp=") }
        let seedAddress = String(seedLine.split(separator: " ").first { $0.hasPrefix("udp=") }!.dropFirst(4))
        for i in 0..<4 {
            let f = try ChildProcess.granary(["farm", "--storage", dir.sub("farmer\(i)"), "--capacity", "16G", "--listen", "127.0.0.1:0",
                                              "--bootstrap", seedAddress], name: "farmer\(i)", environment: Self.env)
            processes.append(f)
        }
        for f in processes.dropFirst() { _ = try f.waitForLine(timeout: 60) { $0.contains("listening") } }

        // One key, two state folders (two machines).
        let stateA = dir.path + "/a", stateB = dir.path + "/b"
        #expect(Shell.run("'\(bin)' key init --plain --state '\(stateA)'").status == 0)
        try FileManager.default.createDirectory(atPath: stateB, withIntermediateDirectories: true)
        #expect(Shell.run("cp -p '\(stateA)/master.key' '\(stateB)/master.key'").status == 0)

        func mount(_ mnt: String, _ state: String, _ extra: [String] = []) throws -> ChildProcess {
            let p = try ChildProcess.granary(["mount", mnt, "--state", state, "--bootstrap", seedAddress, "--scheme", "2/3/3/4",
                                              "--lease-renew", "1"] + extra, name: "mount", environment: Self.env)
            processes.append(p)
            return p
        }
        let a = try mount(mntA, stateA)
        _ = try a.waitForLine(timeout: 90) { $0.hasPrefix("granary mount ready at") }
        #expect(Shell.run("echo from-a > '\(mntA)/a.txt'").status == 0)
        let status = Shell.run("'\(bin)' status --state '\(stateA)'", timeout: 30)
        #expect(status.output.contains("held by this mount"), "\(status.output)")

        let refused = try mount(mntB, stateB)
        #expect(try refused.waitForExit(timeout: 90) != 0, "a second mount of the key is refused")
        let text = refused.output.joined(separator: "\n")
        #expect(text.contains("this key is mounted elsewhere (host") && text.contains((stateA as NSString).standardizingPath) && text.contains("--take-over"), "\(text)")

        let b = try mount(mntB, stateB, ["--take-over"])
        _ = try b.waitForLine(timeout: 90) { $0.hasPrefix("granary mount ready at") }
        _ = try a.waitForLine(timeout: 60) { $0.contains("lost the lease") }
        let lost = Shell.run("'\(bin)' status --state '\(stateA)'", timeout: 30)
        #expect(lost.output.contains("LOST"), "\(lost.output)")

        // A clean unmount gives the lease back: the next mount needs no --take-over.
        b.stop(grace: 30)
        a.stop(grace: 30)
        let again = try mount(mntA, stateA)
        _ = try again.waitForLine(timeout: 90) { $0.hasPrefix("granary mount ready at") }
        #expect(FileManager.default.fileExists(atPath: mntA + "/a.txt"))

        // Killed, it keeps the lease until it lapses; the next mount of the
        // same state folder takes it back at once (that mount is gone: it
        // held the folder's lock), while another state folder is still
        // refused.
        again.kill()
        Shell.run("fusermount3 -u -z '\(mntA)' 2>/dev/null; true", timeout: 20)
        let afterCrash = try mount(mntA, stateA)
        _ = try afterCrash.waitForLine(timeout: 90) { $0.hasPrefix("granary mount ready at") }
        #expect(afterCrash.output.contains { $0.contains("stopped without unmounting; taking its lease back") }, "\(afterCrash.output.suffix(10))")
        let stillRefused = try mount(mntB, stateB)
        #expect(try stillRefused.waitForExit(timeout: 90) != 0, "another state folder is still refused")
        afterCrash.stop(grace: 30)
    }
}
