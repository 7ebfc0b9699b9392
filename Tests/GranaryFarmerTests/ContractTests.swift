import Foundation
import GranaryContracts
import GranaryCore
import GranaryWire
import Testing

@Suite struct ContractTests {
    let renter = NodeIdentity.generate(difficulty: 4)
    let farmer = NodeIdentity.generate(difficulty: 4)

    func terms(price: UInt64 = 10, duration: UInt64 = 3600, allowance: UInt64 = 1 << 20, farmerID: Hash256? = nil) -> Contract {
        let start = UInt64(Date().timeIntervalSince1970)
        return Contract(renterID: renter.id, farmerID: farmerID ?? farmer.id, allowanceBytes: allowance, startTime: start,
                        endTime: start + duration, pricePerAudit: price, auditIntervalSeconds: 60, paymentChannelID: .random())
    }

    @Test func bothSignaturesCoverTheSameBytes() throws {
        let proposal = try terms().proposal(signedBy: renter)
        let signed = try proposal.countersign(farmer: farmer)
        let back = try SignedContract(serialized: signed.serialized, difficulty: 4)
        #expect(back.contract == proposal.contract)
        #expect(back.renterEnvelope.body == proposal.envelope.body)
        #expect(back.renter.id == renter.id && back.farmer.id == farmer.id)

        // Altering the body breaks both signatures; it is refused.
        var altered = signed.message
        altered.renter.body[altered.renter.body.count - 3] ^= 1
        #expect(throws: ContractError.self) { _ = try SignedContract(verifying: altered, difficulty: 4) }
        // A countersignature by another key than the named farmer is refused.
        var swapped = signed.message
        let other = NodeIdentity.generate(difficulty: 4)
        swapped.farmerPublicKey = Data(other.publicKey.bytes)
        swapped.farmerSignature = Granary_SignedEnvelope(kind: .contract, body: signed.renterEnvelope.body, signer: other).signature
        #expect(throws: ContractError.self) { _ = try SignedContract(verifying: swapped, difficulty: 4) }
        // Only the named farmer can countersign; only the named renter can propose.
        #expect(throws: ContractError.self) { _ = try proposal.countersign(farmer: other) }
        #expect(throws: ContractError.self) { _ = try terms().proposal(signedBy: other) }
        // A renter-signed voucher verifies; a contract envelope is not a voucher.
        let v = try PaymentVoucher(contractID: proposal.contract.id, paymentChannelID: proposal.contract.paymentChannelID,
                                   cumulativeAmount: 5, sequence: 1).signed(by: renter)
        #expect(try SignedVoucher(verifying: v.envelope, difficulty: 4).voucher == v.voucher)
        #expect(throws: ContractError.self) { _ = try SignedVoucher(verifying: proposal.envelope, difficulty: 4) }
        #expect(v.supersedes(nil))
        var lower = v.voucher; lower.cumulativeAmount = 4; lower.sequence = 0
        #expect(v.supersedes(lower))
        #expect(!(try lower.signed(by: renter)).supersedes(v.voucher))
    }

    @Test func policyRefusesWithReasons() throws {
        let policy = ContractPolicy(minPricePerAudit: 5, maxDurationSeconds: 7200)
        let now = UInt64(Date().timeIntervalSince1970)
        try policy.check(terms(), farmerID: farmer.id, now: now, freeCapacity: 1 << 20)
        let cases: [(Contract, UInt64, String)] = [
            (terms(price: 4), 1 << 20, "below the minimum"),
            (terms(duration: 10_000), 1 << 20, "exceeds the maximum"),
            (terms(allowance: 2 << 20), 1 << 20, "exceeds free capacity"),
            (terms(farmerID: .random()), 1 << 20, "not this one"),
        ]
        for (contract, free, reason) in cases {
            do { try policy.check(contract, farmerID: farmer.id, now: now, freeCapacity: free); Issue.record("accepted: \(reason)") } catch {
                #expect(error.description.contains(reason), "\(error)")
            }
        }
    }
}
