import Foundation
import GranaryCore

/// Kademlia routing table: 256 buckets indexed by the number of leading bits
/// a contact's ID shares with ours (bucket 0 holds the farthest half of the
/// ID space). Each bucket keeps at most k contacts, least recently seen
/// first. A value type owned by its node's actor.
public struct RoutingTable: Sendable {
    public let localID: Hash256
    public let k: Int
    /// Contacts per bucket, least recently seen first.
    private(set) var buckets: [[DHTContact]]
    /// When each bucket last saw a lookup or a contact (for refresh).
    private(set) var bucketTouched: [ContinuousClock.Instant]
    /// When each contact was last heard from.
    private var lastSeen: [Hash256: ContinuousClock.Instant] = [:]
    /// A full bucket's oldest contact heard from more recently than this is
    /// kept without a ping (it is very likely alive: the Kademlia paper's
    /// own optimisation), so a busy node does not ping on every newcomer.
    public var recentlySeen: Duration = .seconds(60)

    public init(localID: Hash256, k: Int = 20) {
        self.localID = localID
        self.k = k
        buckets = Array(repeating: [], count: 256)
        bucketTouched = Array(repeating: .now, count: 256)
    }

    public func bucketIndex(for id: Hash256) -> Int { min(255, (id ^ localID).leadingZeroBitCount) }

    /// The outcome of offering a contact to the table.
    public enum Insertion: Equatable {
        case added, refreshed, ignored
        /// The bucket is full: ping `oldest`; evict it only if it does not answer.
        case bucketFull(oldest: DHTContact)
    }

    /// Records that `contact` was seen: moves it to the tail of its bucket,
    /// adds it when there is room, or names the contact to ping when full.
    @discardableResult
    public mutating func update(_ contact: DHTContact) -> Insertion {
        guard contact.id != localID else { return .ignored }
        let b = bucketIndex(for: contact.id)
        let now = ContinuousClock.now
        bucketTouched[b] = now
        if let i = buckets[b].firstIndex(where: { $0.id == contact.id }) {
            lastSeen[contact.id] = now
            buckets[b].remove(at: i)
            buckets[b].append(contact)  // the latest advertised address wins
            return .refreshed
        }
        if buckets[b].count < k {
            buckets[b].append(contact)
            lastSeen[contact.id] = now
            return .added
        }
        let oldest = buckets[b][0]
        if let seen = lastSeen[oldest.id], now - seen < recentlySeen { return .ignored }
        return .bucketFull(oldest: oldest)
    }

    /// Replaces `old` (which failed its ping) with `new`.
    public mutating func evict(_ old: Hash256, replacingWith new: DHTContact) {
        remove(old)
        update(new)
    }

    public mutating func remove(_ id: Hash256) {
        let b = bucketIndex(for: id)
        buckets[b].removeAll { $0.id == id }
        lastSeen[id] = nil
    }

    public func contains(_ id: Hash256) -> Bool {
        buckets[bucketIndex(for: id)].contains { $0.id == id }
    }

    public func contact(_ id: Hash256) -> DHTContact? {
        buckets[bucketIndex(for: id)].first { $0.id == id }
    }

    /// The `count` known contacts closest to `target` by XOR distance.
    public func closest(to target: Hash256, count: Int) -> [DHTContact] {
        var all: [(Hash256, DHTContact)] = []
        all.reserveCapacity(self.count)
        for bucket in buckets { for c in bucket { all.append((c.id ^ target, c)) } }
        all.sort { $0.0 < $1.0 }
        return all.prefix(count).map(\.1)
    }

    public func bucketCount(_ index: Int) -> Int { buckets[index].count }

    public var allContacts: [DHTContact] { buckets.flatMap { $0 } }
    public var count: Int { buckets.reduce(0) { $0 + $1.count } }

    /// Buckets not touched within `interval`, up to the deepest non-empty
    /// bucket (deeper ones are empty by construction in a small network).
    public func bucketsNeedingRefresh(olderThan interval: Duration) -> [Int] {
        guard let deepest = buckets.lastIndex(where: { !$0.isEmpty }) else { return [] }
        let now = ContinuousClock.now
        return (0...deepest).filter { now - bucketTouched[$0] > interval }
    }

    public mutating func touch(bucket: Int) { bucketTouched[bucket] = .now }

    /// A random ID falling in bucket `index` (shares exactly `index` leading bits with us).
    public func randomID(inBucket index: Int) -> Hash256 {
        var bytes = Hash256.random().bytes
        let local = localID.bytes
        for bit in 0...index {
            let byte = bit / 8, mask = UInt8(0x80) >> UInt8(bit % 8)
            let want = bit < index ? (local[byte] & mask) : (~local[byte] & mask)
            bytes[byte] = (bytes[byte] & ~mask) | want
        }
        return Hash256(bytes: bytes)!
    }
}
