import Foundation
import GranaryContracts
import GranaryCore

extension ContractTerms {
    /// The contract these terms propose to `farmer` at `pricePerAudit`,
    /// starting `now`, on a fresh payment channel. Every contract source
    /// drafts through here, so market and direct contracts agree.
    func proposal(renter: Hash256, farmer: Hash256, pricePerAudit: UInt64,
                  now: UInt64 = UInt64(Date().timeIntervalSince1970)) -> Contract {
        Contract(renterID: renter, farmerID: farmer, allowanceBytes: UInt64(allowance),
                 startTime: now, endTime: now + UInt64(duration), pricePerAudit: pricePerAudit,
                 auditIntervalSeconds: UInt64(max(1, auditInterval)), paymentChannelID: .random())
    }
}
