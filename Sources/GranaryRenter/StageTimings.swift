import Foundation

/// Where the engine's time goes, summed over all operations since start
/// (seconds of work, so parallel stages can add up to more than wall time).
/// For `granary bench network`'s breakdown.
public final class StageTimings: @unchecked Sendable {
    // A lock: stages report from many tasks, the bench reads synchronously.
    private let lock = NSLock()
    private var seconds: [String: Double] = [:]

    func add(_ stage: String, _ s: Double) { lock.lock(); seconds[stage, default: 0] += s; lock.unlock() }

    /// Times `body` under `stage`.
    func measure<T>(_ stage: String, _ body: () throws -> T) rethrows -> T {
        let t0 = DispatchTime.now().uptimeNanoseconds
        defer { add(stage, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9) }
        return try body()
    }

    public var snapshot: [String: Double] { lock.lock(); defer { lock.unlock() }; return seconds }
    public func reset() { lock.lock(); seconds.removeAll(); lock.unlock() }
}
