import Foundation
import GranaryCore
import GranaryWire

/// What a renter asks for when it looks for farmers.
public struct OfferTerms: Sendable, Equatable {
    public var allowanceBytes: UInt64
    public var durationSeconds: UInt64
    public var maxPricePerAudit: UInt64
    public var auditIntervalSeconds: UInt64

    public init(allowanceBytes: UInt64, durationSeconds: UInt64, maxPricePerAudit: UInt64, auditIntervalSeconds: UInt64) {
        self.allowanceBytes = allowanceBytes
        self.durationSeconds = durationSeconds
        self.maxPricePerAudit = maxPricePerAudit
        self.auditIntervalSeconds = auditIntervalSeconds
    }

    /// The pub/sub topic these terms are published on.
    public var topic: String {
        OfferTopics.topic(allowanceBytes: allowanceBytes, durationSeconds: durationSeconds, maxPricePerAudit: maxPricePerAudit)
    }
}

/// A verified, renter-signed contract offer (published over pub/sub).
public struct ContractOffer: Sendable, Equatable {
    public let offerID: Hash256
    public let renter: DHTContact
    public let terms: OfferTerms
    public let topics: [String]
    public let expiresAt: Date
    /// The envelope exactly as signed by the renter.
    public let envelope: Granary_SignedEnvelope

    public var renterID: Hash256 { renter.id }

    /// Signs a new offer; `renter` must be the signer's own contact.
    public init(terms: OfferTerms, renter identity: NodeIdentity, contact: DHTContact,
                topics: [String]? = nil, expiresAt: Date, offerID: Hash256 = .random()) throws(DHTError) {
        precondition(contact.id == identity.id, "an offer names its signer as renter")
        var o = Granary_ContractOffer()
        o.renterID = Data(identity.id.bytes)
        o.renterContact = contact.proto
        o.allowanceBytes = terms.allowanceBytes
        o.durationSeconds = terms.durationSeconds
        o.maxPricePerAudit = terms.maxPricePerAudit
        o.auditIntervalSeconds = terms.auditIntervalSeconds
        o.topics = topics ?? [terms.topic]
        o.offerID = Data(offerID.bytes)
        o.expiresAtMs = UInt64(max(0, expiresAt.timeIntervalSince1970 * 1000))
        do { envelope = try Granary_SignedEnvelope(kind: .offer, message: o, signer: identity) } catch {
            throw .malformed("cannot encode offer: \(error)")
        }
        self.offerID = offerID
        self.renter = contact
        self.terms = terms
        self.topics = o.topics
        self.expiresAt = Date(timeIntervalSince1970: Double(o.expiresAtMs) / 1000)
    }

    /// Verifies an offer as received: signature, proof of work, renter ID
    /// equal to the signer, sane bounds.
    public init(verifying envelope: Granary_SignedEnvelope, difficulty: Int) throws(DHTError) {
        let signer: NodePublicKey, o: Granary_ContractOffer
        do { (signer, o) = try envelope.open(Granary_ContractOffer.self, kind: .offer, difficulty: difficulty) } catch {
            throw .envelope(error)
        }
        guard Hash256(bytes: o.renterID) == signer.id else { throw .malformed("offer renter ID is not its signer") }
        let contact = try DHTContact(o.renterContact, difficulty: difficulty)
        guard contact.id == signer.id else { throw .malformed("offer renter contact is not its signer") }
        guard let id = Hash256(bytes: o.offerID) else { throw .malformed("offer ID is not 32 bytes") }
        guard o.topics.count <= 16, o.topics.allSatisfy({ $0.utf8.count <= 128 }) else {
            throw .malformed("offer has too many or too long topics")
        }
        offerID = id
        renter = contact
        terms = OfferTerms(allowanceBytes: o.allowanceBytes, durationSeconds: o.durationSeconds,
                           maxPricePerAudit: o.maxPricePerAudit, auditIntervalSeconds: o.auditIntervalSeconds)
        topics = o.topics
        expiresAt = Date(timeIntervalSince1970: Double(o.expiresAtMs) / 1000)
        self.envelope = envelope
    }
}

/// A verified, farmer-signed bid: everything a renter needs to open the
/// farmer's TCP transfer session and propose a contract.
public struct Bid: Sendable, Equatable {
    public let offerID: Hash256
    /// The farmer's node key; `farmerID` is its BLAKE2b-256.
    public let farmerKey: NodePublicKey
    /// Where the farmer's TCP transfer protocol listens. A farmer that
    /// listens on every interface (0.0.0.0) without --advertise does not
    /// know its own address; the receiving node fills in the host the bid
    /// came from (see `DHTNode.acceptBid`).
    public internal(set) var transferHost: String
    public let transferPort: Int
    public let pricePerAudit: UInt64
    public let freeCapacityBytes: UInt64
    /// The farmer's DHT contact.
    public let farmerContact: DHTContact
    /// The envelope exactly as signed by the farmer.
    public let envelope: Granary_SignedEnvelope

    public var farmerID: Hash256 { farmerKey.id }

    public init(offerID: Hash256, farmer identity: NodeIdentity, contact: DHTContact,
                transferHost: String, transferPort: Int, pricePerAudit: UInt64, freeCapacityBytes: UInt64) throws(DHTError) {
        var b = Granary_Bid()
        b.farmerID = Data(identity.id.bytes)
        b.transferHost = transferHost
        b.transferPort = UInt32(transferPort)
        b.offerID = Data(offerID.bytes)
        b.pricePerAudit = pricePerAudit
        b.freeCapacityBytes = freeCapacityBytes
        b.farmerContact = contact.proto
        do { envelope = try Granary_SignedEnvelope(kind: .bid, message: b, signer: identity) } catch {
            throw .malformed("cannot encode bid: \(error)")
        }
        self.offerID = offerID
        farmerKey = identity.publicKey
        self.transferHost = transferHost
        self.transferPort = transferPort
        self.pricePerAudit = pricePerAudit
        self.freeCapacityBytes = freeCapacityBytes
        farmerContact = contact
    }

    /// Verifies a bid as received: signature, proof of work, farmer ID equal
    /// to the signer, a usable transfer address.
    public init(verifying envelope: Granary_SignedEnvelope, difficulty: Int) throws(DHTError) {
        let signer: NodePublicKey, b: Granary_Bid
        do { (signer, b) = try envelope.open(Granary_Bid.self, kind: .bid, difficulty: difficulty) } catch {
            throw .envelope(error)
        }
        guard Hash256(bytes: b.farmerID) == signer.id else { throw .malformed("bid farmer ID is not its signer") }
        guard let id = Hash256(bytes: b.offerID) else { throw .malformed("bid offer ID is not 32 bytes") }
        guard !b.transferHost.isEmpty, b.transferHost.utf8.count <= 255, (1...65535).contains(b.transferPort) else {
            throw .malformed("bid transfer address \(b.transferHost):\(b.transferPort) is not usable")
        }
        let contact = try DHTContact(b.farmerContact, difficulty: difficulty)
        guard contact.id == signer.id else { throw .malformed("bid contact is not its signer") }
        offerID = id
        farmerKey = signer
        transferHost = b.transferHost
        transferPort = Int(b.transferPort)
        pricePerAudit = b.pricePerAudit
        freeCapacityBytes = b.freeCapacityBytes
        farmerContact = contact
        self.envelope = envelope
    }
}
