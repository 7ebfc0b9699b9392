import Foundation
import GranaryCore

/// A `granary` child process of `up`: dies with us (PR_SET_PDEATHSIG through
/// GRANARY_PARENT_PID), its output appended to a log file or passed through.
final class ManagedChild: @unchecked Sendable {  // Process is thread-safe for the calls used here
    let process = Process()
    let logPath: String?
    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }

    private init(logPath: String?) { self.logPath = logPath }

    static func start(arguments: [String], log: String?, environment extra: [String: String] = [:]) throws -> ManagedChild {
        let child = ManagedChild(logPath: log)
        child.process.executableURL = URL(fileURLWithPath: CommandLine.executablePath)
        child.process.arguments = arguments
        var env = ProcessInfo.processInfo.environment.merging(extra) { _, new in new }
        env["GRANARY_PARENT_PID"] = String(getpid())
        child.process.environment = env
        if let log {
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            handle.truncateFile(atOffset: 0)
            child.process.standardOutput = handle
            child.process.standardError = handle
        }
        try ProcessSpawner.run(child.process)  // from a thread that never exits: see ProcessSpawner
        return child
    }

    /// Polls the log for the one `listening` line a node prints at start.
    func waitForListeningLine(timeout: TimeInterval) throws -> String {
        guard let logPath else { throw EmbeddedNetworkError(description: "no log to read") }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let text = try? String(contentsOfFile: logPath, encoding: .utf8),
               let line = text.split(separator: "\n").first(where: { $0.contains(" listening ") }) {
                return String(line)
            }
            if !process.isRunning {
                let tail = (try? String(contentsOfFile: logPath, encoding: .utf8))?.split(separator: "\n").suffix(5).joined(separator: "\n") ?? ""
                throw EmbeddedNetworkError(description: "exited with status \(process.terminationStatus): \(tail)")
            }
            usleep(50_000)
        }
        signal(SIGKILL)
        throw EmbeddedNetworkError(description: "no listening line within \(Int(timeout))s")
    }

    /// The `name=value` fields of the `listening` line (tcp, udp, node).
    func waitForListeningFields(timeout: TimeInterval) throws -> [String: String] {
        let line = try waitForListeningLine(timeout: timeout)
        var fields: [String: String] = [:]
        for field in line.split(separator: " ") {
            let kv = field.split(separator: "=", maxSplits: 1).map(String.init)
            if kv.count == 2 { fields[kv[0]] = kv[1] }
        }
        return fields
    }

    func signal(_ sig: Int32) { if process.isRunning { kill(pid, sig) } }

    /// SIGTERM to every child, SIGKILL to stragglers after `grace` seconds.
    static func stopAll(_ children: [ManagedChild], grace: TimeInterval) {
        for child in children { child.signal(SIGTERM) }
        let deadline = Date().addingTimeInterval(grace)
        while children.contains(where: \.isRunning) && Date() < deadline { usleep(50_000) }
        for child in children where child.isRunning { child.signal(SIGKILL) }
    }
}

extension CommandLine {
    /// The running executable, so children run the same build.
    static var executablePath: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? arguments[0]
    }
}

/// Runs a foreground child until it exits, turning the first SIGINT or
/// SIGTERM into a SIGTERM for it (the mount flushes and unmounts on it),
/// then calls `onStop`.
enum SignalForwarding {
    static func run(foreground child: ManagedChild, onStop: @escaping @Sendable () -> Void) async -> Int32 {
        let signals = SignalWaiter([SIGINT, SIGTERM])
        let forwarder = Task {
            guard await signals.wait() != 0 else { return }
            print("granary up: stopping: flushing and unmounting (bounded; further Ctrl-C is ignored)")
            child.signal(SIGTERM)
        }
        while child.isRunning { try? await Task.sleep(for: .milliseconds(100)) }
        forwarder.cancel()
        signals.cancel()
        onStop()
        return child.process.terminationStatus
    }
}
