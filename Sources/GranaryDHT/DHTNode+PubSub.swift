import Foundation
import GranaryCore
import GranaryWire

/// A local subscription: the topics and who gets matching offers.
struct Subscription {
    let topics: Set<String>
    let handler: @Sendable (ContractOffer) -> Void
}

/// A pub/sub neighbour and the attenuated filter it last showed us.
struct PubSubNeighbour {
    var contact: DHTContact
    var filter: AttenuatedBloomFilter
    var lastHeard: ContinuousClock.Instant
    /// True for neighbours this node picked (it sends them filter requests);
    /// false for those that picked it.
    var chosenByUs: Bool
}

/// Cancels a subscription when asked.
public struct SubscriptionToken: Sendable, Hashable {
    let id: Int
}

/// Quasar-style pub/sub (Wong & Guha): each node shows each neighbour an
/// attenuated Bloom filter of depth 3 (level 0: its own topics, level i: its
/// other neighbours' level i-1) and routes a publication along the filters:
///  - a node routing freely (the publisher, a subscriber, a random-walk
///    step) sends to every neighbour that is itself a subscriber (level 0)
///    and to every neighbour at the shallowest deeper matching level;
///  - a node reached because a subscriber lies i hops beyond it follows
///    that gradient: level-0 neighbours plus those at the shallowest level
///    at most i-1;
///  - a node that finds no match sends to one random neighbour (a random
///    walk: until the hop limit when routing freely, three hops on from
///    the end of a broken gradient);
///  - a hop limit, the publication's list of nodes already covered on its
///    branch, and a seen-cache bound the traffic;
///  - a forwarder holds a publication a few tens of ms and skips the
///    neighbours that sent it a copy meanwhile: most traffic was copies
///    where subscribers' floods meet (100 nodes, 20 subscribers in three
///    placements: 4.4 to 5.4 datagrams per delivery before, 3.4 to 4.15
///    with a hold of up to 150 ms, 3.7 to 4.8 with up to 60 ms).
/// Filters are exchanged every `filterExchangeInterval`; those messages are
/// not counted as publication traffic.
extension DHTNode {
    /// Calls `handler` (on an arbitrary task) for each verified offer
    /// published on any of `topics`, once per offer.
    @discardableResult
    public func subscribe(topics: [String], handler: @escaping @Sendable (ContractOffer) -> Void) -> SubscriptionToken {
        nextSubscriptionID += 1
        subscriptions[nextSubscriptionID] = Subscription(topics: Set(topics), handler: handler)
        scheduleFilterPush()
        return SubscriptionToken(id: nextSubscriptionID)
    }

    public func unsubscribe(_ token: SubscriptionToken) {
        subscriptions[token.id] = nil
        scheduleFilterPush()
    }

    var ownTopics: Set<String> { subscriptions.values.reduce(into: Set<String>()) { $0.formUnion($1.topics) } }

    /// The filter shown to `neighbour`: built from everyone but it, so it
    /// never routes a publication back to where the information came from.
    func attenuatedFilter(for neighbour: Hash256) -> AttenuatedBloomFilter {
        var f = AttenuatedBloomFilter()
        for t in ownTopics { f.levels[0].insert(t) }
        for (nid, n) in neighbours where nid != neighbour {
            for level in 1..<AttenuatedBloomFilter.depth { f.levels[level].formUnion(n.filter.levels[level - 1]) }
        }
        return f
    }

    func noteNeighbourFilter(_ c: DHTContact, _ filter: AttenuatedBloomFilter, chosenByUs: Bool) {
        let previous = neighbours[c.id]
        neighbours[c.id] = PubSubNeighbour(contact: c, filter: filter, lastHeard: .now,
                                           chosenByUs: (previous?.chosenByUs ?? false) || chosenByUs)
        // What we show others depends on this filter's first two levels:
        // when they changed, push our filters soon instead of at the next tick.
        if previous?.filter.levels.prefix(2) != filter.levels.prefix(2) { scheduleFilterPush() }
        if previous?.filter != filter { counters.update { $0.filterChanges += 1 } }
    }

