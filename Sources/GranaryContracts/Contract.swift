import Foundation
import GranaryCore
import GranaryWire

/// The terms of a storage contract between one renter and one farmer
/// (Protos/contracts.proto `Contract`). A plain value: it becomes binding
/// only as a `SignedContract`, which carries the exact bytes both parties
/// signed. Amounts are in the payment channel's smallest unit; times are
/// Unix seconds.
public struct Contract: Sendable, Hashable {
    /// Stable across renewals; pieces are filed under it.
    public var id: Hash256
    /// 0 when first signed, +1 per renewal.
    public var revision: UInt64
    public var renterID: Hash256
    public var farmerID: Hash256
    public var allowanceBytes: UInt64
    public var startTime: UInt64
    public var endTime: UInt64
    public var pricePerAudit: UInt64
    public var auditIntervalSeconds: UInt64
    public var paymentChannelID: Hash256

    public init(id: Hash256 = .random(), revision: UInt64 = 0, renterID: Hash256, farmerID: Hash256,
                allowanceBytes: UInt64, startTime: UInt64, endTime: UInt64, pricePerAudit: UInt64,
                auditIntervalSeconds: UInt64, paymentChannelID: Hash256) {
        self.id = id; self.revision = revision; self.renterID = renterID; self.farmerID = farmerID
        self.allowanceBytes = allowanceBytes; self.startTime = startTime; self.endTime = endTime
        self.pricePerAudit = pricePerAudit; self.auditIntervalSeconds = auditIntervalSeconds
        self.paymentChannelID = paymentChannelID
    }

    /// Decodes and bounds-checks the protobuf form.
    public init(message m: Granary_Contract) throws(ContractError) {
        guard m.version == Granary_SignedEnvelope.currentVersion else { throw .malformed("unsupported contract version \(m.version)") }
        self.init(id: try hash256(m.contractID, field: "contract_id"), revision: m.revision,
                  renterID: try hash256(m.renterID, field: "renter_id"),
                  farmerID: try hash256(m.farmerID, field: "farmer_id"),
                  allowanceBytes: m.allowanceBytes, startTime: m.startTime, endTime: m.endTime,
                  pricePerAudit: m.pricePerAudit, auditIntervalSeconds: m.auditIntervalSeconds,
                  paymentChannelID: try hash256(m.paymentChannelID, field: "payment_channel_id"))
        guard endTime > startTime else { throw .malformed("contract ends (\(endTime)) before it starts (\(startTime))") }
    }

    public var message: Granary_Contract {
        var m = Granary_Contract()
        m.version = Granary_SignedEnvelope.currentVersion
        m.contractID = Data(id.bytes); m.revision = revision
        m.renterID = Data(renterID.bytes); m.farmerID = Data(farmerID.bytes)
        m.allowanceBytes = allowanceBytes; m.startTime = startTime; m.endTime = endTime
        m.pricePerAudit = pricePerAudit; m.auditIntervalSeconds = auditIntervalSeconds
        m.paymentChannelID = Data(paymentChannelID.bytes)
        return m
    }

    public var durationSeconds: UInt64 { endTime > startTime ? endTime - startTime : 0 }

    /// The renter's half: serializes the terms once and signs those bytes.
    /// `renter.id` must be `renterID`.
    public func proposal(signedBy renter: NodeIdentity) throws(ContractError) -> ContractProposal {
        guard renter.id == renterID else { throw .signerMismatch("signing identity \(renter.id.short) is not the contract's renter \(renterID.short)") }
        let body: Data
        do { body = try message.serializedData() } catch { throw .malformed("cannot serialize contract: \(error)") }
        let envelope = Granary_SignedEnvelope(kind: .contract, body: body, signer: renter)
        return ContractProposal(envelope: envelope, contract: self, renter: renter.publicKey)
    }
}

/// A contract signed by the renter only: what a renter proposes and a farmer
/// decides to countersign.
public struct ContractProposal: Sendable {
    /// The renter-signed envelope (kind `.contract`); its body is the contract.
    public let envelope: Granary_SignedEnvelope
    public let contract: Contract
    public let renter: NodePublicKey

    init(envelope: Granary_SignedEnvelope, contract: Contract, renter: NodePublicKey) {
        self.envelope = envelope; self.contract = contract; self.renter = renter
    }

