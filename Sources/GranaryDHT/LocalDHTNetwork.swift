import Foundation
import GranaryCore

/// A network of DHT nodes inside one process, for tests and `granary bench
/// dht`: on real UDP sockets on 127.0.0.1, or on the in-memory transport
/// (only for the 1,000-node simulation). Every node runs the same
/// `DHTNode` code as a real process.
public final class LocalDHTNetwork: @unchecked Sendable {
    // @unchecked: `nodes` is filled by `start` before the network is shared
    // and only replaced by `remove`, which its single owner calls.
    public private(set) var nodes: [DHTNode] = []
    public let memory: MemoryNetwork?
    public let configuration: DHTConfiguration

    private init(memory: MemoryNetwork?, configuration: DHTConfiguration) {
        self.memory = memory
        self.configuration = configuration
    }

    /// Starts `count` nodes: the first alone, the others joining through it
    /// `joinWidth` at a time, as nodes arrive in a real network.
    public static func start(count: Int, configuration: DHTConfiguration, inMemory: Bool = false,
                             joinWidth: Int = 10) async throws -> LocalDHTNetwork {
        let net = LocalDHTNetwork(memory: inMemory ? MemoryNetwork() : nil, configuration: configuration)
        do {
            let first = try await net.makeNode()
            net.nodes.append(first)
            let seed = first.contact.address
            while net.nodes.count < count {
                let batch = min(joinWidth, count - net.nodes.count)
                let joined = try await withThrowingTaskGroup(of: DHTNode.self) { group in
                    for _ in 0..<batch {
                        group.addTask {
                            let n = try await net.makeNode()
                            do { try await n.bootstrap([seed]) } catch { await n.stop(); throw error }
                            return n
                        }
                    }
                    var out: [DHTNode] = []
                    for try await n in group { out.append(n) }
                    return out
                }
                net.nodes += joined
            }
        } catch {
            await net.stopAll()
            throw error
        }
        return net
    }

    /// A new node on this network's transport (not joined yet).
    public func makeNode(statePath: String? = nil, identity: NodeIdentity? = nil) async throws -> DHTNode {
        let transport: any DHTTransport
        if let memory { transport = memory.makeTransport() } else { transport = try await UDPTransport.bind(host: "127.0.0.1", port: 0) }
        let node = try DHTNode(identity: identity ?? NodeIdentity.generate(difficulty: configuration.difficulty),
                               transport: transport, configuration: configuration, statePath: statePath)
        await node.start()
        return node
    }

    /// Stops and forgets the nodes at `indices` (as if their processes died).
    public func remove(_ indices: [Int]) async {
        let gone = Set(indices)
        for i in gone.sorted() { await nodes[i].stop() }
        nodes = nodes.enumerated().filter { !gone.contains($0.offset) }.map(\.element)
    }

    public func stopAll() async {
        await withTaskGroup(of: Void.self) { group in
            for n in nodes { group.addTask { await n.stop() } }
        }
    }

    /// `count` lookups of random existing node IDs from random other nodes,
    /// `width` at a time. Returns each lookup's cost and whether it found its target.
    public func measureLookups(count: Int, width: Int = 8) async -> [(found: Bool, statistics: LookupStatistics)] {
        let pairs: [(DHTNode, DHTNode)] = (0..<count).map { _ in
            let a = nodes.randomElement()!
            var b = nodes.randomElement()!
            while b.id == a.id && nodes.count > 1 { b = nodes.randomElement()! }
            return (a, b)
        }
        return await withTaskGroup(of: (Int, Bool, LookupStatistics).self) { group in
            var out = [(found: Bool, statistics: LookupStatistics)](repeating: (false, LookupStatistics()), count: count)
            var next = 0
            func add(_ g: inout TaskGroup<(Int, Bool, LookupStatistics)>) {
                let i = next; next += 1
                let (a, b) = pairs[i]
                g.addTask { let r = await a.findNode(b.id); return (i, r.contact?.id == b.id, r.statistics) }
            }
            for _ in 0..<min(width, count) { add(&group) }
            for await (i, found, stats) in group {
                out[i] = (found, stats)
                if next < count { add(&group) }
            }
            return out
        }
    }

    /// Result of a pub/sub measurement.
    public struct PubSubResult: Sendable {
        /// Subscriber deliveries over (subscribers × offers).
        public var deliveryRatio: Double
        /// PUBLISH datagrams sent network-wide per delivered offer.
        public var messagesPerDelivery: Double
        public var delivered: Int
        public var messages: Int
        /// Of `messages`: random-walk steps, and datagrams that reached a
        /// node that had already seen the offer.
        public var walks = 0
        public var duplicates = 0
    }

