import Foundation
import GranaryCore

/// Chunk fetches in flight, so a reader and the read-ahead (or two
/// readers) asking for the same uncached chunk share one network read:
/// the first caller fetches, the others wait for its outcome and get the
/// same open chunk (which stays readable however small the cache budget).
final class ChunkFetches: @unchecked Sendable {
    // A condition: callers are plain threads (FUSE workers, read-ahead).
    private let cond = NSCondition()
    private var running: [Hash256: Outcome] = [:]

    final class Outcome {
        var result: Result<CachedChunk, FSError>?
    }

    /// Whether a fetch of `id` is under way.
    func isRunning(_ id: Hash256) -> Bool {
        cond.lock(); defer { cond.unlock() }
        return running[id] != nil
    }

    /// Runs `fetch` for `id` unless one is already running, in which case
    /// it waits for that one and shares its result.
    func fetch(_ id: Hash256, _ fetch: () throws(FSError) -> CachedChunk) throws(FSError) -> CachedChunk {
        cond.lock()
        if let existing = running[id] {
            while existing.result == nil { cond.wait() }
            cond.unlock()
            return try existing.result!.get()
        }
        let mine = Outcome()
        running[id] = mine
        cond.unlock()
        let result: Result<CachedChunk, FSError>
        do { result = .success(try fetch()) } catch { result = .failure(error) }
        cond.lock()
        mine.result = result
        running[id] = nil
        cond.broadcast()
        cond.unlock()
        return try result.get()
    }
}
