import Foundation
import GranaryCore
import GranaryWire

extension DHTNode {
    enum LookupMode {
        /// Find the k closest nodes to the target.
        case closest
        /// Stop as soon as the node with the target ID is found.
        case node
        /// FIND_VALUE for a record of `owner` under `key` (target = storage key).
        case value(owner: Hash256, key: [UInt8])
    }

    struct LookupOutcome {
        var closest: [DHTContact] = []
        var found: DHTContact?
        var record: SignedRecord?
        var statistics = LookupStatistics()
    }

    /// Kademlia's iterative lookup. Each round queries the α closest
    /// contacts not yet asked; when a round brings nothing closer, the next
    /// round asks every remaining one of the k closest at once. Ends when the
    /// k closest have all answered (or failed), or when the node or record
    /// sought has been found (with `askEveryHolder`, a record search goes
    /// on to the k closest, keeping the highest sequence: a holder that
    /// missed an update must not decide the answer).
    func lookup(target: Hash256, mode: LookupMode, maxRounds: Int = .max, askEveryHolder: Bool = false) async -> LookupOutcome {
        var outcome = LookupOutcome()
        var shortlist: [Hash256: DHTContact] = [:]
        for c in table.closest(to: target, count: configuration.k) { shortlist[c.id] = c }
        var queried: Set<Hash256> = [id]
        // A stopped farmer cost every lookup a timeout per round (a 12 s
        // unmount with two of ten dead): known-dead nodes are not asked.
        var failed = contactsKnownDead
        var best = shortlist.keys.map { $0 ^ target }.min()
        var widen = false

        func candidates() -> [DHTContact] {
            shortlist.values.filter { !failed.contains($0.id) }
                .sorted { ($0.id ^ target) < ($1.id ^ target) }
                .prefix(configuration.k).filter { !queried.contains($0.id) }
        }

        while !stopped && outcome.statistics.rounds < maxRounds {
            let pending = candidates()
            if pending.isEmpty { break }
            var wave = widen ? pending : Array(pending.prefix(configuration.alpha))
            // Looking for a node we already know: ask it alone first; if it
            // answers the lookup is over in one message.
            if case .node = mode, let known = pending.first(where: { $0.id == target }) { wave = [known] }
            for c in wave { queried.insert(c.id) }
            outcome.statistics.rounds += 1
            outcome.statistics.messages += wave.count
            let message: Granary_DhtDatagram.OneOf_Message
            switch mode {
            case .closest, .node:
                var m = Granary_DhtFindNode(); m.target = Data(target.bytes); message = .findNode(m)
            case .value:
                var m = Granary_DhtFindValue(); m.storageKey = Data(target.bytes); message = .findValue(m)
            }
            let replies = await withTaskGroup(of: (DHTContact, Granary_DhtDatagram?).self) { group in
                for c in wave { group.addTask { (c, await self.request(c, message)) } }
                var out: [(DHTContact, Granary_DhtDatagram?)] = []
                for await r in group { out.append(r) }
                return out
            }
            var roundBest = best
            for (asked, reply) in replies {
                guard let reply else { failed.insert(asked.id); continue }
                if case .node = mode, asked.id == target { outcome.found = asked }
                var protos: [Granary_DhtContact] = []
                switch reply.message {
                case let .nodes(n): protos = n.contacts
                case let .value(v):
                    protos = v.contacts
                    if case let .value(owner, key) = mode, v.hasRecord {
                        do {
                            let r = try SignedRecord(verifying: v.record, difficulty: configuration.difficulty)
                            if r.ownerID == owner, r.key == key, r.sequence >= (outcome.record?.sequence ?? 0) { outcome.record = r }
                        } catch {
                            drop(error, from: asked)
                        }
                    }
                default: continue
                }
                for p in protos.prefix(configuration.k) {
                    guard let c = try? DHTContact(p, difficulty: configuration.difficulty), c.id != id else { continue }
                    if shortlist[c.id] == nil { shortlist[c.id] = c }
                    if case .node = mode, c.id == target, outcome.found == nil { outcome.found = c }
                    let d = c.id ^ target
                    if roundBest == nil || d < roundBest! { roundBest = d }
                }
            }
            if case .node = mode, outcome.found != nil { break }
            if case .value = mode, outcome.record != nil, !askEveryHolder { break }
            widen = !(roundBest != nil && (best == nil || roundBest! < best!))
            best = roundBest
        }
        outcome.closest = shortlist.values.filter { !failed.contains($0.id) && queried.contains($0.id) }
            .sorted { ($0.id ^ target) < ($1.id ^ target) }
            .prefix(configuration.k).map { $0 }
        if let bucketTarget = Optional(table.bucketIndex(for: target)), target != id { table.touch(bucket: bucketTarget) }
        return outcome
    }

    /// Finds the node with ID `target` by iterative lookup; the statistics
    /// say how many rounds and queries it took.
    public func findNode(_ target: Hash256) async -> (contact: DHTContact?, statistics: LookupStatistics) {
        let o = await lookup(target: target, mode: .node)
        return (o.found, o.statistics)
    }

    /// The contact of node `target` (from the table, else by lookup).
    public func findContact(_ target: Hash256) async -> DHTContact? {
        if target == id { return contact }
        return await findNode(target).contact
    }

    /// The k live nodes closest to `target`, by iterative lookup.
    public func closestNodes(to target: Hash256) async -> [DHTContact] {
        await lookup(target: target, mode: .closest).closest
    }

    /// A refresh only needs a few contacts in the bucket, not the k closest
    /// to a random point: two rounds of α queries find them.
    static let refreshRounds = 2

    /// Looks up a random ID in every bucket that saw no traffic for the
    /// refresh interval.
    func refreshBuckets() async {
        for b in table.bucketsNeedingRefresh(olderThan: configuration.refreshInterval) {
            guard !stopped else { return }
            table.touch(bucket: b)
            _ = await lookup(target: table.randomID(inBucket: b), mode: .closest, maxRounds: Self.refreshRounds)
        }
    }
}
