import Foundation
import GranaryCore
import Logging

/// The renter's side of the market: publish a signed offer, collect the
/// bids that arrive within a bounded window, and rank them by price and by
/// what the renter knows of each farmer. Never first-come-first-served: a
/// bid arriving last in the window ranks as well as one arriving first.
/// Contract signing happens afterwards over the farmer's TCP transfer
/// protocol, using the bid's farmer key and transfer address.
public struct ContractMarket: Sendable {
    public let node: DHTNode
    /// The renter's trust in a farmer, 0...1 (e.g. its reputation score);
    /// unknown farmers should get a neutral value such as 0.5.
    public let reputation: @Sendable (Hash256) -> Double
    /// Bids kept per offer at most (the rest are dropped, not queued).
    public var maxBidsPerOffer = 256

    public init(node: DHTNode, reputation: @escaping @Sendable (Hash256) -> Double = { _ in 0.5 }) {
        self.node = node
        self.reputation = reputation
    }

    /// A signed offer from this node for `terms`, open for `validFor`.
    public func makeOffer(_ terms: OfferTerms, validFor: Duration = .seconds(60)) throws(DHTError) -> ContractOffer {
        try ContractOffer(terms: terms, renter: node.identity, contact: node.contact,
                          expiresAt: Date().addingTimeInterval(Double(validFor.components.seconds) + 1))
    }

    /// Publishes `offer`, collects bids for `window`, and returns the
    /// acceptable ones (price within the offer, enough free capacity, one
    /// per farmer: its lowest price) ranked best first by `rank`.
    /// `widening`: see `DHTNode.publish`.
    public func requestBids(_ offer: ContractOffer, window: Duration, widening: Int = 0) async -> [Bid] {
        let box = BidBox(limit: maxBidsPerOffer)
        await node.openBidCollection(offerID: offer.offerID) { bid in box.add(bid) }
        await node.publish(offer, widening: widening)
        try? await Task.sleep(for: window)
        await node.closeBidCollection(offerID: offer.offerID)
        let acceptable = box.bids.filter {
            $0.offerID == offer.offerID && $0.pricePerAudit <= offer.terms.maxPricePerAudit
                && $0.freeCapacityBytes >= offer.terms.allowanceBytes && $0.farmerID != offer.renterID
        }
        var cheapest: [Hash256: Bid] = [:]
        for b in acceptable where cheapest[b.farmerID].map({ b.pricePerAudit < $0.pricePerAudit }) ?? true {
            cheapest[b.farmerID] = b
        }
        return Self.rank(Array(cheapest.values), maxPrice: offer.terms.maxPricePerAudit, reputation: reputation)
    }

    /// Convenience: makes an offer for `terms`, valid for the window, and collects bids.
    public func requestBids(_ terms: OfferTerms, window: Duration, widening: Int = 0) async throws(DHTError) -> [Bid] {
        await requestBids(try makeOffer(terms, validFor: window + .seconds(5)), window: window, widening: widening)
    }

    /// Ranks bids best first by score = reputation − price / maxPrice
    /// (both in 0...1): a trusted farmer may ask more than an unknown one,
    /// but not unboundedly. Ties go to the lower price, then the lower ID
    /// (deterministic).
    public static func rank(_ bids: [Bid], maxPrice: UInt64, reputation: (Hash256) -> Double) -> [Bid] {
        let scale = Double(max(1, maxPrice))
        func score(_ b: Bid) -> Double {
            min(1, max(0, reputation(b.farmerID))) - Double(b.pricePerAudit) / scale
        }
        return bids.sorted { a, b in
            let sa = score(a), sb = score(b)
            if sa != sb { return sa > sb }
            if a.pricePerAudit != b.pricePerAudit { return a.pricePerAudit < b.pricePerAudit }
            return a.farmerID < b.farmerID
        }
    }
}