    /// Pushes filters to every neighbour shortly (coalescing bursts of changes),
    /// so a subscription reaches nodes three hops away within a few round trips.
    func scheduleFilterPush() {
        guard !filterPushScheduled, !stopped else { return }
        filterPushScheduled = true
        Task {
            try? await Task.sleep(for: .milliseconds(50))
            self.filterPushScheduled = false
            await self.exchangeFilters(includingTheirChoices: true)
        }
    }

    /// Keeps `pubsubDegree` chosen neighbours (random contacts of the
    /// routing table), forgets silent ones, and swaps filters with the chosen.
    func exchangeFilters(includingTheirChoices: Bool = false) async {
        guard !stopped else { return }
        // A neighbour silent for four exchanges is dropped (ours are then
        // replaced below); one missed reply is not enough, since dropping
        // a neighbour loses the routes its filter showed.
        let silence = configuration.filterExchangeInterval * 4
        let now = ContinuousClock.now
        neighbours = neighbours.filter { now - $0.value.lastHeard < silence }
        var chosen = neighbours.values.filter(\.chosenByUs).map(\.contact)
        // Only the periodic exchange (not a push after a change) widens.
        let wanted = includingTheirChoices ? configuration.pubsubDegree : neighboursWanted(chosen: chosen.count)
        // A node that widened while it subscribed goes back to the usual
        // degree once it has no topics: extra neighbours only add copies.
        if !includingTheirChoices, ownTopics.isEmpty, chosen.count > wanted {
            for c in chosen.dropFirst(wanted) { neighbours[c.id] = nil }
            chosen = Array(chosen.prefix(wanted))
        }
        if chosen.count < wanted {
            let pool = table.allContacts.filter { c in !chosen.contains { $0.id == c.id } }.shuffled()
            for c in pool.prefix(wanted - chosen.count) {
                chosen.append(c)
                if neighbours[c.id] == nil {
                    neighbours[c.id] = PubSubNeighbour(contact: c, filter: AttenuatedBloomFilter(), lastHeard: now, chosenByUs: true)
                } else {
                    neighbours[c.id]?.chosenByUs = true
                }
            }
        }
        let targets = includingTheirChoices ? neighbours.values.map(\.contact) : chosen
        await withTaskGroup(of: Void.self) { group in
            for c in targets {
                var m = Granary_DhtFilterExchange()
                m.levels = attenuatedFilter(for: c.id).levels.map { Data($0.bytes) }
                group.addTask {
                    let reply = await self.request(c, .filterRequest(m))
                    await self.finishFilterExchange(with: c, reply: reply)
                }
            }
        }
    }

    /// How many neighbours to choose. A subscriber with no other subscriber
    /// of its topics within two hops is reached only by a path that found
    /// nothing closer, so most publications pass it by (measured in 100-node
    /// networks: such subscribers got 1 to 4 offers of 10, and were the whole
    /// shortfall whenever delivery fell below 95%). It adds `pubsubDegree`
    /// more random neighbours per periodic exchange, up to three times the
    /// degree, until one of their filters shows a subscriber at level 0 or 1.
    /// Not judged on the pushes that follow a change: the filters have not
    /// spread yet.
    func neighboursWanted(chosen: Int) -> Int {
        let degree = configuration.pubsubDegree
        let topics = Array(ownTopics)
        guard !topics.isEmpty else { return degree }
        let nearby = neighbours.values.contains { ($0.filter.matchLevel(topics) ?? .max) <= 1 }
        return nearby ? max(degree, chosen) : min(max(degree, chosen) + degree, 3 * degree)
    }

