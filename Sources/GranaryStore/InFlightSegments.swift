import Foundation
import GranaryCore

/// Segments being stored whose chunks are not yet recorded in meta.db
/// (uploads and compaction rewrites). Garbage collection never takes one
/// of these for an orphan. Thread-safe.
final class InFlightSegments: @unchecked Sendable {
    private let lock = NSLock()
    private var ids: Set<Hash256> = []

    func insert(_ id: Hash256) { lock.withLock { _ = ids.insert(id) } }
    func remove(_ id: Hash256) { lock.withLock { _ = ids.remove(id) } }
    func snapshot() -> Set<Hash256> { lock.withLock { ids } }
}
