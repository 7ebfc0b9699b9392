import GranaryCore
import GranaryWire

/// Typed contract and payment calls for the renter engine: the wire-level
/// calls of `TransferClient` plus every check the renter owes the farmer's
/// answer.
extension TransferClient {
    /// Proposes a renter-signed contract; returns it countersigned, after
    /// checking both signatures and that the farmer signed exactly the
    /// proposed bytes.
    public func proposeContract(_ proposal: ContractProposal,
                                difficulty: Int = NodeIdentity.configuredDifficulty) async throws -> SignedContract {
        let answer = try await proposeContract(envelope: proposal.envelope)
        return try Self.checkCountersigned(answer, proposal: proposal, difficulty: difficulty)
    }

    /// Renews a contract (same ID, higher revision, new end); returns the
    /// countersigned renewal. The farmer keeps the contract's pieces.
    public func renewContract(_ proposal: ContractProposal,
                              difficulty: Int = NodeIdentity.configuredDifficulty) async throws -> SignedContract {
        let answer = try await renewContract(envelope: proposal.envelope)
        return try Self.checkCountersigned(answer, proposal: proposal, difficulty: difficulty)
    }

    /// Sends a signed voucher; the farmer keeps it if it is its new highest.
    public func sendVoucher(_ voucher: SignedVoucher) async throws(TransferError) -> VoucherReceipt {
        try await sendVoucher(envelope: voucher.envelope)
    }

    static func checkCountersigned(_ answer: Granary_SignedContract, proposal: ContractProposal, difficulty: Int) throws -> SignedContract {
        let signed = try SignedContract(verifying: answer, difficulty: difficulty)
        guard signed.renterEnvelope.body == proposal.envelope.body, signed.renter == proposal.renter else {
            throw TransferError.protocolViolation("farmer countersigned a different contract than proposed")
        }
        return signed
    }
}
