import ArgumentParser
import CGranaryShim
import Foundation
import Logging

/// The one `granary` executable: renter, farmer, seed, and tools.
@main
struct Granary: AsyncParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "granary",
        abstract: "Decentralized, end-to-end encrypted storage, mounted as a folder.",
        version: version,
        subcommands: [
            UpCommand.self, MountCommand.self, FarmCommand.self, SeedCommand.self,
            StatusCommand.self, FlushCommand.self, CompactCommand.self, KeyCommand.self, RestoreCommand.self,
            BenchCommand.self,
        ])

    static func main() async {
        // Line-buffered stdout even into a file or pipe: the listening line and
        // progress must reach scripts and logs as they happen.
        granary_line_buffer_stdout()
        ParentWatch.armIfAsked()
        LogSetup.bootstrap()
        do {
            var command = try parseAsRoot()
            if var async = command as? AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// Children started by `granary up` or by tests die with their parent: the
/// parent names itself in GRANARY_PARENT_PID, and the child asks the kernel
/// for SIGKILL when its parent goes, closing the race where it already went.
/// Such a child also leaves the terminal's process group (setsid), so a
/// Ctrl-C reaches only the parent, which stops its children in order (the
/// mount flushes before the farmers go).
enum ParentWatch {
    static func armIfAsked() {
        guard let text = ProcessInfo.processInfo.environment["GRANARY_PARENT_PID"], let parent = Int32(text) else { return }
        _ = granary_set_parent_death_signal(SIGKILL)
        if getppid() != parent { exit(1) }
        _ = setsid()
    }
}

/// Raised by subcommands whose layer is not built yet.
struct NotBuiltYet: Error, CustomStringConvertible {
    let command: String
    let issue: String
    var description: String { "granary \(command) is not built yet (\(issue))" }
}

/// Logs go to stderr (stdout carries the one machine-readable listening
/// line); GRANARY_LOG sets the level (trace … critical, default info).
enum LogSetup {
    static func bootstrap() {
        let level = ProcessInfo.processInfo.environment["GRANARY_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}
