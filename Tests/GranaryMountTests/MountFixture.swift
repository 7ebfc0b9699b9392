import Foundation
import GranaryTestSupport

/// A real `granary mount --local-segments` child process on a temporary
/// folder. Always unmounted and killed in `stop()` or deinit, even when a
/// test fails.
final class MountFixture: @unchecked Sendable {
    let dir: TemporaryDirectory
    let mountpoint: String
    let state: String
    let segments: String
    private(set) var child: ChildProcess?
    /// Added to `granary mount` on every start.
    let extraArguments: [String]

    init(uploadIdle: Double = 1, extraArguments: [String] = []) throws {
        self.extraArguments = extraArguments
        try FuseEnvironment.require()
        dir = TemporaryDirectory("granary-mount")
        chmod(dir.path, 0o755)  // other users (permission tests) must reach the mount
        let base = (dir.path as NSString).standardizingPath
        mountpoint = dir.sub("mnt")
        state = base + "/state"
        segments = base + "/segments"
        try start(uploadIdle: uploadIdle)
    }

    func start(uploadIdle: Double = 1) throws {
        let c = try ChildProcess.granary(["mount", mountpoint, "--state", state, "--local-segments", segments, "--plain-key",
                                          "--upload-idle", String(uploadIdle), "--read-timeout", "5"] + extraArguments, name: "granary-mount")
        child = c
        _ = try c.waitForLine(timeout: 30) { $0.hasPrefix("granary mount ready at") }
    }

    /// SIGTERM (flush and unmount), then make sure nothing is left.
    func stop() {
        child?.stop(grace: 20)
        child = nil
        forceUnmount()
    }

    /// SIGKILL, as a crash: leaves a stale mount the next start must clear.
    func crash() {
        child?.kill()
        child = nil
        // The kernel ends the FUSE connection a moment after the process is
        // reaped; until then the mount point still looks live.
        var info = stat()
        for _ in 0..<100 where lstat(mountpoint, &info) == 0 { usleep(50_000) }
    }

    func forceUnmount() {
        _ = Shell.run("fusermount3 -u -z '\(mountpoint)' 2>/dev/null || umount -l '\(mountpoint)' 2>/dev/null; true", timeout: 20)
    }

    func path(_ p: String) -> String { mountpoint + "/" + p }

    deinit {
        child?.kill()
        forceUnmount()
    }
}

/// Runs shell commands with a time limit.
enum Shell {
    struct Result { let status: Int32; let output: String }

    @discardableResult
    static func run(_ command: String, timeout: Double = 120, cwd: String? = nil) -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command]
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("granary-sh-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: out) }
        guard let h = try? FileHandle(forWritingTo: out) else { return Result(status: -1, output: "cannot capture output") }
        p.standardOutput = h
        p.standardError = h
        do { try p.run() } catch { return Result(status: -1, output: "cannot run sh: \(error)") }
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        var timedOut = false
        if p.isRunning { kill(-p.processIdentifier, SIGKILL); kill(p.processIdentifier, SIGKILL); timedOut = true; p.waitUntilExit() }
        try? h.close()
        let text = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
        return Result(status: timedOut ? -2 : p.terminationStatus, output: (timedOut ? "TIMED OUT after \(timeout) s\n" : "") + text)
    }

    /// Runs a Python 3 script (POSIX calls with exact errno checks).
    static func python(_ script: String, args: [String], timeout: Double = 120) -> Result {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("granary-\(UUID().uuidString).py")
        try? script.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        return run("python3 '\(file.path)' " + args.map { "'\($0)'" }.joined(separator: " "), timeout: timeout)
    }
}
