import Foundation

/// Timing for benchmarks: best of several runs, as MB/s (10^6 bytes of input
/// per second). Best-of rather than mean, because these machines are shared
/// and noise only ever makes a run slower.
enum BenchClock {
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    static func bestMBps(bytes: Int, runs: Int = 5, _ body: () throws -> Void) rethrows -> Double {
        var best = Double.infinity
        for _ in 0..<runs {
            let t0 = now()
            try body()
            best = min(best, now() - t0)
        }
        return Double(bytes) / best / 1e6
    }
}

/// Prints a flat JSON object with keys in the given order, or a table.
struct BenchReport {
    var entries: [(String, Double)] = []

    mutating func add(_ key: String, _ value: Double) { entries.append((key, value)) }

    func render(json: Bool) -> String {
        if json {
            let body = entries.map { "  \"\($0.0)\": \(String(format: "%.1f", $0.1))" }.joined(separator: ",\n")
            return "{\n\(body)\n}"
        }
        let width = entries.map(\.0.count).max() ?? 0
        return entries.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + String(format: "%10.1f", $0.1) }
            .joined(separator: "\n")
    }
}
