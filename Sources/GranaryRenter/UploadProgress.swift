import Foundation
import GranaryCore

/// Bytes confirmed against bytes needed for each segment being uploaded,
/// read synchronously by `granary status`.
public final class UploadProgress: @unchecked Sendable {
    // A lock, not an actor: the status snapshot is taken synchronously.
    private let lock = NSLock()
    private var active: [SegmentID: (done: Int64, total: Int64)] = [:]
    private var finishedBytes: Int64 = 0
    private var finishedSegments = 0

    public struct Snapshot: Sendable, Hashable, Codable {
        /// Segments currently uploading.
        public var segments: Int
        /// Piece bytes confirmed so far for those segments.
        public var bytesDone: Int64
        /// Piece bytes those segments need to be durable (s pieces each).
        public var bytesTotal: Int64
        /// Segment bytes made durable since start.
        public var durableBytes: Int64
        public var durableSegments: Int
    }

    func begin(_ id: SegmentID, total: Int64) { lock.lock(); active[id] = (0, total); lock.unlock() }
    func add(_ id: SegmentID, _ bytes: Int64) {
        lock.lock()
        if var e = active[id] { e.done = min(e.total, e.done + bytes); active[id] = e }
        lock.unlock()
    }
    func end(_ id: SegmentID, durableBytes: Int64?) {
        lock.lock()
        active[id] = nil
        if let durableBytes { finishedBytes += durableBytes; finishedSegments += 1 }
        lock.unlock()
    }

    public var snapshot: Snapshot {
        lock.lock(); defer { lock.unlock() }
        return Snapshot(segments: active.count, bytesDone: active.values.reduce(0) { $0 + $1.done },
                        bytesTotal: active.values.reduce(0) { $0 + $1.total },
                        durableBytes: finishedBytes, durableSegments: finishedSegments)
    }
}
