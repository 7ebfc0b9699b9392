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

    /// Measures a figure and its baseline in alternation, so that a burst of
    /// load from a neighbour hits both alike rather than one of them.
    static func bestPairMBps(bytes: Int, runs: Int = 5, _ measured: () throws -> Void,
                             baseline: () throws -> Void) rethrows -> (measured: Double, baseline: Double) {
        var best = (Double.infinity, Double.infinity)
        for _ in 0..<runs {
            var t0 = now()
            try measured()
            best.0 = min(best.0, now() - t0)
            t0 = now()
            try baseline()
            best.1 = min(best.1, now() - t0)
        }
        return (Double(bytes) / best.0 / 1e6, Double(bytes) / best.1 / 1e6)
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

    /// A figure added before (0 when missing).
    subscript(key: String) -> Double { entries.first { $0.0 == key }?.1 ?? 0 }

    func render(json: Bool) -> String {
        if json {
            let body = entries.map { "  \"\($0.0)\": \(Self.format($0.1))" }.joined(separator: ",\n")
            return "{\n\(body)\n}"
        }
        let width = entries.map(\.0.count).max() ?? 0
        return entries.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + Self.format($0.1).leftPadded(to: 10) }
            .joined(separator: "\n")
    }

    /// Small figures (seconds) keep two decimals: 0.2 against 0.4 s hid a
    /// ratio anywhere between 1.4 and 3.
    static func format(_ v: Double) -> String { String(format: abs(v) < 10 ? "%.2f" : "%.1f", v) }
}

private extension String {
    func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}
