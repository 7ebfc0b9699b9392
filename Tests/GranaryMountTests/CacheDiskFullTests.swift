import Foundation
import GranaryTestSupport
import Testing

/// The cache disk fills up: writes fail with ENOSPC (and a log line), what
/// was fsynced before stays intact, the mount keeps serving, and freeing
/// space lets writes go on.
@Suite(.serialized) struct CacheDiskFullTests {
    @Test(.timeLimit(.minutes(3)))
    func writesGetENOSPCAndNothingFsyncedIsLost() throws {
        try FuseEnvironment.require()
        let dir = TemporaryDirectory("granary-cache-full")
        let disk = try SmallDisk(megabytes: 320, under: dir)
        let state = disk.sub("state"), mnt = dir.sub("mnt"), segments = dir.sub("segments"), refs = dir.sub("refs")
        // Nothing uploads during the test (idle delay of an hour): dirty data stays on the small disk.
        let mount = try ChildProcess.granary(["mount", mnt, "--state", state, "--local-segments", segments, "--plain-key",
                                              "--upload-idle", "3600"], name: "granary-mount")
        defer {
            mount.stop(grace: 20)
            Shell.run("fusermount3 -u -z '\(mnt)' 2>/dev/null || umount -l '\(mnt)' 2>/dev/null; true", timeout: 20)
        }
        _ = try mount.waitForLine(timeout: 30) { $0.hasPrefix("granary mount ready at") }

        #expect(Shell.run("head -c 50000000 /dev/urandom > '\(refs)/a' && cp '\(refs)/a' '\(mnt)/a' && sync '\(mnt)/a'").status == 0)
        // 400 MB into what is left of 320 MiB less the 128 MiB the cache keeps free.
        let big = Shell.run("dd if=/dev/zero of='\(mnt)/big' bs=1M count=400 conv=fsync 2>&1", timeout: 120)
        #expect(big.status != 0 && big.output.contains("No space left on device"), "\(big.output)")
        #expect(mount.output.contains { $0.contains("writes fail with ENOSPC") }, "the mount says why")

        // Still serving; the fsynced file is intact.
        #expect(Shell.run("cmp '\(refs)/a' '\(mnt)/a'").status == 0)
        // Freeing space lets writes go on.
        #expect(Shell.run("rm '\(mnt)/big'").status == 0)
        #expect(Shell.run("head -c 20000000 /dev/urandom > '\(refs)/b' && cp '\(refs)/b' '\(mnt)/b' && sync '\(mnt)/b' && cmp '\(refs)/b' '\(mnt)/b'").status == 0)

        // A crash loses nothing that was fsynced.
        mount.kill()
        Shell.run("fusermount3 -u -z '\(mnt)' 2>/dev/null || umount -l '\(mnt)' 2>/dev/null; true", timeout: 20)
        let again = try ChildProcess.granary(["mount", mnt, "--state", state, "--local-segments", segments, "--plain-key"], name: "granary-mount-2")
        defer { again.stop(grace: 20) }
        _ = try again.waitForLine(timeout: 30) { $0.hasPrefix("granary mount ready at") }
        #expect(Shell.run("cmp '\(refs)/a' '\(mnt)/a' && cmp '\(refs)/b' '\(mnt)/b' && [ ! -e '\(mnt)/big' ]").status == 0)
        withExtendedLifetime(disk) {}
    }

    /// Creates commit to meta.db in groups a few milliseconds after they
    /// return. When the disk under meta.db is full, the group that cannot
    /// commit is kept, new creates get ENOSPC, and once space is freed the
    /// kept group commits: no create that returned success is lost, also
    /// across a SIGKILL after fsyncdir.
    @Test(.timeLimit(.minutes(3)))
    func createsWaitOutAFullDatabaseDiskAndNoneIsLost() throws {
        try FuseEnvironment.require()
        let dir = TemporaryDirectory("granary-meta-full")
        let disk = try SmallDisk(megabytes: 48, under: dir)
        let state = disk.sub("state"), mnt = dir.sub("mnt"), segments = dir.sub("segments")
        let args = ["mount", mnt, "--state", state, "--local-segments", segments, "--plain-key", "--upload-idle", "3600"]
        let mount = try ChildProcess.granary(args, name: "granary-mount")
        defer {
            mount.stop(grace: 20)
            Shell.run("fusermount3 -u -z '\(mnt)' 2>/dev/null || umount -l '\(mnt)' 2>/dev/null; true", timeout: 20)
        }
        _ = try mount.waitForLine(timeout: 30) { $0.hasPrefix("granary mount ready at") }
        #expect(Shell.run("mkdir '\(mnt)/d'").status == 0)
        // Fill the disk from outside the mount, then create until refused:
        // the write-ahead log has to grow and cannot.
        Shell.run("dd if=/dev/zero of='\(disk.path)/filler' bs=1M 2>/dev/null; true", timeout: 60)
        let created = Shell.run("""
            cd '\(mnt)/d' && i=0; while [ $i -lt 20000 ]; do : > f$i 2>/dev/null || break; echo $i; i=$((i+1)); done
            """, timeout: 120)
        let acknowledged = created.output.split(separator: "\n").map(String.init).filter { Int($0) != nil }
        #expect(acknowledged.count < 20000, "creates never failed on a full disk")
        #expect(Shell.run(": > '\(mnt)/d/refused' 2>&1").output.contains("No space left on device"))
        #expect(mount.output.contains { $0.contains("deferred namespace changes not committed") }, "the mount says why")
        // Freeing space lets the kept changes commit and creates go on.
        Shell.run("rm -f '\(disk.path)/filler'")
        var again = false
        for _ in 0..<50 where !again {
            again = Shell.run(": > '\(mnt)/d/after' 2>/dev/null").status == 0
            if !again { Thread.sleep(forTimeInterval: 0.1) }
        }
        #expect(again, "creates still refused after space was freed")
        // fsyncdir makes them durable; a crash then loses none.
        #expect(Shell.run("sync '\(mnt)/d'").status == 0)
        mount.kill()
        Shell.run("fusermount3 -u -z '\(mnt)' 2>/dev/null || umount -l '\(mnt)' 2>/dev/null; true", timeout: 20)
        let restarted = try ChildProcess.granary(args, name: "granary-mount-2")
        defer { restarted.stop(grace: 20) }
        _ = try restarted.waitForLine(timeout: 30) { $0.hasPrefix("granary mount ready at") }
        let listed = Set(Shell.run("ls '\(mnt)/d'").output.split(separator: "\n").map(String.init))
        let missing = acknowledged.filter { !listed.contains("f\($0)") }
        #expect(missing.isEmpty, "\(missing.count) of \(acknowledged.count) acknowledged creates lost")
        #expect(listed.contains("after"))
        withExtendedLifetime(disk) {}
    }
}
