import Foundation

/// Remembers for a moment that the cache disk had plenty of free space, so
/// that writes do not ask the file system at every new chunk. Thread-safe.
final class FreeSpaceGauge: @unchecked Sendable {
    /// How long an ample reading stands: at twice the minimum free space,
    /// 50 ms of writes even at disk speed cannot use up the margin.
    static let validity: UInt64 = 50_000_000
    private let lock = NSLock()
    private var ampleUntil: UInt64 = 0

    /// True while the last reading, recent enough, was ample.
    func recentlyAmple() -> Bool {
        lock.lock(); defer { lock.unlock() }
        return monotonicNanos() < ampleUntil
    }

    /// Records a reading: `ample` when well above the minimum.
    func note(ample: Bool) {
        lock.lock(); defer { lock.unlock() }
        ampleUntil = ample ? monotonicNanos() + Self.validity : 0
    }
}
