import Foundation

/// Where the engine's time goes, summed over all operations since start:
/// CPU seconds for computing stages (`measure`), wall seconds for
/// transfers (`add`), so parallel stages can add up to more than wall time
/// (stages named `*_sum` time operations that overlap, e.g. two segments'
/// uploads or eight chunk reads at once). For `granary bench network`'s breakdown.
public final class StageTimings: @unchecked Sendable {
    // A lock: stages report from many tasks, the bench reads synchronously.
    private let lock = NSLock()
    private var seconds: [String: Double] = [:]

    func add(_ stage: String, _ s: Double) { lock.lock(); seconds[stage, default: 0] += s; lock.unlock() }

    /// Adds the CPU seconds this thread spends in `body` (synchronous work:
    /// the thread does nothing else meanwhile) under `stage`. CPU time, not
    /// wall time, so the figure means the same on a loaded machine.
    func measure<T>(_ stage: String, _ body: () throws -> T) rethrows -> T {
        let t0 = Self.threadCPUSeconds()
        defer { add(stage, Self.threadCPUSeconds() - t0) }
        return try body()
    }

    /// CPU seconds used by the calling thread so far.
    public static func threadCPUSeconds() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    public var snapshot: [String: Double] { lock.lock(); defer { lock.unlock() }; return seconds }
    public func reset() { lock.lock(); seconds.removeAll(); lock.unlock() }
}
