import GranaryCore

/// A segment's name: random, so it reveals nothing about its contents.
public typealias SegmentID = Hash256

/// Why a segment operation failed, with what a person needs to act.
public enum SegmentStoreError: Error, CustomStringConvertible {
    case notFound(SegmentID)
    case tooLarge(size: Int, limit: Int)
    case unavailable(String)      // not enough farmers / network down
    case corrupt(SegmentID, String)
    case io(String)

    public var description: String {
        switch self {
        case let .notFound(id): return "segment \(id.short) is unknown"
        case let .tooLarge(size, limit): return "segment of \(size) bytes exceeds the \(limit)-byte limit"
        case let .unavailable(why): return "segment storage unavailable: \(why)"
        case let .corrupt(id, why): return "segment \(id.short) is corrupt: \(why)"
        case let .io(why): return why
        }
    }
}

/// The seam between the Store (files, chunks) and the renter engine
/// (farmers): opaque segments of up to 64 MiB, stored until deleted.
///
/// `put` returns only once the segment is durable (on the network: s pieces
/// confirmed); the Store records that a chunk lives in a segment only after
/// that. Implementations are thread-safe.
public protocol SegmentStore: Sendable {
    /// Largest segment accepted.
    static var maxSegmentSize: Int { get }

    /// Stores `bytes` under `id`; returns when durable.
    func put(_ id: SegmentID, bytes: [UInt8]) async throws
    /// Reads `length` bytes at `offset` of a durable segment.
    func read(_ id: SegmentID, offset: Int, length: Int) async throws -> [UInt8]
    /// Deletes a segment; deleting an unknown one is not an error.
    func delete(_ id: SegmentID) async throws
    /// Every segment this store holds (for garbage collection of orphans).
    func list() async throws -> [SegmentID]
    /// How much user data the store can hold and holds now, for statfs;
    /// nil when it has no limit of its own (a local folder).
    func capacity() -> SegmentCapacity?
    /// Bytes received from the network by reads so far, growing as they
    /// arrive: a reader waits while it grows and gives up once it stops
    /// for its timeout. 0 for a store that does not fetch over a network.
    var bytesReceived: UInt64 { get }
}

/// Capacity in bytes of segment data (before erasure coding expands it).
public struct SegmentCapacity: Sendable, Equatable {
    public var total: UInt64
    public var used: UInt64
    public init(total: UInt64, used: UInt64) { self.total = total; self.used = used }
    public var free: UInt64 { total > used ? total - used : 0 }
}

public extension SegmentStore {
    static var maxSegmentSize: Int { 64 << 20 }
    func capacity() -> SegmentCapacity? { nil }
    var bytesReceived: UInt64 { 0 }
}
