import Foundation
import GranaryCore
import GranaryWire
import Logging

/// A Kademlia node over UDP (or the in-memory simulation transport): the
/// routing table, RPCs, signed records, pub/sub of contract offers and bid
/// delivery. Every `granary` process that talks to the network embeds one.
///
/// Typical use:
/// ```swift
/// let node = try await DHTNode.start(identity: id, listen: DHTAddress("0.0.0.0:0")!,
///                                    bootstrap: [DHTAddress("seed.example:7400")!], statePath: dir)
/// try await node.putRecord(key: Array("contact".utf8), value: v, sequence: 1, ttl: .seconds(86400))
/// let rec = await node.getRecord(owner: other, key: Array("contact".utf8))
/// await node.stop()
/// ```
public actor DHTNode {
    public nonisolated let identity: NodeIdentity
    public nonisolated let configuration: DHTConfiguration
    /// How others reach this node (the advertised address).
    public nonisolated let contact: DHTContact
    public nonisolated var id: Hash256 { identity.id }
    public nonisolated var localAddress: DHTAddress { transport.localAddress }

    nonisolated let transport: any DHTTransport
    nonisolated let counters = TrafficCounters()
    nonisolated let replayGuard: ReplayGuard
    nonisolated let logger: Logger

    var table: RoutingTable
    let store: RoutingTableStore?
    var pending: [UInt64: PendingRequest] = [:]
    var evictionsInFlight: Set<Int> = []
    var tableDirty = false
    var loops: [Task<Void, Never>] = []
    var stopped = false
    var started = false

    // Records this node holds for others, by storage key (also on disk
    // when the node has a state path), and when each last arrived: a
    // record stored here within the republish interval was just
    // republished by someone else, so this node skips it (Kademlia).
    var records: [Hash256: SignedRecord] = [:]
    var recordArrived: [Hash256: ContinuousClock.Instant] = [:]
    // Records this node owns and republishes, by storage key.
    var ownRecords: [Hash256: SignedRecord] = [:]

    // Pub/sub state (see DHTNode+PubSub.swift).
    var subscriptions: [Int: Subscription] = [:]
    var nextSubscriptionID = 0
    var neighbours: [Hash256: PubSubNeighbour] = [:]
    var seenPublications: [Hash256: ContinuousClock.Instant] = [:]
    // Publications waiting out their forward delay, and the neighbours
    // that sent us a copy meanwhile (they have it: not sent to again).
    var heldPublications: [Hash256: Set<Hash256>] = [:]
    var filterPushScheduled = false
    // Contacts whose requests timed out since we last heard from them: how
    // many, and the last when. Other nodes keep naming a dead node in their
    // replies for a while; lookups skip one that failed twice (one lost
    // datagram is not enough) until it, or any node that failed twice, is
    // heard from again, or `failedContactMemory` passes, since each try
    // costs a request timeout.
    var recentlyFailed: [Hash256: (failures: Int, last: ContinuousClock.Instant)] = [:]
    static let failedContactMemory: Duration = .seconds(120)

    /// Failures noted before this are forgotten.
    var failureMemoryStart: ContinuousClock.Instant { .now - Self.failedContactMemory }

    /// Contacts lookups treat as failed from the start.
    var contactsKnownDead: Set<Hash256> {
        let start = failureMemoryStart
        return Set(recentlyFailed.filter { $0.value.failures >= 2 && $0.value.last > start }.keys)
    }

    // Bid collectors by offer ID (see DHTNode+Bids.swift).
    var bidCollectors: [Hash256: @Sendable (Bid) -> Void] = [:]

    struct PendingRequest {
        let expected: Hash256?
        let continuation: CheckedContinuation<(DHTContact, Granary_DhtDatagram)?, Never>
    }

    /// Creates a node on an already bound transport. Call `start()` next,
    /// then `bootstrap(_:)`. `statePath` is a directory for the routing
    /// table database (nil: nothing persisted). A node bound to a wildcard
    /// address without `advertise` advertises the local address that routes
    /// to the first of `seeds`: offers name it, and bids come back to it.
    public init(identity: NodeIdentity, transport: any DHTTransport, advertise: DHTAddress? = nil,
                seeds: [DHTAddress] = [],
                configuration: DHTConfiguration = DHTConfiguration(), statePath: String? = nil) throws(DHTError) {
        do { try identity.publicKey.validate(difficulty: configuration.difficulty) } catch { throw .identity(error) }
        self.identity = identity
        self.configuration = configuration
        self.transport = transport
        var address = advertise ?? transport.localAddress
        if advertise == nil, address.isUnspecified, let seed = seeds.first,
           let source = DHTAddress.localSource(toward: seed) {
            address.host = source
        }
        // Peers accept IP literals only: a name given to --listen or
        // --advertise is advertised as what it resolves to now.
        if !address.isUnspecified && !address.isUnicastLiteral {
            guard let numeric = DHTAddress.numericHost(for: address.host, sameFamilyAs: transport.localAddress.host),
                  DHTAddress(host: numeric, port: address.port).isUnicastLiteral else {
                throw .transport("cannot advertise \(address): it is not a unicast IP address and does not resolve to one")
            }
            address.host = numeric
        }
        self.contact = DHTContact(publicKey: identity.publicKey, address: address)
        self.replayGuard = ReplayGuard(windowMs: configuration.maxClockSkewSeconds * 1000)
        var logger = Logger(label: "granary.dht")
        logger[metadataKey: "node"] = "\(identity.id.short)"
        self.logger = logger
        self.table = RoutingTable(localID: identity.id, k: configuration.k)
        if let statePath {
            try? FileManager.default.createDirectory(atPath: statePath, withIntermediateDirectories: true)
            store = try RoutingTableStore(path: statePath + "/routing.db")
        } else {
            store = nil
        }
    }

    /// Binds UDP on `listen`, starts the node, and joins the network through
    /// the saved routing table (when `statePath` has one) and `bootstrap`.
    /// With neither, the node starts alone (the first seed of a network).
    public static func start(identity: NodeIdentity, listen: DHTAddress, advertise: DHTAddress? = nil,
                             bootstrap: [DHTAddress] = [], statePath: String? = nil,
                             configuration: DHTConfiguration = DHTConfiguration()) async throws -> DHTNode {
        let node = try await bindAndStart(identity: identity, listen: listen, advertise: advertise, seeds: bootstrap,
                                          statePath: statePath, configuration: configuration)
        do {
            try await node.bootstrap(bootstrap)
        } catch {
            await node.stop()
            throw error
        }
        return node
    }

    /// `start`, for a daemon (a farmer, a seed): when no bootstrap node
    /// answers, the node serves anyway and keeps trying in the background,
    /// with backoff up to `retryLimit`, instead of failing. A farmer whose
    /// seed is restarting, cut off or losing packets then joins when it can,
    /// and serves its contracts meanwhile. The join task ends with `stop`.
    public static func startServing(identity: NodeIdentity, listen: DHTAddress, advertise: DHTAddress? = nil,
                                    bootstrap: [DHTAddress], statePath: String? = nil,
                                    configuration: DHTConfiguration = DHTConfiguration(),
                                    retryLimit: Duration = .seconds(30)) async throws -> DHTNode {
        let node = try await bindAndStart(identity: identity, listen: listen, advertise: advertise, seeds: bootstrap,
                                          statePath: statePath, configuration: configuration)
        do { try await node.bootstrap(bootstrap) } catch {
            await node.keepJoining(bootstrap, firstError: error, retryLimit: retryLimit)
        }
        return node
    }

    /// A node on a new UDP socket, started (its saved table loaded), not joined.
    private static func bindAndStart(identity: NodeIdentity, listen: DHTAddress, advertise: DHTAddress?, seeds: [DHTAddress],
                                     statePath: String?, configuration: DHTConfiguration) async throws -> DHTNode {
        let transport = try await UDPTransport.bind(host: listen.host, port: listen.port)
        let node: DHTNode
        do {
            node = try DHTNode(identity: identity, transport: transport, advertise: advertise,
                               seeds: seeds, configuration: configuration, statePath: statePath)
        } catch {
            await transport.close()
            throw error
        }
        await node.start()
        return node
    }

    private func keepJoining(_ seeds: [DHTAddress], firstError: DHTError, retryLimit: Duration) {
        let first = Duration.milliseconds(500)
        logger.notice("cannot join the DHT yet: \(firstError); serving meanwhile and retrying in the background")
        loops.append(Task { [weak self] in
            var delay = first, attempts = 1
            while !Task.isCancelled {
                try? await Task.sleep(for: delay)
                guard let self, !Task.isCancelled else { return }
                attempts += 1
                do {
                    try await self.bootstrap(seeds)
                    self.logger.notice("joined the DHT after \(attempts) attempts")
                    return
                } catch {
                    delay = min(delay * 2, retryLimit)
                    // Every attempt at first, then one line in ten.
                    if attempts <= 5 || attempts % 10 == 0 {
                        self.logger.notice("cannot join the DHT yet (attempt \(attempts)): \(error); retrying in \(delay)")
                    }
                }
            }
        })
    }

    /// Installs the receiver and starts the periodic work (bucket refresh,
    /// republish, filter exchange, saving the table). Loads the saved table.
    public func start() {
        guard !started else { return }
        started = true
        if let store, let saved = try? store.load(difficulty: configuration.difficulty) {
            for c in saved where c.id != id { table.update(c) }
            if !saved.isEmpty { logger.info("loaded \(saved.count) contacts from \(store.path)") }
        }
        loadStoredRecords()
        transport.setReceiver { [weak self] bytes, from in self?.receive(bytes, from: from) }
        loops.append(periodic(configuration.refreshInterval / 4) { await $0.refreshBuckets() })
        loops.append(periodic(configuration.republishInterval) { await $0.republish() })
        loops.append(periodic(configuration.filterExchangeInterval) { await $0.exchangeFilters() })
        if store != nil { loops.append(periodic(configuration.saveInterval) { await $0.saveTableIfDirty() }) }
    }

    private func periodic(_ interval: Duration, _ body: @escaping @Sendable (DHTNode) async -> Void) -> Task<Void, Never> {
        Task { [weak self] in
            while !Task.isCancelled {
                // A little jitter keeps a thousand nodes from ticking together.
                let jitter = Duration.milliseconds(Int64.random(in: 0...max(1, interval.milliseconds / 5)))
                try? await Task.sleep(for: interval + jitter)
                guard let self, !Task.isCancelled else { return }
                await body(self)
            }
        }
    }

    /// Joins the network: pings each bootstrap address (and the saved
    /// contacts), then looks up its own ID and refreshes the far buckets.
    /// Throws when there were addresses to try and none answered.
    public func bootstrap(_ addresses: [DHTAddress]) async throws(DHTError) {
        let saved = table.allContacts
        if addresses.isEmpty && saved.isEmpty { return }
        var answered = 0
        await withTaskGroup(of: Bool.self) { group in
            for address in addresses {
                group.addTask { await self.ping(address: address, attempts: 3) != nil }
            }
            for c in saved { group.addTask { await self.ping(c) } }
            for await ok in group where ok { answered += 1 }
        }
        guard answered > 0 else {
            // Saved contacts alone may all be gone (a seed restarting first):
            // serve alone and let others find us. Named addresses must answer.
            if addresses.isEmpty {
                logger.warning("none of \(saved.count) saved contacts answered; serving alone until others join")
                return
            }
            throw .bootstrapFailed(addresses.map(\.description) + (saved.isEmpty ? [] : ["\(saved.count) saved contacts"]))
        }
        _ = await lookup(target: id, mode: .closest)
        // Fill the far buckets: one lookup per bucket above our closest neighbour.
        if let nearest = table.closest(to: id, count: 1).first {
            let deepest = table.bucketIndex(for: nearest.id)
            for b in 0..<min(deepest, 16) where table.bucketCount(b) < configuration.k {
                table.touch(bucket: b)
                _ = await lookup(target: table.randomID(inBucket: b), mode: .closest, maxRounds: Self.refreshRounds)
            }
        }
        tableDirty = true
        logger.debug("joined the DHT: \(table.count) contacts")
        // Pick pub/sub neighbours now rather than at the first tick, so
        // subscriptions spread as soon as the node is in the network.
        await exchangeFilters()
    }

    /// Stops serving: cancels periodic work, saves the routing table, closes
    /// the socket, and fails requests still waiting.
    public func stop() async {
        guard !stopped else { return }
        stopped = true
        for t in loops { t.cancel() }
        loops.removeAll()
        if let store { try? store.save(table.allContacts) }
        let waiting = pending
        pending.removeAll()
        for (_, p) in waiting { p.continuation.resume(returning: nil) }
        bidCollectors.removeAll()
        subscriptions.removeAll()
        await transport.close()
    }

    /// Counters of traffic and refused input.
    public nonisolated func statistics() -> DHTStatistics { counters.snapshot }

    /// The contacts in the routing table.
    public func knownContacts() -> [DHTContact] { table.allContacts }

    func saveTableIfDirty() {
        guard tableDirty, let store else { return }
        tableDirty = false
        do { try store.save(table.allContacts) } catch { logger.warning("cannot save routing table: \(error)") }
    }

    // MARK: receiving

    /// Runs on the transport's thread: bounds the size, verifies the
    /// envelope, the sender's ID against its key, the proof of work, the
    /// timestamp and the nonce; only then hops onto the actor.
    nonisolated func receive(_ bytes: [UInt8], from: DHTAddress) {
        counters.update { $0.datagramsReceived += 1 }
        do {
            let (sender, datagram) = try verifyDatagram(bytes, from: from)
            Task { await self.handle(datagram, from: sender, observed: from) }
        } catch {
            counters.update { $0.dropped[error.reason, default: 0] += 1 }
            logger.warning("dropped datagram from \(from): \(error)", metadata: ["reason": "\(error.reason)"])
        }
    }

    nonisolated func verifyDatagram(_ bytes: [UInt8], from: DHTAddress) throws(DHTError) -> (DHTContact, Granary_DhtDatagram) {
        guard bytes.count <= configuration.maxDatagramBytes else {
            throw .oversized(bytes: bytes.count, limit: configuration.maxDatagramBytes)
        }
        let envelope: Granary_SignedEnvelope
        do { envelope = try Granary_SignedEnvelope(serializedBytes: bytes) } catch {
            throw .malformed("not a signed envelope (truncated?)")
        }
        let signer: NodePublicKey, datagram: Granary_DhtDatagram
        do { (signer, datagram) = try envelope.open(Granary_DhtDatagram.self, kind: .datagram, difficulty: configuration.difficulty) } catch {
            throw .envelope(error)
        }
        guard datagram.hasSender, Hash256(bytes: datagram.sender.nodeID) == signer.id,
              datagram.sender.publicKey == envelope.publicKey else {
            throw .idDoesNotMatchKey
        }
        var sender = try DHTContact(datagram.sender, difficulty: configuration.difficulty)
        // A node bound to a wildcard address is reached where it came from.
        if sender.address.isUnspecified { sender.address.host = from.host }
        let now = Self.nowMs()
        let skewMs = Int64(bitPattern: datagram.timestampMs &- now)
        guard abs(skewMs) <= Int64(configuration.maxClockSkewSeconds * 1000) else {
            throw .staleTimestamp(skewSeconds: skewMs / 1000)
        }
        guard datagram.nonce.count == 16 else { throw .malformed("nonce is not 16 bytes") }
        guard replayGuard.admit(sender: signer.id, nonce: datagram.nonce, nowMs: now) else { throw .replay }
        return (sender, datagram)
    }

    static func nowMs() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

    func handle(_ datagram: Granary_DhtDatagram, from sender: DHTContact, observed: DHTAddress) async {
        guard !stopped else { return }
        noteSeen(sender)
        switch datagram.message {
        case .ping:
            var pong = Granary_DhtPong()
            pong.observedHost = observed.host
            pong.observedPort = UInt32(observed.port)
            reply(to: observed, request: datagram.requestID, .pong(pong))
        case let .findNode(m):
            guard let target = Hash256(bytes: m.target) else { return drop(.malformed("FIND_NODE target is not 32 bytes"), from: sender) }
            var nodes = Granary_DhtNodes()
            nodes.contacts = table.closest(to: target, count: configuration.k).filter { $0.id != sender.id }.map(\.proto)
            reply(to: observed, request: datagram.requestID, .nodes(nodes))
        case let .findValue(m):
            guard let key = Hash256(bytes: m.storageKey) else { return drop(.malformed("FIND_VALUE key is not 32 bytes"), from: sender) }
            var value = Granary_DhtValue()
            if let r = records[key] ?? ownRecords[key], r.expiresAt > Date() { value.record = r.envelope }
            value.contacts = table.closest(to: key, count: configuration.k).filter { $0.id != sender.id }.map(\.proto)
            reply(to: observed, request: datagram.requestID, .value(value))
        case let .store(m):
            var result = Granary_DhtStoreResult()
            do {
                result.stored = try accept(record: m.record)
                if !result.stored { result.reason = "not newer than the record held" }
            } catch {
                drop(error, from: sender)
                result.reason = error.description
            }
            reply(to: observed, request: datagram.requestID, .storeResult(result))
        case let .filterRequest(m):
            guard let filter = AttenuatedBloomFilter(levels: m.levels.map { [UInt8]($0) }) else {
                return drop(.malformed("filter must have 3 levels of \(BloomFilter.byteCount) bytes"), from: sender)
            }
            noteNeighbourFilter(sender, filter, chosenByUs: false)
            var mine = Granary_DhtFilterExchange()
            mine.levels = attenuatedFilter(for: sender.id).levels.map { Data($0.bytes) }
            reply(to: observed, request: datagram.requestID, .filterReply(mine))
        case let .publish(m):
            handlePublish(m, from: sender)
        case let .bid(m):
            var ack = Granary_DhtBidAck()
            ack.accepted = acceptBid(m.bid, from: sender)
            reply(to: observed, request: datagram.requestID, .bidAck(ack))
        case .pong, .nodes, .value, .storeResult, .filterReply, .bidAck:
            guard let p = pending[datagram.requestID] else { return }  // late or unsolicited
            if let expected = p.expected, expected != sender.id {
                return drop(.malformed("reply from \(sender.id.short), expected \(expected.short)"), from: sender)
            }
            pending[datagram.requestID] = nil
            p.continuation.resume(returning: (sender, datagram))
        case nil:
            drop(.malformed("datagram carries no message"), from: sender)
        }
    }

    func drop(_ error: DHTError, from: DHTContact) {
        counters.update { $0.dropped[error.reason, default: 0] += 1 }
        logger.warning("dropped message from \(from): \(error)", metadata: ["reason": "\(error.reason)"])
    }

    // MARK: routing table maintenance

    /// Kademlia's update rule: a contact that just talked to us goes to the
    /// tail of its bucket; a full bucket pings its least recently seen
    /// contact and evicts it only if it does not answer.
    func noteSeen(_ c: DHTContact) {
        // A node we took for dead answers: perhaps it was our own network
        // that was down (a laptop offline), so every failure we noted may
        // be ours. Forget them all rather than skip live nodes for minutes.
        if let f = recentlyFailed.removeValue(forKey: c.id), f.failures >= 2 { recentlyFailed.removeAll() }
        switch table.update(c) {
        case .added: tableDirty = true
        case .refreshed, .ignored: break
        case let .bucketFull(oldest):
            let bucket = table.bucketIndex(for: c.id)
            guard evictionsInFlight.insert(bucket).inserted else { return }
            Task {
                let alive = await self.ping(oldest)
                self.finishEviction(bucket: bucket, oldest: oldest, candidate: c, oldestAlive: alive)
            }
        }
    }

    func finishEviction(bucket: Int, oldest: DHTContact, candidate: DHTContact, oldestAlive: Bool) {
        evictionsInFlight.remove(bucket)
        if !oldestAlive {
            table.evict(oldest.id, replacingWith: candidate)
            tableDirty = true
        }
    }

    /// A request to `c` timed out. One lost datagram is not a dead node:
    /// removing a contact (and a pub/sub neighbour with the routes its
    /// filter showed) at its first timeout emptied routing tables on a
    /// network losing 10% of packets each way, where a round trip fails
    /// one time in three: records went to no node and farmers got no
    /// offers. A contact leaves the table after `failuresBeforeRemoval`
    /// timeouts in a row, a neighbour once lookups skip it (two).
    func contactFailed(_ c: DHTContact) {
        let failures = (recentlyFailed[c.id]?.failures ?? 0) + 1
        recentlyFailed[c.id] = (failures, .now)
        if recentlyFailed.count > 4 * configuration.k {
            let start = failureMemoryStart
            recentlyFailed = recentlyFailed.filter { $0.value.last > start }
        }
        if failures >= Self.failuresBeforeRemoval, table.contains(c.id) {
            table.remove(c.id)
            tableDirty = true
        }
        if failures >= 2, neighbours[c.id] != nil { neighbours[c.id] = nil }
    }

    static let failuresBeforeRemoval = 3

    // MARK: sending

    func makeDatagram(request: UInt64, _ message: Granary_DhtDatagram.OneOf_Message) -> [UInt8] {
        var d = Granary_DhtDatagram()
        d.timestampMs = Self.nowMs()
        d.nonce = Data(SecureRandom.bytes(16))
        d.requestID = request
        d.sender = contact.proto
        d.message = message
        let envelope = try! Granary_SignedEnvelope(kind: .datagram, message: d, signer: identity)
        return [UInt8](try! envelope.serializedData())
    }

    func send(_ bytes: [UInt8], to address: DHTAddress) {
        guard !stopped else { return }
        counters.update { $0.datagramsSent += 1 }
        transport.send(bytes, to: address)
    }

    /// Replies go to the address the request came from, not the advertised
    /// one: a forged advertised address cannot turn us into an amplifier
    /// aimed at someone else.
    func reply(to address: DHTAddress, request: UInt64, _ message: Granary_DhtDatagram.OneOf_Message) {
        send(makeDatagram(request: request, message), to: address)
    }

    /// Sends a request and waits for its reply (nil on timeout or stop).
    /// When `expected` is set, only that node's reply is accepted.
    func request(_ address: DHTAddress, expected: Hash256?, _ message: Granary_DhtDatagram.OneOf_Message) async -> (DHTContact, Granary_DhtDatagram)? {
        guard !stopped else { return nil }
        let requestID = UInt64.random(in: 1...UInt64.max)
        let bytes = makeDatagram(request: requestID, message)
        let timeout = configuration.requestTimeout
        return await withCheckedContinuation { continuation in
            pending[requestID] = PendingRequest(expected: expected, continuation: continuation)
            send(bytes, to: address)
            Task { [weak self] in
                try? await Task.sleep(for: timeout)
                await self?.expire(requestID)
            }
        }
    }

    func request(_ c: DHTContact, _ message: Granary_DhtDatagram.OneOf_Message) async -> Granary_DhtDatagram? {
        guard let (_, reply) = await request(c.address, expected: c.id, message) else {
            contactFailed(c)
            return nil
        }
        return reply
    }

    func expire(_ requestID: UInt64) {
        guard let p = pending.removeValue(forKey: requestID) else { return }
        counters.update { $0.requestsTimedOut += 1 }
        p.continuation.resume(returning: nil)
    }

    /// Pings a known contact; a reply refreshes it in the table.
    public func ping(_ c: DHTContact) async -> Bool {
        await request(c, .ping(Granary_DhtPing())) != nil
    }

    /// Pings an address whose node is not known yet (bootstrap); returns the
    /// verified contact that answered.
    public func ping(address: DHTAddress, attempts: Int = 1) async -> DHTContact? {
        for _ in 0..<max(1, attempts) {
            if let (c, _) = await request(address, expected: nil, .ping(Granary_DhtPing())) { return c }
        }
        return nil
    }
}

extension Duration {
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}
