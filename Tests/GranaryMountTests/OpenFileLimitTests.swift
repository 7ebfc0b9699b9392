import Foundation
import GranaryTestSupport
import Testing

/// Every dirty chunk with a cache file of its own keeps a descriptor open
/// until it is uploaded. Started under a soft limit of 256 open files (a
/// shell's usual 1,024 with more files), the mount raises its limit to the
/// hard one, so copying 600 files of 200 KB with uploads held off succeeds;
/// before, the copy failed with EIO after about 230 files and the log had a
/// line per failed file.
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
}
