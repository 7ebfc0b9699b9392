import Foundation
import GranaryCore
import GranaryDHT
import GranaryWire
import Testing

@Suite struct RoutingTableTests {
    func contact(_ id: NodeIdentity, port: Int = 1000) -> DHTContact {
        DHTContact(publicKey: id.publicKey, address: DHTAddress(host: "127.0.0.1", port: port))
    }

    @Test func bucketsHoldAtMostKAndNameTheOldestWhenFull() {
        let me = identity()
        var table = RoutingTable(localID: me.id, k: 3)
        table.recentlySeen = .zero  // always ask for the ping in this test
        // Gather identities that all land in bucket 0 (first bit differs from ours).
        var far: [NodeIdentity] = []
        while far.count < 4 {
            let id = NodeIdentity.generate(difficulty: 0)
            if table.bucketIndex(for: id.id) == 0 { far.append(id) }
        }
        #expect(table.update(contact(far[0])) == .added)
        #expect(table.update(contact(far[1])) == .added)
        #expect(table.update(contact(far[2])) == .added)
        #expect(table.update(contact(far[3])) == .bucketFull(oldest: contact(far[0])))
        // Seeing the oldest again makes it the most recent; the next oldest is named.
        #expect(table.update(contact(far[0])) == .refreshed)
        #expect(table.update(contact(far[3])) == .bucketFull(oldest: contact(far[1])))
        table.evict(far[1].id, replacingWith: contact(far[3]))
        #expect(table.contains(far[3].id) && !table.contains(far[1].id))
        #expect(table.update(contact(me)) == .ignored)
        // An oldest contact heard from recently is kept without a ping.
        table.recentlySeen = .seconds(60)
        #expect(table.update(contact(far[1])) == .ignored)
    }

    @Test func closestIsSortedByXorDistance() {
        let me = identity()
        var table = RoutingTable(localID: me.id)
        let ids = (0..<50).map { _ in NodeIdentity.generate(difficulty: 0) }
        for (i, id) in ids.enumerated() { table.update(contact(id, port: 1000 + i)) }
        let target = Hash256.random()
        let got = table.closest(to: target, count: 5).map(\.id)
        let want = Array(ids.map(\.id).filter { table.contains($0) }.sorted { ($0 ^ target) < ($1 ^ target) }.prefix(5))
        #expect(got == want)
        for b in [0, 3, 17, 200] { #expect(table.bucketIndex(for: table.randomID(inBucket: b)) == b) }
    }
}

@Suite struct WireValueTests {
    @Test func addressesParse() {
        #expect(DHTAddress("127.0.0.1:7400") == DHTAddress(host: "127.0.0.1", port: 7400))
        #expect(DHTAddress("[::1]:9")?.host == "::1")
        #expect(DHTAddress("[::1]:9")?.description == "[::1]:9")
        #expect(DHTAddress("nohost") == nil)
        #expect(DHTAddress("h:70000") == nil)
        #expect(DHTAddress(":80") == nil)
    }

    @Test func transferAddressRecordsParseOrAreRefused() {
        let v = TransferAddressRecord.value(host: "10.0.0.7", port: 4711)
        #expect(TransferAddressRecord.address(from: v, contactHost: nil) == "10.0.0.7:4711")
        let v6 = TransferAddressRecord.value(host: "fd00::7", port: 9)
        #expect(TransferAddressRecord.address(from: v6, contactHost: nil) == "[fd00::7]:9")
        // A farmer on every interface leaves the host to its DHT contact's.
        let wild = TransferAddressRecord.value(host: "0.0.0.0", port: 4711)
        #expect(wild == Array(":4711".utf8))
        #expect(TransferAddressRecord.address(from: wild, contactHost: "192.0.2.1") == "192.0.2.1:4711")
        #expect(TransferAddressRecord.address(from: wild, contactHost: nil) == nil)
        for bad in ["", "host", "host:", "host:0", "host:70000", "ho st:80", "a/b:80", String(repeating: "h", count: 400) + ":80"] {
            #expect(TransferAddressRecord.address(from: Array(bad.utf8), contactHost: "192.0.2.1") == nil, "\(bad)")
        }
        #expect(TransferAddressRecord.address(from: [0xff, 0xfe, 0x3a, 0x38, 0x30], contactHost: nil) == nil)
    }

