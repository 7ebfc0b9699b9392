import Foundation

/// What the mount process itself uses, for `granary status`: resident
/// memory (the mount keeps every inode in memory; see the README),
/// open files and threads, read from /proc.
enum ProcessUsage {
    static func status() -> [String: String] {
        var rss: UInt64?
        var threads: Int?
        if let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) {
            for line in text.split(separator: "\n") {
                let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                if parts.first == "VmRSS:", parts.count >= 2 { rss = UInt64(parts[1]).map { $0 * 1024 } }
                if parts.first == "Threads:", parts.count >= 2 { threads = Int(parts[1]) }
            }
        }
        let files = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count).map { $0 - 1 }  // less the listing's own
        var items: [String] = []
        if let rss { items.append("\(Human.bytes(rss)) resident") }
        if let files { items.append("\(files) open files") }
        if let threads { items.append("\(threads) threads") }
        return items.isEmpty ? [:] : ["process": items.joined(separator: ", ")]
    }
}