    /// Checks the renter's signature over the bytes as they arrived, then
    /// decodes them and checks that the renter ID inside is the signer's.
    public init(verifying envelope: Granary_SignedEnvelope, difficulty: Int) throws(ContractError) {
        let signer: NodePublicKey
        let message: Granary_Contract
        do { (signer, message) = try envelope.open(Granary_Contract.self, kind: .contract, difficulty: difficulty) }
        catch { throw .envelope(error) }
        let contract = try Contract(message: message)
        guard contract.renterID == signer.id else {
            throw .signerMismatch("contract names renter \(contract.renterID.short) but is signed by \(signer.id.short)")
        }
        self.init(envelope: envelope, contract: contract, renter: signer)
    }

    /// The farmer's half: signs exactly the bytes the renter signed.
    public func countersign(farmer: NodeIdentity) throws(ContractError) -> SignedContract {
        guard farmer.id == contract.farmerID else {
            throw .signerMismatch("contract names farmer \(contract.farmerID.short), this farmer is \(farmer.id.short)")
        }
        // Signing an envelope of the same kind over the same body signs the
        // same bytes as the renter did ("granary-v1" || kind || body).
        let countersigned = Granary_SignedEnvelope(kind: .contract, body: envelope.body, signer: farmer)
        return SignedContract(contract: contract, renterEnvelope: envelope, renter: renter,
                              farmer: farmer.publicKey, farmerSignature: [UInt8](countersigned.signature))
    }
}

/// A contract with both signatures over the same exact bytes
/// (Protos/contracts.proto `SignedContract`). Valid only when constructed
/// through verification or countersigning; pass it around freely.
public struct SignedContract: Sendable {
    public let contract: Contract
    /// The renter's envelope: the signed contract bytes.
    public let renterEnvelope: Granary_SignedEnvelope
    public let renter: NodePublicKey
    public let farmer: NodePublicKey
    public let farmerSignature: [UInt8]

    public var id: Hash256 { contract.id }

    init(contract: Contract, renterEnvelope: Granary_SignedEnvelope, renter: NodePublicKey,
         farmer: NodePublicKey, farmerSignature: [UInt8]) {
        self.contract = contract; self.renterEnvelope = renterEnvelope; self.renter = renter
        self.farmer = farmer; self.farmerSignature = farmerSignature
    }

    /// Verifies both signatures over the same body bytes, both keys' proof of
    /// work, and that the IDs in the body are the signers'.
    public init(verifying m: Granary_SignedContract, difficulty: Int) throws(ContractError) {
        let proposal = try ContractProposal(verifying: m.renter, difficulty: difficulty)
        // The farmer's signature is checked as an envelope over the same
        // version, kind and body: the same signed bytes, never re-encoded.
        var countersigned = m.renter
        countersigned.publicKey = m.farmerPublicKey
        countersigned.signature = m.farmerSignature
        let farmer: NodePublicKey
        do { farmer = try countersigned.verify(kind: .contract, difficulty: difficulty) } catch {
            if case .badSignature = error { throw .badFarmerSignature }
            throw .envelope(error)
        }
        guard farmer.id == proposal.contract.farmerID else {
            throw .signerMismatch("contract names farmer \(proposal.contract.farmerID.short) but is countersigned by \(farmer.id.short)")
        }
        self.init(contract: proposal.contract, renterEnvelope: m.renter, renter: proposal.renter,
                  farmer: farmer, farmerSignature: [UInt8](m.farmerSignature))
    }

    /// Decodes and verifies the serialized `SignedContract`.
    public init(serialized bytes: [UInt8], difficulty: Int) throws(ContractError) {
        let m: Granary_SignedContract
        do { m = try Granary_SignedContract(serializedBytes: bytes) } catch { throw .malformed("SignedContract: \(error)") }
        try self.init(verifying: m, difficulty: difficulty)
    }

    public var message: Granary_SignedContract {
        var m = Granary_SignedContract()
        m.renter = renterEnvelope
        m.farmerPublicKey = Data(farmer.bytes)
        m.farmerSignature = Data(farmerSignature)
        return m
    }

    /// The serialized `SignedContract`, for storing (the renter's network.db,
    /// the farmer's index).
    public var serialized: [UInt8] { (try? [UInt8](message.serializedData())) ?? [] }
}
