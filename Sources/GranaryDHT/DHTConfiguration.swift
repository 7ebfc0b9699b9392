import GranaryCore

/// Tunables of a DHT node. Defaults are the production values; tests shorten
/// the intervals. Every node of one network must agree on `difficulty`.
public struct DHTConfiguration: Sendable {
    /// Bucket size and replication factor.
    public var k = 20
    /// Parallel queries per lookup round.
    public var alpha = 3
    /// Proof-of-work bits required of every sender (GRANARY_POW_BITS).
    public var difficulty = NodeIdentity.configuredDifficulty
    /// How long a request waits for its reply.
    public var requestTimeout: Duration = .milliseconds(1500)
    /// Largest clock difference accepted on a datagram's timestamp.
    public var maxClockSkewSeconds: UInt64 = 60
    /// Largest datagram decoded; anything longer is dropped unread.
    public var maxDatagramBytes = 16 * 1024
    /// Buckets without traffic for this long get a lookup of a random ID in them.
    public var refreshInterval: Duration = .seconds(900)
    /// Owners re-store their records, holders replicate theirs, this often.
    public var republishInterval: Duration = .seconds(3600)
    /// How often the routing table is written to disk (when it has a path).
    public var saveInterval: Duration = .seconds(60)
    /// Records this node keeps for others at most.
    public var maxStoredRecords = 20_000
    /// Pub/sub: neighbours this node picks itself (others pick it too, so
    /// the average degree is about twice this).
    /// Two (average degree about four) measured best in a simulation of
    /// 100 nodes with 20 subscribers: ~98% delivery at ~4 messages per
    /// delivery; three delivers ~100% but at ~6 messages.
    public var pubsubDegree = 2
    /// Pub/sub: how often filters are exchanged with neighbours.
    public var filterExchangeInterval: Duration = .seconds(30)
    /// Pub/sub: a node holds a publication for a random time up to this
    /// before forwarding it, and skips the neighbours that sent it a copy
    /// meanwhile. Where several subscribers' floods meet (most of the
    /// traffic is copies of an offer a node already had), this cuts the
    /// copies; offers are not urgent, so a few tens of ms per hop cost
    /// nothing users see.
    public var publishForwardDelay: Duration = .milliseconds(150)
    /// Pub/sub: hops a publication may travel.
    public var publishHopLimit = 12
    /// Bids: delivery attempts to the renter.
    public var bidAttempts = 3

    public init() {}

    /// Short intervals for tests and simulations on one machine.
    public static func fastForTests(difficulty: Int = 4) -> DHTConfiguration {
        var c = DHTConfiguration()
        c.difficulty = difficulty
        c.requestTimeout = .milliseconds(700)
        c.filterExchangeInterval = .seconds(5)
        c.refreshInterval = .seconds(600)
        c.saveInterval = .seconds(2)
        return c
    }
}

/// The cost of one iterative lookup.
public struct LookupStatistics: Sendable, Equatable {
    /// Waves of up to α parallel queries (the final wave may be wider).
    public var rounds = 0
    /// Queries sent.
    public var messages = 0
    public init(rounds: Int = 0, messages: Int = 0) { self.rounds = rounds; self.messages = messages }
}