    func finishFilterExchange(with c: DHTContact, reply: Granary_DhtDatagram?) {
        guard let reply else { return }  // no answer this time: kept until silent too long
        guard case let .filterReply(m) = reply.message,
              let filter = AttenuatedBloomFilter(levels: m.levels.map { [UInt8]($0) }) else {
            neighbours[c.id] = nil  // malformed: pick another next time
            return
        }
        noteNeighbourFilter(c, filter, chosenByUs: false)
    }

    /// Publishes a signed offer on its topics. Returns the PUBLISH datagrams
    /// this node sent for it.
    ///
    /// `widening` more copies go to random routing-table contacts that are
    /// not pub/sub neighbours, each routing on from there as a publisher
    /// would. The market asks for them after a round that drew too few
    /// bids: PUBLISH datagrams are not acknowledged, and on a lossy network
    /// (measured: 10% loss each way on every host, 8 farmers) the lost
    /// filter exchanges and publications left one or two subscribers
    /// without any offer for minutes while the rest got every one.
    @discardableResult
    public func publish(_ offer: ContractOffer, widening: Int = 0) -> Int {
        let pubID = Blake2b.hash256([UInt8](offer.envelope.body))
        rememberPublication(pubID)
        deliverLocally(offer)
        var sent = route(offer, hopsLeft: configuration.publishHopLimit, budget: -1, covered: [], from: nil)
        guard widening > 0 else { return sent }
        let others = table.allContacts.filter { neighbours[$0.id] == nil && $0.id != offer.renterID }.shuffled().prefix(widening)
        for c in others {
            sendPublish(offer, to: c, hopsLeft: max(1, configuration.publishHopLimit - 1), budget: -1,
                        covered: [Self.prefix64(id), Self.prefix64(c.id)], walking: true)
            sent += 1
        }
        return sent
    }

    /// Publications seen recently (bounded: the oldest are forgotten first).
    func rememberPublication(_ pubID: Hash256) {
        seenPublications[pubID] = .now
        if seenPublications.count > 10_000 {
            let cutoff = ContinuousClock.now - .seconds(600)
            seenPublications = seenPublications.filter { $0.value > cutoff }
            if seenPublications.count > 10_000 { seenPublications.removeAll() }
        }
    }

    @discardableResult
    func deliverLocally(_ offer: ContractOffer) -> Bool {
        let matching = subscriptions.values.filter { !$0.topics.isDisjoint(with: offer.topics) }
        guard !matching.isEmpty else { return false }
        counters.update { $0.offersDelivered += 1 }
        for s in matching { s.handler(offer) }
        return true
    }

    func handlePublish(_ m: Granary_DhtPublish, from sender: DHTContact) {
        let offer: ContractOffer
        do { offer = try ContractOffer(verifying: m.offer, difficulty: configuration.difficulty) } catch {
            return drop(error, from: sender)
        }
        let pubID = Blake2b.hash256([UInt8](m.offer.body))
        if seenPublications[pubID] != nil {
            counters.update { $0.duplicatePublications += 1 }
            heldPublications[pubID]?.insert(sender.id)
            return
        }
        rememberPublication(pubID)
        guard offer.expiresAt > Date() else { return }
        let subscribed = deliverLocally(offer)
        let hops = Int(min(m.hopsLeft, UInt32(configuration.publishHopLimit)))
        let budget = subscribed ? -1 : Int(m.levelBudget)
        let covered = Array(m.covered.prefix(128))
        let maxDelay = configuration.publishForwardDelay
        guard maxDelay > .zero else {
            route(offer, hopsLeft: hops, budget: budget, covered: covered, from: sender.id)
            return
        }
        heldPublications[pubID] = []
        let delay = maxDelay * Double.random(in: 0...1)
        Task {
            try? await Task.sleep(for: delay)
            self.forwardHeld(pubID, offer, hopsLeft: hops, budget: budget, covered: covered, from: sender.id)
        }
    }

