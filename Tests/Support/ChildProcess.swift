import Foundation
import GranaryCore

/// Finds the release build of `granary` that integration tests run.
/// The README's test command builds it first and exports GRANARY_BIN.
public enum GranaryBinary {
    public static var path: String {
        if let env = ProcessInfo.processInfo.environment["GRANARY_BIN"], !env.isEmpty { return env }
        // Tests run from the package root.
        return FileManager.default.currentDirectoryPath + "/.build/release/granary"
    }

    /// Fails with a clear message when the binary is missing.
    public static func require() throws -> String {
        let p = path
        guard FileManager.default.isExecutableFile(atPath: p) else {
            throw TestSupportError.missing("granary binary not found at \(p): run `swift build -c release --product granary` or `make test`")
        }
        return p
    }
}

public enum TestSupportError: Error, CustomStringConvertible {
    case missing(String)
    case timeout(String)
    case exited(String)
    public var description: String {
        switch self {
        case let .missing(s), let .timeout(s), let .exited(s): return s
        }
    }
}

/// A child process for integration tests: output captured line by line,
/// killed (SIGKILL to its whole process group) when stopped or deinitialised,
/// so a failing test never leaves processes behind.
public final class ChildProcess: @unchecked Sendable {
    public let process = Process()
    private let lock = NSLock()
    private var lines: [String] = []
    private var partial = Data()
    public let name: String

    public init(_ executable: String, _ arguments: [String], name: String? = nil, environment: [String: String] = [:]) throws {
        self.name = name ?? (executable as NSString).lastPathComponent
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["GRANARY_PARENT_PID"] = String(getpid())  // children ask for PR_SET_PDEATHSIG
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        // A reader thread, not FileHandle.readabilityHandler: that handler
        // fires without end at EOF unless cleared, and its dispatch source,
        // still registered when the handle closed its descriptor, once
        // crashed the whole test process in libdispatch (SIGILL in
        // _dispatch_source_refs_finalize_unregistration).
        let reader = pipe.fileHandleForReading
        let readerThread = Thread { [weak self] in
            let fd = reader.fileDescriptor
            var buffer = [UInt8](repeating: 0, count: 64 << 10)
            while true {
                let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }  // EOF: the child and everything it started have exited
                self?.take(buffer[0..<n])
            }
            withExtendedLifetime(reader) {}  // the descriptor stays open until here
        }
        readerThread.name = "child-output"
        readerThread.start()
        try ProcessSpawner.run(process)  // children's PR_SET_PDEATHSIG follows the spawning thread
    }

    /// Starts `granary` with the given arguments.
    public static func granary(_ arguments: [String], name: String? = nil, environment: [String: String] = [:]) throws -> ChildProcess {
        try ChildProcess(try GranaryBinary.require(), arguments, name: name, environment: environment)
    }

    public var output: [String] { lock.lock(); defer { lock.unlock() }; return lines }

    /// Splits what the child wrote into lines.
    private func take(_ data: ArraySlice<UInt8>) {
        lock.lock()
        partial.append(contentsOf: data)
        while let nl = partial.firstIndex(of: 0x0a) {
            lines.append(String(decoding: partial[partial.startIndex..<nl], as: UTF8.self))
            partial.removeSubrange(partial.startIndex...nl)
        }
        lock.unlock()
    }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }

    /// Waits until a line matching `predicate` appears; returns it.
    public func waitForLine(timeout: TimeInterval = 30, where predicate: (String) -> Bool) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let line = output.first(where: predicate) { return line }
            if !process.isRunning {
                Thread.sleep(forTimeInterval: 0.1)
                if let line = output.first(where: predicate) { return line }
                throw TestSupportError.exited("\(name) exited with \(process.terminationStatus) before the expected line; output:\n" + output.joined(separator: "\n"))
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        throw TestSupportError.timeout("\(name): no expected line within \(timeout)s; output:\n" + output.suffix(40).joined(separator: "\n"))
    }

    /// Waits for exit; returns the status, or kills and throws after `timeout`.
    @discardableResult
    public func waitForExit(timeout: TimeInterval = 30) throws -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning {
            kill()
            throw TestSupportError.timeout("\(name) did not exit within \(timeout)s")
        }
        return process.terminationStatus
    }

    public func signal(_ sig: Int32) { if process.isRunning { Foundation.kill(pid, sig) } }

    /// SIGKILL, then reap.
    public func kill() {
        guard process.isRunning else { return }
        Foundation.kill(pid, SIGKILL)
        process.waitUntilExit()
    }

    /// SIGTERM, then SIGKILL after `grace` seconds.
    public func stop(grace: TimeInterval = 5) {
        guard process.isRunning else { return }
        signal(SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        kill()
    }

    deinit { kill() }
}

/// A temporary folder removed when released.
public final class TemporaryDirectory: @unchecked Sendable {
    public let path: String
    public init(_ prefix: String = "granary-test") {
        let template = NSTemporaryDirectory() + "/\(prefix)-XXXXXX"
        var buf = Array(template.utf8CString)
        let p = mkdtemp(&buf)!
        path = String(cString: p)
    }
    public func sub(_ name: String) -> String {
        let p = path + "/" + name
        try? FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// The mount tests' precondition: /dev/fuse and root (allow_other, and
/// permission checks as other users). Fails with that message instead of
/// skipping, so a machine without FUSE cannot pass them silently.
public enum FuseEnvironment {
    public static func require(_ who: String = "the mount tests") throws {
        guard FileManager.default.fileExists(atPath: "/dev/fuse") else {
            throw TestSupportError.missing("/dev/fuse is missing: \(who) need FUSE (run as root on a machine with /dev/fuse)")
        }
        guard getuid() == 0 else { throw TestSupportError.missing("\(who) run as root (allow_other, permission checks as other users)") }
    }
}
