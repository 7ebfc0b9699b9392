import Foundation
import GranaryCore

/// Chunk fetches in flight, so a reader and the read-ahead (or two
/// readers) asking for the same uncached chunk share one network read:
/// the first caller fetches, the others wait for its outcome.
final class ChunkFetches: @unchecked Sendable {
    // A condition: callers are plain threads (FUSE workers, read-ahead).
    private let cond = NSCondition()
    private var running: [Hash256: Outcome] = [:]

    final class Outcome {
        var error: FSError?
        var done = false
    }

    /// Runs `fetch` for `id` unless one is already running, in which case
    /// it waits for that one and shares its result.
    func fetch(_ id: Hash256, _ fetch: () throws(FSError) -> Void) throws(FSError) {
        cond.lock()
        if let existing = running[id] {
            while !existing.done { cond.wait() }
            cond.unlock()
            if let e = existing.error { throw e }
            return
        }
        let mine = Outcome()
        running[id] = mine
        cond.unlock()
        var failure: FSError?
        do { try fetch() } catch { failure = error }
        cond.lock()
        mine.error = failure
        mine.done = true
        running[id] = nil
        cond.broadcast()
        cond.unlock()
        if let failure { throw failure }
    }
}