    private func forwardHeld(_ pubID: Hash256, _ offer: ContractOffer, hopsLeft: Int, budget: Int, covered: [UInt64], from: Hash256) {
        guard let holders = heldPublications.removeValue(forKey: pubID), !stopped else { return }
        route(offer, hopsLeft: hopsLeft, budget: budget, covered: covered, from: from, alsoHeldBy: holders)
    }

    /// Hops a publication walks on from the end of a broken gradient.
    static let deadEndWalkHops = 3

    static func prefix64(_ id: Hash256) -> UInt64 {
        id.bytes.prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// Sends the publication on according to the rules above.
    @discardableResult
    func route(_ offer: ContractOffer, hopsLeft: Int, budget: Int, covered: [UInt64], from: Hash256?,
               alsoHeldBy holders: Set<Hash256> = []) -> Int {
        guard hopsLeft > 0 else { return 0 }
        let coveredSet = Set(covered)
        let candidates = neighbours.values.filter {
            $0.contact.id != from && $0.contact.id != offer.renterID && !coveredSet.contains(Self.prefix64($0.contact.id))
        }
        guard !candidates.isEmpty else { return 0 }
        let levels = candidates.map { ($0.contact, $0.filter.matchLevel(offer.topics)) }
        var selected: [(DHTContact, Int?)] = levels.filter { $0.1 == 0 }
        let deeper = levels.filter { ($0.1 ?? 0) > 0 }
        if budget < 0 {
            if let m = deeper.map({ $0.1! }).min() { selected += deeper.filter { $0.1 == m } }
        } else if budget >= 1 {
            let usable = deeper.filter { $0.1! <= budget }
            if let m = usable.map({ $0.1! }).min() { selected += usable.filter { $0.1 == m } }
        }
        // Those that sent us a copy while we held it have it: the route
        // through them is taken, so no walk either.
        let matched = !selected.isEmpty
        selected.removeAll { holders.contains($0.0.id) }
        if matched && selected.isEmpty { return 0 }
        // A gradient that ends here (a Bloom false positive, or a filter not
        // yet updated after a subscriber left or a neighbour changed) goes on
        // as a short random walk instead of dying: dropping it was the whole
        // shortfall when 100-node delivery fell to 90% on a loaded machine.
        // Short, since a fresh gradient is usually a hop or two away: walks
        // to the hop limit from every dead end took the 100-node test to
        // 4.97 datagrams per delivery (limit 5); three hops, 4.1 to 4.4.
        var hops = hopsLeft - 1
        if selected.isEmpty {
            selected = [(candidates.randomElement()!.contact, nil)]
            if budget >= 0 { hops = min(hops, Self.deadEndWalkHops) }
        }
        var newCovered = covered
        newCovered.append(Self.prefix64(id))
        for h in holders { newCovered.append(Self.prefix64(h)) }
        for (c, _) in selected { newCovered.append(Self.prefix64(c.id)) }
        if newCovered.count > 128 { newCovered.removeFirst(newCovered.count - 128) }
        for (c, level) in selected {
            sendPublish(offer, to: c, hopsLeft: hops, budget: level.map { max(0, $0 - 1) } ?? -1,
                        covered: newCovered, walking: level == nil)
        }
        return selected.count
    }

    /// One PUBLISH datagram; `walking` counts it as a random-walk copy
    /// rather than one that follows a filter gradient.
    private func sendPublish(_ offer: ContractOffer, to c: DHTContact, hopsLeft: Int, budget: Int,
                             covered: [UInt64], walking: Bool) {
        var p = Granary_DhtPublish()
        p.offer = offer.envelope
        p.hopsLeft = UInt32(hopsLeft)
        p.levelBudget = Int32(budget)
        p.covered = covered
        counters.update { $0.publishSent += 1; if walking { $0.publishWalkSent += 1 } }
        send(makeDatagram(request: 0, .publish(p)), to: c.address)
    }
}
