import Foundation
import GranaryTestSupport
import Testing

/// Dirty chunks wait in cache files of their own until uploaded, and an
/// outage can hold back many more of them than a process may open. Before,
/// each kept its file open: under 256 open files a copy of 600 files of
/// 200 KB failed with EIO after about 230, and a restart with more dirty
/// chunks than the limit lost the rest to "lost its cache file". A reader
/// holding a large file open likewise kept every cached chunk it had read
/// open until its close.
@Suite(.serialized) struct OpenFileLimitTests {
    @Test(.timeLimit(.minutes(3)))
    func aCopyOfManyLargeFilesOutlastsALowOpenFileLimit() throws {
        try FuseEnvironment.require()
        let bin = try GranaryBinary.require()
        let dir = TemporaryDirectory("granary-nofile")
        let state = dir.sub("state"), mnt = dir.sub("mnt"), segments = dir.sub("segments"), src = dir.sub("src")
        let mount = try ChildProcess("/usr/bin/prlimit", ["--nofile=256:", bin, "mount", mnt, "--state", state,
                                                          "--local-segments", segments, "--plain-key", "--upload-idle", "3600"],
                                     name: "granary-mount")
        defer {
            mount.stop(grace: 20)
            Shell.run("fusermount3 -u -z '\(mnt)' 2>/dev/null || umount -l '\(mnt)' 2>/dev/null; true", timeout: 20)
        }
        _ = try mount.waitForLine(timeout: 30) { $0.hasPrefix("granary mount ready at") }
        let limits = (try? String(contentsOfFile: "/proc/\(mount.pid)/limits", encoding: .utf8)) ?? ""
        let openFiles = limits.split(separator: "\n").first { $0.hasPrefix("Max open files") }
            .flatMap { $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst(3).first }.flatMap { Int($0) } ?? 0
        #expect(openFiles > 1024, "the mount raised its open-file limit: \(limits)")

        let copy = Shell.run("""
            for i in $(seq 600); do head -c 200000 /dev/urandom > '\(src)'/f$i; done \
            && cp -r '\(src)' '\(mnt)/copy' && diff -r '\(src)' '\(mnt)/copy'
            """, timeout: 120)
        #expect(copy.status == 0, "copy under a low open-file limit: \(copy.output.suffix(600))")
        #expect(!mount.output.contains { $0.contains("cannot create cache file") }, "no cache file failed")
    }

    /// Under a hard limit of 256 (nothing to raise), with uploads held off:
    /// 600 files of 200 KB and a 160 MiB file (40 chunks, more than a file
    /// keeps open) copy, fsync, survive a SIGKILL and restart with all 640
    /// dirty chunks waiting, read back, and upload; reading the large file
    /// back through one open handle keeps a window of its chunks open.
    @Test(.timeLimit(.minutes(4)))
    func dirtyChunksBeyondTheHardLimitCopyRestartAndUpload() throws {
        try FuseEnvironment.require()
        let bin = try GranaryBinary.require()
        let dir = TemporaryDirectory("granary-nofile-hard")
        let state = dir.sub("state"), mnt = dir.sub("mnt"), segments = dir.sub("segments"), src = dir.sub("src")
        func start(_ name: String) throws -> ChildProcess {
            let m = try ChildProcess("/usr/bin/prlimit", ["--nofile=256:256", bin, "mount", mnt, "--state", state,
                                                          "--local-segments", segments, "--plain-key", "--upload-idle", "3600"],
                                     name: name)
            _ = try m.waitForLine(timeout: 30) { $0.hasPrefix("granary mount ready at") }
            return m
        }
        func unmount() { Shell.run("fusermount3 -u -z '\(mnt)' 2>/dev/null || umount -l '\(mnt)' 2>/dev/null; true", timeout: 20) }
        func openDescriptors(_ p: ChildProcess) -> Int {
            (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(p.pid)/fd").count) ?? -1
        }
        var mount = try start("granary-mount")
        defer { mount.stop(grace: 20); unmount() }

        let copy = Shell.run("""
            for i in $(seq 600); do head -c 200000 /dev/urandom > '\(src)'/f$i; done \
            && head -c 167772160 /dev/urandom > '\(src)'/big \
            && cp -r '\(src)' '\(mnt)/copy' && sync '\(mnt)'/copy/* '\(mnt)/copy' && diff -r '\(src)' '\(mnt)/copy'
            """, timeout: 150)
        #expect(copy.status == 0, "copy beyond the hard open-file limit: \(copy.output.suffix(600))")
        let open = openDescriptors(mount)
        #expect(open >= 0 && open < 128, "with nothing open, the mount holds few descriptors: \(open)")

        // Everything was fsynced: a crash keeps it, and the restart must not
        // open all 640 waiting chunks at once.
        mount.kill()
        unmount()
        mount = try start("granary-mount-2")
        let back = Shell.run("diff -r '\(src)' '\(mnt)/copy'", timeout: 60)
        #expect(back.status == 0, "read back after a restart: \(back.output.suffix(600))")
        let flush = Shell.run("'\(bin)' flush --state '\(state)'", timeout: 90)
        #expect(flush.status == 0, "flush: \(flush.output.suffix(600))")
        let status = Shell.run("'\(bin)' status --state '\(state)'", timeout: 20)
        #expect(status.output.contains("in 0 chunks"), "nothing left dirty: \(status.output.prefix(400))")
        // A reader holding the file open through all 40 chunks keeps only
        // a window of their cache files open (each is a file of its own;
        // the mount's other descriptors, such as a splice pipe per FUSE
        // worker thread, vary with the read's concurrency).
        let held = Shell.run("""
            cached() { ls -l /proc/\(mount.pid)/fd | grep -c '/state/cache/'; }
            sync; echo 3 > /proc/sys/vm/drop_caches; before=$(cached)
            exec 3< '\(mnt)/copy/big'; cmp - '\(src)/big' <&3 || exit 1
            during=$(cached); exec 3<&-; echo "$before $during" >&2
            """, timeout: 60)
        let counts = (held.output.split(separator: "\n").first ?? "").split(separator: " ").compactMap { Int($0) }
        #expect(held.status == 0 && counts.count == 2 && counts[1] - counts[0] <= 34,
                "descriptors before and while reading a 40-chunk file: \(held.output)")
        #expect(!mount.output.contains { $0.contains("lost its cache file") || $0.contains("cannot create cache file") }, "no cache file was lost or failed")
    }
}
