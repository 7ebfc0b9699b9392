import Foundation
import GranaryCore
import GranaryDHT
import Testing

@Suite(.serialized) struct MarketTests {
    @Test(.timeLimit(.minutes(2))) func renterCollectsAndRanksBidsFromMatchingFarmers() async throws {
        let net = try await LocalDHTNetwork.start(count: 12, configuration: testConfiguration())
        let renter = net.nodes[0]
        // Farmers with different asking prices; one too expensive, one too small,
        // one that refuses long contracts.
        let specs: [(price: UInt64, capacity: UInt64, maxDays: UInt64)] = [
            (80, 100 << 30, 365), (40, 100 << 30, 365), (60, 100 << 30, 365),
            (500, 100 << 30, 365), (30, 1 << 30, 365), (20, 100 << 30, 7),
        ]
        var agents: [BidAgent] = []
        for (i, s) in specs.enumerated() {
            let agent = BidAgent(node: net.nodes[i + 2],
                                 policy: BidPolicy(minPricePerAudit: s.price, capacityBytes: s.capacity, maxDurationSeconds: s.maxDays * 86_400),
                                 // Farmer 1 listens on every interface and does not know its address.
                                 transferHost: i == 1 ? "0.0.0.0" : "127.0.0.1", transferPort: 7100 + i)
            await agent.start()
            agents.append(agent)
        }
        let favourite = net.nodes[2 + 0].id     // asks 80, but the renter trusts it
        let market = ContractMarket(node: renter, reputation: { $0 == favourite ? 1.0 : 0.5 })
        let terms = OfferTerms(allowanceBytes: 8 << 30, durationSeconds: 30 * 86_400, maxPricePerAudit: 100, auditIntervalSeconds: 3600)
        // Subscription filters spread in the background; on a loaded machine
        // that takes a while, so ask again until every matching farmer answers.
        func collect(_ market: ContractMarket) async throws -> [Bid] {
            var bids: [Bid] = []
            let deadline = Date().addingTimeInterval(30)
            repeat {
                bids = try await market.requestBids(terms, window: .seconds(2))
            } while bids.count < 3 && Date() < deadline
            return bids
        }
        let bids = try await collect(market)
        #expect(bids.map(\.pricePerAudit) == [80, 40, 60], "got \(bids.map(\.pricePerAudit))")
        #expect(bids.first?.farmerID == favourite)
        for b in bids {
            let i = Int(b.transferPort) - 7100
            #expect(b.farmerID == net.nodes[i + 2].id && b.farmerKey == net.nodes[i + 2].identity.publicKey)
            // A wildcard host is replaced by the host the bid came from.
            #expect(b.transferHost == (i == 1 ? net.nodes[i + 2].contact.address.host : "127.0.0.1"), "\(b.transferHost)")
            #expect(!["0.0.0.0", ""].contains(b.transferHost))
        }
        // Without the reputation edge: cheapest first.
        let plain = ContractMarket(node: renter)
        #expect(try await collect(plain).map(\.pricePerAudit) == [40, 60, 80])
        // A bid for an offer no longer collecting is refused.
        let late = try Bid(offerID: .random(), farmer: net.nodes[3].identity, contact: net.nodes[3].contact,
                           transferHost: "127.0.0.1", transferPort: 7101, pricePerAudit: 1, freeCapacityBytes: 1 << 40)
        #expect(await net.nodes[3].sendBid(late, to: renter.contact) == false)
        for a in agents { await a.stop() }
        await net.stopAll()
    }

    /// After a short round the market widens the next offer to random
    /// routing-table contacts: here pub/sub has no neighbours at all (degree
    /// 0), as when lost filter exchanges cut farmers off, and only the
    /// widened offer reaches them.
    @Test(.timeLimit(.minutes(1))) func aWidenedOfferReachesFarmersPubSubDoesNot() async throws {
        var configuration = testConfiguration()
        configuration.pubsubDegree = 0
        let net = try await LocalDHTNetwork.start(count: 6, configuration: configuration)
        var agents: [BidAgent] = []
        for (i, node) in net.nodes.dropFirst().enumerated() {
            let agent = BidAgent(node: node, policy: BidPolicy(minPricePerAudit: 1, capacityBytes: 100 << 30, maxDurationSeconds: 365 * 86_400),
                                 transferHost: "127.0.0.1", transferPort: 7200 + i)
            await agent.start()
            agents.append(agent)
        }
        let market = ContractMarket(node: net.nodes[0])
        let terms = OfferTerms(allowanceBytes: 1 << 30, durationSeconds: 30 * 86_400, maxPricePerAudit: 100, auditIntervalSeconds: 3600)
        let plain = try await market.requestBids(terms, window: .milliseconds(500))
        #expect(plain.isEmpty, "without pub/sub neighbours the offer reaches nobody")
        let widened = try await market.requestBids(terms, window: .seconds(2), widening: 16)
        #expect(Set(widened.map(\.farmerID)) == Set(net.nodes.dropFirst().map(\.id)), "every farmer in the renter's table bids")
        for a in agents { await a.stop() }
        await net.stopAll()
    }
}
