import Foundation
import GranaryCore
import GranaryWire

extension DHTNode {
    /// Wildcard listen addresses, which say "wherever this packet came from".
    static let unspecifiedHosts: Set<String> = ["0.0.0.0", "::", "[::]"]

    /// Routes verified bids for `offerID` to `collector` until removed.
    func openBidCollection(offerID: Hash256, collector: @escaping @Sendable (Bid) -> Void) {
        bidCollectors[offerID] = collector
    }

    func closeBidCollection(offerID: Hash256) {
        bidCollectors[offerID] = nil
    }

    /// Delivers a signed bid to the renter that published the offer (UDP,
    /// acknowledged, retried). True when the renter accepted it for collection.
    public func sendBid(_ bid: Bid, to renter: DHTContact) async -> Bool {
        var m = Granary_DhtBidDelivery()
        m.bid = bid.envelope
        for _ in 0..<max(1, configuration.bidAttempts) {
            if let (_, reply) = await request(renter.address, expected: renter.id, .bid(m)) {
                if case let .bidAck(ack) = reply.message { return ack.accepted }
                return false
            }
        }
        return false
    }

    /// An incoming bid: accepted only when it verifies, comes from the
    /// farmer that signed it, and answers an offer still collecting.
    func acceptBid(_ envelope: Granary_SignedEnvelope, from sender: DHTContact) -> Bool {
        var bid: Bid
        do { bid = try Bid(verifying: envelope, difficulty: configuration.difficulty) } catch {
            drop(error, from: sender)
            return false
        }
        guard bid.farmerID == sender.id else {
            drop(.malformed("bid signed by \(bid.farmerID.short) delivered by \(sender.id.short)"), from: sender)
            return false
        }
        guard let collector = bidCollectors[bid.offerID] else { return false }
        if Self.unspecifiedHosts.contains(bid.transferHost) { bid.transferHost = sender.address.host }
        collector(bid)
        return true
    }
}
