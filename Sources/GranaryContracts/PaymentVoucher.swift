import Foundation
import GranaryCore
import GranaryWire

/// A micropayment voucher (Protos/contracts.proto `Voucher`): the renter's
/// promise of a new cumulative total for one contract. The farmer keeps the
/// highest valid one; settlement is outside Granary.
public struct PaymentVoucher: Sendable, Hashable {
    public var contractID: Hash256
    public var paymentChannelID: Hash256
    /// Total owed so far under the contract (never a delta).
    public var cumulativeAmount: UInt64
    /// Strictly increasing per contract.
    public var sequence: UInt64
    /// Unix seconds when issued.
    public var issuedAt: UInt64

    public init(contractID: Hash256, paymentChannelID: Hash256, cumulativeAmount: UInt64, sequence: UInt64,
                issuedAt: UInt64 = UInt64(Date().timeIntervalSince1970)) {
        self.contractID = contractID; self.paymentChannelID = paymentChannelID
        self.cumulativeAmount = cumulativeAmount; self.sequence = sequence; self.issuedAt = issuedAt
    }

    public init(message m: Granary_Voucher) throws(ContractError) {
        guard m.version == Granary_SignedEnvelope.currentVersion else { throw .malformed("unsupported voucher version \(m.version)") }
        self.init(contractID: try hash256(m.contractID, field: "contract_id"),
                  paymentChannelID: try hash256(m.paymentChannelID, field: "payment_channel_id"),
                  cumulativeAmount: m.cumulativeAmount, sequence: m.sequence, issuedAt: m.issuedAt)
    }

    public var message: Granary_Voucher {
        var m = Granary_Voucher()
        m.version = Granary_SignedEnvelope.currentVersion
        m.contractID = Data(contractID.bytes); m.paymentChannelID = Data(paymentChannelID.bytes)
        m.cumulativeAmount = cumulativeAmount; m.sequence = sequence; m.issuedAt = issuedAt
        return m
    }

    /// Signs the serialized voucher as the renter.
    public func signed(by renter: NodeIdentity) throws(ContractError) -> SignedVoucher {
        let body: Data
        do { body = try message.serializedData() } catch { throw .malformed("cannot serialize voucher: \(error)") }
        return SignedVoucher(voucher: self, envelope: Granary_SignedEnvelope(kind: .voucher, body: body, signer: renter),
                             signer: renter.publicKey)
    }
}

/// A voucher with the renter's signature over its exact bytes.
public struct SignedVoucher: Sendable {
    public let voucher: PaymentVoucher
    public let envelope: Granary_SignedEnvelope
    public let signer: NodePublicKey

    init(voucher: PaymentVoucher, envelope: Granary_SignedEnvelope, signer: NodePublicKey) {
        self.voucher = voucher; self.envelope = envelope; self.signer = signer
    }

    /// Checks the signature over the bytes as they arrived, then decodes.
    /// The caller still checks that `signer` is the contract's renter.
    public init(verifying envelope: Granary_SignedEnvelope, difficulty: Int) throws(ContractError) {
        let opened: (signer: NodePublicKey, message: Granary_Voucher)
        do { opened = try envelope.open(Granary_Voucher.self, kind: .voucher, difficulty: difficulty) } catch { throw .envelope(error) }
        self.init(voucher: try PaymentVoucher(message: opened.message), envelope: envelope, signer: opened.signer)
    }

    /// Whether this voucher may replace `previous` (nil: none yet): it must
    /// raise both the cumulative amount and the sequence.
    public func supersedes(_ previous: PaymentVoucher?) -> Bool {
        guard let previous else { return true }
        return voucher.cumulativeAmount > previous.cumulativeAmount && voucher.sequence > previous.sequence
    }
}
