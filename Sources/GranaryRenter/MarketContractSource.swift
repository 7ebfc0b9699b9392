import Foundation
import GranaryContracts
import GranaryCore
import GranaryDHT
import Logging
import Synchronization

/// Contracts from the DHT market: publish a signed offer, collect bids for
/// a bounded window (ranked by price and by the renter's reputation of each
/// farmer), then propose a contract to the best bidders over TCP and keep
/// those they countersign.
public final class MarketContractSource: ContractSource {
    public let node: DHTNode
    let link: TransferFarmerLink
    let identity: NodeIdentity
    let window: Duration
    let reputation: @Sendable (Hash256) -> Double
    private let log = Logger(label: "granary.renter")
    /// Consecutive market rounds that drew fewer bids than contracts wanted.
    private let shortRounds = Mutex(0)
    static let wideningContacts = 16

    public init(node: DHTNode, link: TransferFarmerLink, identity: NodeIdentity, window: Duration = .seconds(2),
                reputation: @escaping @Sendable (Hash256) -> Double = { _ in 0.5 }) {
        self.node = node; self.link = link; self.identity = identity; self.window = window; self.reputation = reputation
    }

    public func formContracts(count: Int, terms: ContractTerms, excluding: Set<Hash256>) async throws -> [ContractRecord] {
        guard count > 0 else { return [] }
        let market = ContractMarket(node: node, reputation: reputation)
        // Ask for the minimum so farmers with less free space than the
        // allowance bid too; each contract then gets what its farmer has.
        let offer = OfferTerms(allowanceBytes: UInt64(terms.minimumAllowance), durationSeconds: UInt64(terms.duration),
                               maxPricePerAudit: terms.maxPricePerAudit, auditIntervalSeconds: UInt64(max(1, terms.auditInterval)))
        // After a round that drew too few bids, the offer also goes to
        // random nodes beyond the pub/sub neighbours (see DHTNode.publish),
        // and bids are awaited longer: two and then four times the window.
        // With 0.5 s added to every hop, an offer and its bid took longer
        // than 2 s to cross the network, and rounds drew 4 of 8 farmers.
        let short = shortRounds.withLock { $0 }
        let widening = short > 0 ? Self.wideningContacts : 0
        let roundWindow = window * (1 << min(short, 2))
        let bids = try await market.requestBids(offer, window: roundWindow, widening: widening).filter { !excluding.contains($0.farmerID) }
        shortRounds.withLock { $0 = bids.count < count ? $0 + 1 : 0 }
        log.info("market: \(bids.count) acceptable bids for \(count) contracts\(widening > 0 ? " in \(roundWindow) (offer also sent to \(widening) random nodes)" : "")")
        let chosen = Array(bids.prefix(count + 2))  // a couple extra: some may refuse to sign
        let now = UInt64(Date().timeIntervalSince1970)
        let identity = self.identity
        let link = self.link
        let formed = await withTaskGroup(of: ContractRecord?.self) { group in
            for bid in chosen {
                group.addTask {
                    let farmer = FarmerContact(id: bid.farmerID, publicKey: bid.farmerKey.bytes,
                                               address: "\(bid.transferHost):\(bid.transferPort)")
                    let contract = terms.sized(toFree: bid.freeCapacityBytes).proposal(renter: identity.id, farmer: bid.farmerID, pricePerAudit: bid.pricePerAudit, now: now)
                    do {
                        return try await withDeadline(15) { try await link.propose(contract, farmer: farmer) }
                    } catch {
                        Logger(label: "granary.renter").info("farmer \(farmer) did not sign: \(error)")
                        return nil
                    }
                }
            }
            var out: [ContractRecord] = []
            for await c in group { if let c { out.append(c) } }
            return out
        }
        return Array(formed.prefix(count))
    }

    public func shutdown() async { await node.stop() }
}

extension RenterEngine {
    /// The engine's DHT node when its contracts come from the market.
    public var dhtNode: DHTNode? { (source as? MarketContractSource)?.node }

