import Foundation
import GRDB
import GranaryContracts
import GranaryCore
import GranaryWire
import Logging

/// A contract as the farmer holds it.
public struct ContractRecord: Sendable {
    public enum State: String, Sendable { case active, expired, unpaid }
    public let contract: Contract
    public let state: State
    /// Unix seconds of the last accepted voucher (or of signing).
    public let lastPaid: UInt64
}

/// The farmer's contracts and vouchers, in the index database. Every change
/// is one transaction, so two sessions racing with vouchers for the same
/// contract cannot both win.
public struct ContractBook: Sendable {
    let db: DatabasePool
    let identity: NodeIdentity
    let policy: ContractPolicy
    let difficulty: Int

    static func record(_ row: Row, difficulty: Int) -> ContractRecord? {
        guard let signed = try? SignedContract(serialized: [UInt8](row["signed"] as Data), difficulty: 0) else { return nil }
        return ContractRecord(contract: signed.contract, state: ContractRecord.State(rawValue: row["state"]) ?? .expired,
                              lastPaid: UInt64(max(0, row["last_paid"] as Int64)))
    }

    public func contract(_ id: Hash256) throws -> ContractRecord? {
        try db.read { try Row.fetchOne($0, sql: "SELECT signed, state, last_paid FROM contracts WHERE id = ?", arguments: [Data(id.bytes)]) }
            .flatMap { Self.record($0, difficulty: difficulty) }
    }

    public func activeContracts() throws -> [ContractRecord] {
        try db.read { try Row.fetchAll($0, sql: "SELECT signed, state, last_paid FROM contracts WHERE state = 'active'") }
            .compactMap { Self.record($0, difficulty: difficulty) }
    }

    /// Sum of the highest voucher of every contract: what renters owe this farmer.
    public func earnings() throws -> UInt64 {
        UInt64(max(0, try db.read { try Int64.fetchOne($0, sql: "SELECT COALESCE(SUM(cumulative), 0) FROM vouchers") } ?? 0))
    }

    /// The live contract `id` held with `renter`, or why not.
    func liveContract(_ id: Hash256, renter: Hash256, now: UInt64) throws(FarmerError) -> Contract {
        let record: ContractRecord?
        do { record = try contract(id) } catch { throw .internal("contract lookup", error) }
        guard let record, record.contract.renterID == renter else {
            throw FarmerError(.unknownContract, "no contract \(id.short) with renter \(renter.short)")
        }
        guard record.state == .active, record.contract.endTime > now else {
            throw FarmerError(.contractExpired, "contract \(id.short) is \(record.state == .active ? "expired" : record.state.rawValue)")
        }
        return record.contract
    }

    private func verifyProposal(_ envelope: Granary_SignedEnvelope, peer: NodePublicKey) throws(FarmerError) -> ContractProposal {
        let proposal: ContractProposal
        do { proposal = try ContractProposal(verifying: envelope, difficulty: difficulty) } catch {
            switch error {
            case .envelope(.badSignature), .envelope(.badPublicKey), .signerMismatch:
                throw FarmerError(.badSignature, error.description)
            default: throw FarmerError(.malformed, error.description)
            }
        }
        guard proposal.renter.id == peer.id else {
            throw FarmerError(.badSignature, "contract is signed by \(proposal.renter.id.short), not by this session's renter \(peer.id.short)")
        }
        return proposal
    }

    /// Checks and countersigns a new contract, and records it.
    func accept(_ envelope: Granary_SignedEnvelope, peer: NodePublicKey, now: UInt64, freeCapacity: UInt64) throws(FarmerError) -> SignedContract {
        let proposal = try verifyProposal(envelope, peer: peer)
        guard proposal.contract.revision == 0 else {
            throw FarmerError(.contractRejected, "a new contract must have revision 0 (use renew for revision \(proposal.contract.revision))")
        }
        do { try policy.check(proposal.contract, farmerID: identity.id, now: now, freeCapacity: freeCapacity) } catch {
            throw FarmerError(.contractRejected, error.description)
        }
        let signed: SignedContract
        do { signed = try proposal.countersign(farmer: identity) } catch { throw FarmerError(.contractRejected, error.description) }
        let c = signed.contract
        do {
            try db.write { db in
                if try Bool.fetchOne(db, sql: "SELECT 1 FROM contracts WHERE id = ?", arguments: [Data(c.id.bytes)]) ?? false {
                    throw FarmerError(.alreadyExists, "contract \(c.id.short) already exists; renew it instead")
                }
                try db.execute(sql: """
                    INSERT INTO contracts (id, revision, renter_id, allowance, start_time, end_time, price_per_audit,
                        audit_interval, channel_id, signed, state, last_paid, created)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?)
                    """, arguments: [Data(c.id.bytes), Int64(clamping: c.revision), Data(c.renterID.bytes),
                                     Int64(clamping: c.allowanceBytes), Int64(clamping: c.startTime), Int64(clamping: c.endTime),
                                     Int64(clamping: c.pricePerAudit), Int64(clamping: c.auditIntervalSeconds),
                                     Data(c.paymentChannelID.bytes), Data(signed.serialized), Int64(clamping: now), Int64(clamping: now)])
            }
        } catch let e as FarmerError { throw e } catch { throw .internal("recording contract", error) }
        return signed
    }

