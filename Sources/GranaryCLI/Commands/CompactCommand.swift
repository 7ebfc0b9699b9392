import ArgumentParser
import Foundation
import GranaryStore

struct CompactCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compact",
        abstract: "Run a compaction and garbage collection pass on the running mount now, and wait for it.",
        discussion: """
            Segments whose live fraction fell below the mount's --compact-threshold are rewritten, \
            segments no file refers to and orphans left by a crash are deleted, so deleted files \
            (e.g. after `restic forget --prune`) stop taking space on farmers and contract allowance. \
            The mount also does this in the background every --compact-interval seconds.
            """)

    @Option(help: "The mount's state folder.") var state: String = MountCommand.defaultState
    @Flag(help: "Print the raw JSON answer.") var json = false

    func run() async throws {
        var failure: String?
        try ControlClient.request(stateDirectory: state, command: "compact") { m in
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = .sortedKeys
                if let d = try? encoder.encode(m) { print(String(decoding: d, as: UTF8.self)) }
            } else if let r = m.compaction {
                print("segments:   \(r.segmentsBefore) -> \(r.segmentsAfter), \(Human.bytes(r.storedBytesBefore)) -> \(Human.bytes(r.storedBytesAfter)) stored (\(Human.bytes(r.liveBytes)) live)")
                print("rewritten:  \(r.segmentsRewritten) segments into \(r.segmentsWritten), \(Human.bytes(r.bytesCopied)) copied")
                print("deleted:    \(r.deadSegmentsDeleted) dead segments, \(r.orphansDeleted) orphans")
                print(String(format: "took:       %.1f s", r.seconds))
            }
            if m.done == false || m.error != nil { failure = m.error ?? "compaction did not finish" }
        }
        if let failure { throw ValidationError(failure) }
    }
}
