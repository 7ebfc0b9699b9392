import Foundation
import GranaryCore

/// Remembers (sender, nonce) pairs for as long as their timestamps are
/// acceptable, so a captured datagram cannot be replayed. Datagrams older
/// than the skew window are refused by timestamp, so nothing older needs
/// remembering. Called from NIO threads before the node's actor is involved,
/// hence a lock.
final class ReplayGuard: @unchecked Sendable {
    private struct Key: Hashable { let sender: Hash256; let nonce: Data }
    private let lock = NSLock()
    private var seen: [Key: UInt64] = [:]   // -> forget after (ms since epoch)
    private let windowMs: UInt64
    private let capacity: Int

    init(windowMs: UInt64, capacity: Int = 500_000) {
        self.windowMs = windowMs
        self.capacity = capacity
    }

    /// True when the pair is new (and now remembered); false for a replay
    /// or when the cache is full of live entries (refusing is the safe side).
    func admit(sender: Hash256, nonce: Data, nowMs: UInt64) -> Bool {
        let key = Key(sender: sender, nonce: nonce)
        lock.lock()
        defer { lock.unlock() }
        if let until = seen[key], until > nowMs { return false }
        if seen.count >= capacity {
            seen = seen.filter { $0.value > nowMs }
            if seen.count >= capacity { return false }
        }
        seen[key] = nowMs + 2 * windowMs
        return true
    }
}

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
    /// Offers handed to this node's subscribers (each offer at most once).
    public var offersDelivered = 0
    /// Publications received again after the seen-cache had them.
    public var duplicatePublications = 0
    /// Filter exchanges that showed a neighbour's filter changed: zero over an
    /// exchange interval network-wide means subscriptions have spread.
    public var filterChanges = 0
    /// Records read back from routing.db at start, and rows dropped there
    /// (expired, altered, over the limit).
    public var recordsLoaded = 0
    public var recordsDroppedAtLoad = 0
    public var droppedTotal: Int { dropped.values.reduce(0, +) }
    public init() {}
}