    /// Subscribes `subscribers` random nodes to a farmer policy's topics,
    /// lets the filters converge, then publishes `offers` offers from random
    /// non-subscribers and counts deliveries and PUBLISH datagrams. With
    /// `placements` > 1 it unsubscribes and repeats with other random
    /// subscribers, and reports the totals: one placement's figures depend
    /// much on where its subscribers happen to sit in the neighbour graph.
    public func measurePubSub(subscribers: Int, offers: Int, settle: Duration? = nil,
                              placements: Int = 1) async throws -> PubSubResult {
        let placements = max(1, placements)
        var sum = PubSubTraffic()
        for _ in 0..<placements {
            sum += try await measurePlacement(subscribers: subscribers, offers: offers, settle: settle ?? .seconds(5))
        }
        let total = subscribers * offers * placements
        return PubSubResult(deliveryRatio: Double(sum.delivered) / Double(max(1, total)),
                            messagesPerDelivery: Double(sum.sent) / Double(max(1, sum.delivered)),
                            delivered: sum.delivered, messages: sum.sent, walks: sum.walks, duplicates: sum.duplicates)
    }

    /// Network-wide pub/sub counters, summed over nodes.
    private struct PubSubTraffic: Equatable {
        var sent = 0, delivered = 0, walks = 0, duplicates = 0
        static func += (a: inout Self, b: Self) {
            a.sent += b.sent; a.delivered += b.delivered; a.walks += b.walks; a.duplicates += b.duplicates
        }
        static func - (a: Self, b: Self) -> Self {
            Self(sent: a.sent - b.sent, delivered: a.delivered - b.delivered,
                 walks: a.walks - b.walks, duplicates: a.duplicates - b.duplicates)
        }
    }

    private func measurePlacement(subscribers: Int, offers: Int, settle: Duration) async throws -> PubSubTraffic {
        let policy = BidPolicy(minPricePerAudit: 50, capacityBytes: 100 << 30, maxDurationSeconds: 90 * 86_400)
        let terms = OfferTerms(allowanceBytes: 8 << 30, durationSeconds: 30 * 86_400, maxPricePerAudit: 200, auditIntervalSeconds: 3600)
        let shuffled = nodes.shuffled()
        let subs = Array(shuffled.prefix(subscribers))
        let others = Array(shuffled.dropFirst(subscribers))
        var tokens: [(DHTNode, SubscriptionToken)] = []
        for s in subs { tokens.append((s, await s.subscribe(topics: policy.topics) { _ in })) }
        try await Task.sleep(for: settle)
        try await waitForQuietFilters()
        func totals() -> PubSubTraffic {
            var t = PubSubTraffic()
            for n in nodes {
                let s = n.statistics()
                t.sent += s.publishSent
                t.walks += s.publishWalkSent
                t.duplicates += s.duplicatePublications
                t.delivered += s.offersDelivered
            }
            return t
        }
        let before = totals()
        for _ in 0..<offers {
            let publisher = others.randomElement()!
            let offer = try ContractOffer(terms: terms, renter: publisher.identity, contact: publisher.contact,
                                          expiresAt: Date().addingTimeInterval(60))
            await publisher.publish(offer)
            try await Task.sleep(for: .milliseconds(100))
        }
        // Publications travel hop by hop: wait until the counters stop moving.
        // Two quiet polls in a row, so a loaded machine's pause is not
        // taken for the end.
        var after = totals()
        var quiet = 0
        for _ in 0..<40 where quiet < 2 {
            try await Task.sleep(for: .milliseconds(250))
            let now = totals()
            quiet = now == after ? quiet + 1 : 0
            after = now
        }
        for (node, token) in tokens { await node.unsubscribe(token) }
        return after - before
    }

    /// On a loaded machine exchanges run late: waits (bounded) until a whole
    /// exchange interval passes with no filter changing anywhere.
    private func waitForQuietFilters() async throws {
        func filterChanges() -> Int { nodes.reduce(0) { $0 + $1.statistics().filterChanges } }
        let interval = configuration.filterExchangeInterval + .milliseconds(500)
        var changes = filterChanges()
        for _ in 0..<6 {
            try await Task.sleep(for: interval)
            let now = filterChanges()
            if now == changes { break }
            changes = now
        }
    }
}

/// Percentiles of small samples (nearest rank).
public enum Percentile {
    public static func of(_ values: [Int], _ p: Double) -> Int {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        let rank = Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1
        return sorted[min(max(rank, 0), sorted.count - 1)]
    }
}