    @Test func attenuatedBloomFilterMatchesTheShallowestLevel() {
        var f = AttenuatedBloomFilter()
        f.levels[1].insert("a")
        f.levels[2].insert("a")
        f.levels[2].insert("b")
        #expect(f.matchLevel(["a"]) == 1)
        #expect(f.matchLevel(["b", "zz"]) == 2)
        #expect(f.matchLevel(["c"]) == nil)
        #expect(AttenuatedBloomFilter(levels: [[1, 2]]) == nil)
    }

    @Test func policyTopicsCoverTheOffersThePolicyAccepts() {
        let policy = BidPolicy(minPricePerAudit: 50, capacityBytes: 100 << 30, maxDurationSeconds: 90 * 86_400)
        let ok = OfferTerms(allowanceBytes: 8 << 30, durationSeconds: 30 * 86_400, maxPricePerAudit: 200, auditIntervalSeconds: 3600)
        #expect(policy.topics.contains(ok.topic))
        #expect(policy.accepts(ok, freeBytes: 50 << 30))
        let cheap = OfferTerms(allowanceBytes: 8 << 30, durationSeconds: 30 * 86_400, maxPricePerAudit: 5, auditIntervalSeconds: 3600)
        #expect(!policy.topics.contains(cheap.topic))
        #expect(!policy.accepts(cheap, freeBytes: 50 << 30))
        let long = OfferTerms(allowanceBytes: 8 << 30, durationSeconds: 400 * 86_400, maxPricePerAudit: 200, auditIntervalSeconds: 3600)
        #expect(!policy.topics.contains(long.topic))
        let huge = OfferTerms(allowanceBytes: 1 << 40, durationSeconds: 86_400, maxPricePerAudit: 200, auditIntervalSeconds: 3600)
        #expect(!policy.topics.contains(huge.topic))
        #expect(!policy.accepts(ok, freeBytes: 1 << 30))
    }

    @Test func recordsVerifyOnlyWhenSignedByTheirOwner() throws {
        let owner = identity(), other = identity()
        let r = try SignedRecord(owner: owner, key: Array("k".utf8), value: [1, 2, 3], sequence: 7, expiresAt: Date().addingTimeInterval(60))
        let back = try SignedRecord(verifying: r.envelope, difficulty: testDifficulty)
        #expect(back.value == [1, 2, 3] && back.sequence == 7 && back.ownerID == owner.id)
        // The same body re-signed by someone else names an owner that did not sign.
        let forged = Granary_SignedEnvelope(kind: .record, body: r.envelope.body, signer: other)
        #expect(throws: DHTError.self) { try SignedRecord(verifying: forged, difficulty: testDifficulty) }
        // A flipped signature bit.
        var tampered = r.envelope
        tampered.signature[0] ^= 1
        #expect(throws: DHTError.self) { try SignedRecord(verifying: tampered, difficulty: testDifficulty) }
        let expired = try SignedRecord(owner: owner, key: [1], value: [], sequence: 1, expiresAt: Date().addingTimeInterval(-1))
        #expect(throws: DHTError.recordRejected("expired")) { try SignedRecord(verifying: expired.envelope, difficulty: testDifficulty) }
        #expect(throws: DHTError.self) { try SignedRecord(owner: owner, key: [], value: [UInt8](repeating: 0, count: 2000), sequence: 1, expiresAt: Date()) }
    }

    @Test func bidsRankByReputationAndPrice() throws {
        let farmers = (0..<3).map { _ in identity() }
        let offer = Hash256.random()
        func bid(_ i: Int, _ price: UInt64) throws -> Bid {
            try Bid(offerID: offer, farmer: farmers[i],
                    contact: DHTContact(publicKey: farmers[i].publicKey, address: DHTAddress(host: "127.0.0.1", port: 9000 + i)),
                    transferHost: "127.0.0.1", transferPort: 7000 + i, pricePerAudit: price, freeCapacityBytes: 1 << 30)
        }
        let bids = [try bid(0, 100), try bid(1, 50), try bid(2, 60)]
        // Equal reputation: cheapest first.
        #expect(ContractMarket.rank(bids, maxPrice: 100, reputation: { _ in 0.5 }).map(\.pricePerAudit) == [50, 60, 100])
        // A well-reputed farmer asking a little more beats an unknown one.
        let trusted = farmers[2].id
        let ranked = ContractMarket.rank(bids, maxPrice: 100, reputation: { $0 == trusted ? 0.9 : 0.5 })
        #expect(ranked.first?.farmerID == trusted)
        let back = try Bid(verifying: bids[1].envelope, difficulty: testDifficulty)
        #expect(back.transferPort == 7001 && back.farmerKey == farmers[1].publicKey)
    }
}