    /// Checks and countersigns a renewal of a live contract (same ID,
    /// renter and channel, higher revision); the pieces stay.
    func renew(_ envelope: Granary_SignedEnvelope, peer: NodePublicKey, now: UInt64, freeCapacity: UInt64, bytesUsed: UInt64) throws(FarmerError) -> SignedContract {
        let proposal = try verifyProposal(envelope, peer: peer)
        let new = proposal.contract
        let old = try liveContract(new.id, renter: peer.id, now: now)
        guard new.revision > old.revision else {
            throw FarmerError(.contractRejected, "renewal revision \(new.revision) is not above the current \(old.revision)")
        }
        guard new.paymentChannelID == old.paymentChannelID, new.farmerID == old.farmerID else {
            throw FarmerError(.contractRejected, "a renewal may not change the farmer or the payment channel")
        }
        guard new.allowanceBytes >= bytesUsed else {
            throw FarmerError(.contractRejected, "renewed allowance \(new.allowanceBytes) is below the \(bytesUsed) bytes the contract already uses")
        }
        // The renewal may only claim as much new room as is free.
        let extra = new.allowanceBytes > old.allowanceBytes ? new.allowanceBytes - old.allowanceBytes : 0
        var checked = new
        checked.allowanceBytes = extra
        do { try policy.check(checked, farmerID: identity.id, now: now, freeCapacity: freeCapacity) } catch {
            throw FarmerError(.contractRejected, error.description)
        }
        let signed: SignedContract
        do { signed = try proposal.countersign(farmer: identity) } catch { throw FarmerError(.contractRejected, error.description) }
        do {
            try db.write { db in
                try db.execute(sql: """
                    UPDATE contracts SET revision = ?, allowance = ?, start_time = ?, end_time = ?, price_per_audit = ?,
                        audit_interval = ?, signed = ? WHERE id = ? AND revision < ?
                    """, arguments: [Int64(clamping: new.revision), Int64(clamping: new.allowanceBytes), Int64(clamping: new.startTime),
                                     Int64(clamping: new.endTime), Int64(clamping: new.pricePerAudit),
                                     Int64(clamping: new.auditIntervalSeconds), Data(signed.serialized), Data(new.id.bytes),
                                     Int64(clamping: new.revision)])
                if db.changesCount == 0 { throw FarmerError(.contractRejected, "contract changed while renewing; retry") }
            }
        } catch let e as FarmerError { throw e } catch { throw .internal("recording renewal", error) }
        return signed
    }

    /// Keeps the voucher if it is the new highest valid one for its contract.
    func acceptVoucher(_ envelope: Granary_SignedEnvelope, peer: NodePublicKey, now: UInt64) throws(FarmerError) -> PaymentVoucher {
        let signed: SignedVoucher
        do { signed = try SignedVoucher(verifying: envelope, difficulty: difficulty) } catch {
            switch error {
            case .envelope(.badSignature), .envelope(.badPublicKey): throw FarmerError(.badSignature, "voucher: \(error.description)")
            default: throw FarmerError(.malformed, "voucher: \(error.description)")
            }
        }
        let v = signed.voucher
        let contract = try liveContract(v.contractID, renter: peer.id, now: now)
        guard signed.signer.id == contract.renterID else {
            throw FarmerError(.badSignature, "voucher is signed by \(signed.signer.id.short), not by the contract's renter")
        }
        guard v.paymentChannelID == contract.paymentChannelID else {
            throw FarmerError(.malformed, "voucher names channel \(v.paymentChannelID.short), the contract's is \(contract.paymentChannelID.short)")
        }
        do {
            try db.write { db in
                if let row = try Row.fetchOne(db, sql: "SELECT cumulative, sequence FROM vouchers WHERE contract_id = ?", arguments: [Data(v.contractID.bytes)]) {
                    let amount = UInt64(max(0, row["cumulative"] as Int64)), sequence = UInt64(max(0, row["sequence"] as Int64))
                    guard v.cumulativeAmount > amount, v.sequence > sequence else {
                        var error = FarmerError(.staleVoucher, "voucher (amount \(v.cumulativeAmount), sequence \(v.sequence)) is not above the last accepted (amount \(amount), sequence \(sequence))")
                        var last = Granary_VoucherAccepted()
                        last.contractID = Data(v.contractID.bytes)
                        last.cumulativeAmount = amount
                        last.sequence = sequence
                        error.lastVoucher = last
                        throw error
                    }
                }
                try db.execute(sql: "INSERT OR REPLACE INTO vouchers (contract_id, cumulative, sequence, envelope, received_at) VALUES (?, ?, ?, ?, ?)",
                               arguments: [Data(v.contractID.bytes), Int64(clamping: v.cumulativeAmount), Int64(clamping: v.sequence),
                                           try envelope.serializedData(), Int64(clamping: now)])
                try db.execute(sql: "UPDATE contracts SET last_paid = ? WHERE id = ?", arguments: [Int64(clamping: now), Data(v.contractID.bytes)])
            }
        } catch let e as FarmerError { throw e } catch { throw .internal("recording voucher", error) }
        return v
    }

    func setState(_ id: Hash256, _ state: ContractRecord.State) throws {
        try db.write { try $0.execute(sql: "UPDATE contracts SET state = ? WHERE id = ?", arguments: [state.rawValue, Data(id.bytes)]) }
    }
}
