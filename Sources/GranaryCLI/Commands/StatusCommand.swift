import ArgumentParser
import Foundation
import GranaryStore

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the running mount's state.")

    @Option(help: "The mount's state folder.") var state: String = MountCommand.defaultState
    @Flag(help: "Print the raw JSON answer.") var json = false

    func run() async throws {
        try ControlClient.request(stateDirectory: state, command: "status") { m in
            if json {
                if let d = try? JSONEncoder().encode(m) { print(String(decoding: d, as: UTF8.self)) }
                return
            }
            if let e = m.error { print("error: \(e)") }
            guard let s = m.status else { return }
            print("dirty (not yet uploaded): \(Human.bytes(s.dirtyBytes)) in \(s.dirtyChunks) chunks")
            print("uploaded this session:    \(Human.bytes(s.uploadedBytes)) in \(s.uploadedSegments) segments")
            print("upload rate:              \(Human.bytes(UInt64(s.uploadRateBytesPerSecond)))/s, ETA \(Human.eta(s.etaSeconds))")
            print("cache:                    \(Human.bytes(s.cacheBytes)) clean of \(Human.bytes(s.cacheBudget)) budget")
            print("files:                    \(s.files)")
            let live = s.segmentBytes > 0 ? String(format: "%.0f%%", 100 * Double(s.liveBytes) / Double(s.segmentBytes)) : "-"
            print("segments:                 \(s.segments) holding \(Human.bytes(s.segmentBytes)), \(live) live, \(Human.bytes(s.reclaimableBytes)) reclaimable")
            print("compaction:               \(s.compacting ? "running; " : "")\(Human.bytes(s.compactedBytes)) rewritten, \(s.segmentsDeleted) segments deleted in total")
            if let e = s.lastError { print("last error:               \(e)") }
            for (k, v) in (m.extra ?? [:]).sorted(by: { $0.key < $1.key }) { print("\(k): \(v)") }
        }
    }
}

enum Human {
    static func bytes(_ n: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(n)
        var i = 0
        while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
        return i == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[i])
    }

    static func eta(_ s: Double?) -> String {
        guard let s else { return "unknown (nothing uploading)" }
        if s < 1 { return "done" }
        if s < 120 { return "\(Int(s)) s" }
        return "\(Int(s / 60)) min"
    }
}
