import Foundation

/// Counters a node keeps about its traffic (for tests, logs and the bench).
/// Updated from NIO threads and from the actor, hence a lock.
final class TrafficCounters: @unchecked Sendable {
    private let lock = NSLock()
    private var stats = DHTStatistics()

    func update(_ body: (inout DHTStatistics) -> Void) { lock.lock(); body(&stats); lock.unlock() }
    var snapshot: DHTStatistics { lock.lock(); defer { lock.unlock() }; return stats }
}

/// What a node has sent, received and refused.
public struct DHTStatistics: Sendable, Equatable {
    public var datagramsSent = 0
    public var datagramsReceived = 0
    /// Refused datagrams by reason ("bad-signature", "id-mismatch", "short-pow",
    /// "replay", "stale", "oversized", "malformed", "record-rejected", ...).
    public var dropped: [String: Int] = [:]
    /// PUBLISH datagrams this node sent (publications and forwards).
    public var publishSent = 0
    /// PUBLISH datagrams sent as random-walk steps (no filter matched).
    public var publishWalkSent = 0
    /// Offers handed to this node's subscribers (each offer at most once).
    public var offersDelivered = 0
    /// Publications received again after the seen-cache had them.
    public var duplicatePublications = 0
    /// Filter exchanges that showed a neighbour's filter changed: zero over an
    /// exchange interval network-wide means subscriptions have spread.
    public var filterChanges = 0
    /// Requests that got no reply within the request timeout.
    public var requestsTimedOut = 0
    /// Records read back from routing.db at start, and rows dropped there
    /// (expired, altered, over the limit).
    public var recordsLoaded = 0
    public var recordsDroppedAtLoad = 0
    public var droppedTotal: Int { dropped.values.reduce(0, +) }
    public init() {}
}
