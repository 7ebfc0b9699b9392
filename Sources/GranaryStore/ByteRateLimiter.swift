import Foundation

/// Keeps a stream of byte transfers under an average rate: `take` waits
/// until the bytes taken so far fit the budget since the start.
/// Used from one thread at a time.
struct ByteRateLimiter {
    let bytesPerSecond: UInt64
    private let start = monotonicNanos()
    private var taken: UInt64 = 0

    init(bytesPerSecond: UInt64) { self.bytesPerSecond = bytesPerSecond }

    /// Accounts `count` bytes; returns how many seconds to wait before moving them.
    mutating func take(_ count: Int) -> Double {
        guard bytesPerSecond > 0 else { return 0 }
        taken += UInt64(count)
        let due = Double(taken) / Double(bytesPerSecond)
        let elapsed = Double(monotonicNanos() - start) / 1e9
        return max(0, due - elapsed)
    }
}
