import ArgumentParser
import Foundation
import GranaryStore

struct FlushCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "flush", abstract: "Wait until every dirty byte is durably stored, showing progress.")

    @Option(help: "The mount's state folder.") var state: String = MountCommand.defaultState

    func run() async throws {
        var start: UInt64?
        var failure: String?
        var metadata: String?
        let tty = isatty(STDERR_FILENO) == 1
        try ControlClient.request(stateDirectory: state, command: "flush") { m in
            if let s = m.status {
                if start == nil { start = max(s.dirtyBytes, 1) }
                let total = max(start!, s.dirtyBytes)
                let done = Double(total - s.dirtyBytes) / Double(total)
                let width = 30
                let bar = String(repeating: "#", count: Int(done * Double(width))).padding(toLength: width, withPad: "-", startingAt: 0)
                let line = "[\(bar)] \(Int(done * 100))%  \(Human.bytes(s.dirtyBytes)) left  \(Human.bytes(UInt64(s.uploadRateBytesPerSecond)))/s  ETA \(Human.eta(s.etaSeconds))"
                    + (s.etaSeconds == nil ? s.lastError.map { "; last error: \($0)" } ?? "" : "")
                FileHandle.standardError.write(Data(((tty ? "\r" : "") + line + (tty ? "" : "\n")).utf8))
            }
            if m.done == false || m.error != nil { failure = m.error ?? "flush did not finish" }
            if let note = m.extra?["flush.metadata"] { metadata = note }
        }
        FileHandle.standardError.write(Data("\n".utf8))
        if let failure { throw ValidationError(failure) }
        print("everything is durable")
        if let metadata { print(metadata) }
    }
}