    /// Starts a renter on a real network: its DHT node (joined through
    /// `bootstrap`, HOST:PORT of any node such as a seed), the transfer
    /// link, network.db under `stateDirectory`, and a contract pool filled
    /// through the market before returning. `joined` runs once the DHT node
    /// has joined, before network.db is opened or any contract is sought
    /// (the mount takes its lease there); when it throws, nothing else starts.
    ///
    /// With a nil `contractTimeout` it returns without waiting for
    /// contracts, which form in the background. When no bootstrap node
    /// answers at start, joining (and `joined`) is retried in the background
    /// too, and segment storage refuses uploads and deletes until it
    /// succeeded: a mount then works from its cache while the network is
    /// unreachable.
    public static func start(stateDirectory: String, identity: NodeIdentity, bootstrap: [String],
                             configuration: RenterConfiguration = RenterConfiguration(),
                             clock: RenterClock = SystemClock(), random: RandomSource = SystemRandomSource(),
                             contractTimeout: Double? = 60,
                             joined: @escaping @Sendable (DHTNode) async throws -> Void = { _ in }) async throws -> RenterEngine {
        let seeds = try bootstrap.map { text -> DHTAddress in
            guard let a = DHTAddress(text) else { throw SegmentStoreError.unavailable("bootstrap address \(text) is not HOST:PORT") }
            return a
        }
        let loopback = seeds.allSatisfy { $0.host == "127.0.0.1" || $0.host == "localhost" || $0.host == "::1" }
        var dht = DHTConfiguration()
        dht.difficulty = configuration.difficulty
        if loopback { dht.filterExchangeInterval = .seconds(1) }
        let listen = try configuration.dhtListen.map { text -> DHTAddress in
            guard let a = DHTAddress(text) else { throw SegmentStoreError.unavailable("DHT listen address \(text) is not HOST:PORT") }
            return a
        } ?? DHTAddress(host: loopback ? "127.0.0.1" : "0.0.0.0", port: 0)
        let advertise = try configuration.dhtAdvertise.map { text -> DHTAddress in
            guard let a = DHTAddress(text) else { throw SegmentStoreError.unavailable("DHT advertise address \(text) is not HOST:PORT") }
            return a
        }
        let node: DHTNode
        var join: (@Sendable () async throws -> Void)?
        if contractTimeout == nil {
            let transport = try await UDPTransport.bind(host: listen.host, port: listen.port)
            do {
                node = try DHTNode(identity: identity, transport: transport, advertise: advertise,
                                   seeds: seeds, configuration: dht, statePath: stateDirectory + "/dht")
            } catch {
                await transport.close()
                throw error
            }
            await node.start()
            // One try now; when nothing answers, the engine's connector
            // retries in the background (the mount comes up meanwhile).
            var reachable = true
            do { try await node.bootstrap(seeds) } catch {
                reachable = false
                Logger(label: "granary.renter").notice("the network is not reachable yet (\(error)); joining in the background")
                join = { try await node.bootstrap(seeds); try await joined(node) }
            }
            if reachable {
                do { try await joined(node) } catch {
                    await node.stop()
                    throw error
                }
            }
        } else {
            node = try await DHTNode.start(identity: identity, listen: listen, advertise: advertise,
                                           bootstrap: seeds, statePath: stateDirectory + "/dht", configuration: dht)
            do { try await joined(node) } catch {
                await node.stop()
                throw error
            }
        }
        let link = TransferFarmerLink(identity: identity, difficulty: configuration.difficulty,
                                      transferStallTimeout: .seconds(configuration.transferTimeoutBase))
        let bookBox = ReputationLookup()
        let source = MarketContractSource(node: node, link: link, identity: identity,
                                          window: .milliseconds(Int64(configuration.bidWindow * 1000)),
                                          reputation: { bookBox.score($0) })
        let engine: RenterEngine
        do {
            engine = try RenterEngine(stateDirectory: stateDirectory, link: link, contracts: source,
                                      configuration: configuration, clock: clock, random: random)
        } catch {
            await node.stop()
            throw error
        }
        bookBox.set(engine.farmers)
        let resolver = FarmerAddressResolver(node: node)
        let book = engine.farmers
        await link.findMovedFarmers(resolve: { await resolver.currentAddress(of: $0) },
                                    changed: { contact in
                                        do { try book.add(contact) } catch {
                                            Logger(label: "granary.renter").warning("cannot record farmer \(contact)'s new address: \(error)")
                                        }
                                    })
        do {
            try await engine.start(contractTimeout: contractTimeout, join: join)
        } catch {
            await engine.stop()
            throw error
        }
        return engine
    }
}

/// Lets the market rank bids by the renter's reputation of each farmer,
/// though the book is created after the market. Set once.
final class ReputationLookup: @unchecked Sendable {
    // A lock: written once at start, read from the market's tasks.
    private let lock = NSLock()
    private var book: FarmerBook?
    func set(_ b: FarmerBook) { lock.lock(); book = b; lock.unlock() }
    func score(_ id: Hash256) -> Double {
        lock.lock(); let b = book; lock.unlock()
        guard let f = b?.farmer(id) else { return 0.5 }
        return f.disqualified ? 0 : f.reputation.auditScore * f.reputation.uptimeScore
    }
}