/// Bids gathered during a collection window. The collector closure runs on
/// the node's actor while the market reads after the window: a lock.
final class BidBox: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [Bid] = []
    private let limit: Int

    init(limit: Int) { self.limit = limit }

    func add(_ bid: Bid) {
        lock.lock()
        if stored.count < limit { stored.append(bid) }
        lock.unlock()
    }

    var bids: [Bid] { lock.lock(); defer { lock.unlock() }; return stored }
}

/// What a farmer accepts, as plain values.
public struct BidPolicy: Sendable, Equatable {
    /// Lowest price per audit the farmer works for; it bids exactly this.
    public var minPricePerAudit: UInt64
    /// Space offered, bytes.
    public var capacityBytes: UInt64
    /// Longest contract accepted, seconds.
    public var maxDurationSeconds: UInt64

    public init(minPricePerAudit: UInt64, capacityBytes: UInt64, maxDurationSeconds: UInt64) {
        self.minPricePerAudit = minPricePerAudit
        self.capacityBytes = capacityBytes
        self.maxDurationSeconds = maxDurationSeconds
    }

    /// The pub/sub topics whose offers this policy may accept.
    public var topics: [String] {
        OfferTopics.topics(capacityBytes: capacityBytes, maxDurationSeconds: maxDurationSeconds, minPricePerAudit: minPricePerAudit)
    }

    /// Whether an offer's terms suit the policy with `freeBytes` available.
    public func accepts(_ terms: OfferTerms, freeBytes: UInt64) -> Bool {
        terms.maxPricePerAudit >= minPricePerAudit && terms.allowanceBytes <= min(freeBytes, capacityBytes)
            && terms.durationSeconds <= maxDurationSeconds
    }
}

/// The farmer's side of the market: subscribes to the topics its policy
/// accepts and answers each suitable, unexpired offer directly to the
/// renter with a signed bid carrying the farmer's TCP transfer address.
public actor BidAgent {
    public let node: DHTNode
    public let policy: BidPolicy
    public let transferHost: String
    public let transferPort: Int
    private let freeBytes: @Sendable () -> UInt64
    private var token: SubscriptionToken?
    private let logger = Logger(label: "granary.dht.market")
    /// Bids the renters acknowledged.
    public private(set) var bidsAccepted = 0
    /// Offers seen (matching the topics), whether or not they were bid on.
    public private(set) var offersSeen = 0

    /// `freeBytes` reports the space currently free (defaults to the policy's capacity).
    public init(node: DHTNode, policy: BidPolicy, transferHost: String, transferPort: Int,
                freeBytes: (@Sendable () -> UInt64)? = nil) {
        self.node = node
        self.policy = policy
        self.transferHost = transferHost
        self.transferPort = transferPort
        let capacity = policy.capacityBytes
        self.freeBytes = freeBytes ?? { capacity }
    }

    public func start() async {
        guard token == nil else { return }
        token = await node.subscribe(topics: policy.topics) { [weak self] offer in
            guard let self else { return }
            Task { await self.consider(offer) }
        }
    }

    public func stop() async {
        if let token { await node.unsubscribe(token) }
        token = nil
    }

    func consider(_ offer: ContractOffer) async {
        offersSeen += 1
        let free = freeBytes()
        guard offer.expiresAt > Date(), policy.accepts(offer.terms, freeBytes: free), offer.renterID != node.id else {
            logger.debug("offer \(offer.offerID.short) from \(offer.renter): not bidding (expired, own, or outside the policy)")
            return
        }
        do {
            let contact = node.contact
            let bid = try Bid(offerID: offer.offerID, farmer: node.identity, contact: contact,
                              transferHost: transferHost, transferPort: transferPort,
                              pricePerAudit: policy.minPricePerAudit, freeCapacityBytes: free)
            let acknowledged = await node.sendBid(bid, to: offer.renter)
            if acknowledged { bidsAccepted += 1 }
            logger.debug("offer \(offer.offerID.short) from \(offer.renter): bid \(acknowledged ? "acknowledged" : "not acknowledged")")
        } catch {
            logger.warning("cannot bid on offer \(offer.offerID.short): \(error)")
        }
    }
}
