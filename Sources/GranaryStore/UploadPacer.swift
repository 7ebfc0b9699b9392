import Foundation
import Synchronization

/// When the mount last served a read. The uploader competes with reads for
/// the same cache disk and (on small machines) the same cores, so it slows
/// down while reads go on. One atomic store per read. Thread-safe.
final class ReadActivity: Sendable {
    /// Reads this recent count as going on.
    static let window: UInt64 = 100_000_000
    private let lastRead = Atomic<UInt64>(0)

    func noteRead() { lastRead.store(monotonicNanos(), ordering: .relaxed) }

    func active(at now: UInt64) -> Bool {
        now &- lastRead.load(ordering: .relaxed) < Self.window
    }
}

/// Holds one upload pass to `bytesPerSecond` while the mount is being read,
/// and lets it run at full speed otherwise. A floor, not a pause, so a
/// workload that never stops reading still gets its writes uploaded; above
/// the upload rate of an ordinary network link, so over one it never binds.
/// Used from the uploader thread only.
struct UploadPacer {
    let bytesPerSecond: UInt64
    private var nextStart: UInt64 = 0

    init(bytesPerSecond: UInt64) { self.bytesPerSecond = bytesPerSecond }

    /// Waits, in short steps, until the next chunk may be sealed: at once
    /// when no read is going on or `hurry` says the pass must not wait
    /// (a flush or stop came in meanwhile).
    mutating func waitTurn(_ reads: ReadActivity, hurry: () -> Bool) {
        guard bytesPerSecond > 0 else { return }
        while true {
            let now = monotonicNanos()
            guard reads.active(at: now) else { nextStart = now; return }
            if now >= nextStart || hurry() { return }
            usleep(UInt32(min(nextStart - now, 10_000_000) / 1000))
        }
    }

    /// Accounts a sealed chunk of `bytes`.
    mutating func sealed(_ bytes: Int) {
        guard bytesPerSecond > 0 else { return }
        nextStart = max(nextStart, monotonicNanos()) + UInt64(bytes) * 1_000_000_000 / bytesPerSecond
    }
}
