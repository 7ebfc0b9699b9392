// GranaryDHT: the Kademlia node every `granary` process embeds, signed records,
// Quasar-style pub/sub of contract offers, and the bid market.
// The wire format is Protos/dht.proto (the specification); this is the map for callers.
//
// ## Embedding a node
// ```swift
// let node = try await DHTNode.start(
//     identity: identity,                       // NodeIdentity with the network's proof of work
//     listen: DHTAddress("0.0.0.0:0")!,         // UDP; port 0 picks one (node.localAddress)
//     advertise: DHTAddress("203.0.113.5:7400"),// optional, behind a port forward
//     bootstrap: [DHTAddress("127.0.0.1:7400")!],
//     statePath: stateDir + "/dht")             // routing.db lives here; nil = nothing kept
// defer { await node.stop() }
// ```
// `start` throws `DHTError.bootstrapFailed` when bootstrap addresses were given
// and none answered. A node with neither addresses nor a saved table starts alone
// (the first seed).
//
// ## Records (contact info, metadata pointers)
// ```swift
// try await node.putRecord(key: Array("metadata-pointer".utf8), value: bytes, sequence: n, ttl: .seconds(86_400))
// let r: SignedRecord? = await node.getRecord(owner: renterID, key: Array("metadata-pointer".utf8))
// let c: DHTContact? = await node.findContact(farmerID)
// ```
// Values ≤ 1 KiB, keys ≤ 256 B, lifetime ≤ 7 days; the owner republishes every
// `republishInterval`; higher `sequence` replaces lower; records are verified
// (owner's signature, proof of work, expiry) before `getRecord` returns them.
// Under keys starting with `SignedRecord.keyOnlyPrefix` the owner is a bare
// key without proof of work, and `putRecord(..., signedBy:)` signs with it
// (a renter's metadata pointer, findable from its master key alone).
//
// ## Market
// Renter:
// ```swift
// let market = ContractMarket(node: node, reputation: { farmerID in score(farmerID) })  // 0...1, 0.5 unknown
// let terms = OfferTerms(allowanceBytes: 8 << 30, durationSeconds: 30 * 86_400,
//                        maxPricePerAudit: 100, auditIntervalSeconds: 3600)
// let bids: [Bid] = try await market.requestBids(terms, window: .seconds(3))   // best first
// // or: let offer = try market.makeOffer(terms); await market.requestBids(offer, window: ...)
// for bid in bids { connect(bid.transferHost, bid.transferPort, expecting: bid.farmerKey) }
// ```
// Bids are collected for the whole window, filtered (price ≤ max, capacity ≥
// allowance, one per farmer) and ranked by `reputation − price/maxPrice`.
//
// Farmer:
// ```swift
// let agent = BidAgent(node: node,
//                      policy: BidPolicy(minPricePerAudit: 50, capacityBytes: cap, maxDurationSeconds: 90 * 86_400),
//                      transferHost: "203.0.113.5", transferPort: 7500, freeBytes: { store.freeBytes })
// await agent.start()
// ```
//
// ## Testing and simulation
// `LocalDHTNetwork.start(count:configuration:inMemory:)` builds a network in one
// process (real UDP on 127.0.0.1, or `MemoryNetwork` for the 1,000-node
// simulation only). `DHTConfiguration.fastForTests(difficulty: 4)` shortens timers.
// `node.statistics()` counts traffic and refused input by reason.
