import Foundation
import GranaryCore
import Logging

/// The result of one audit, as recorded in network.db.
public struct AuditOutcome: Sendable, Hashable {
    public enum Verdict: String, Sendable, Hashable, Codable {
        /// The leaf and its Merkle path match the stored root.
        case pass
        /// Wrong bytes, a bad proof, or the farmer says it lost the piece.
        case fail
        /// No answer in time, or the farmer could not be reached.
        case timeout
    }
    public var contract: Hash256
    public var farmer: Hash256
    public var piece: Hash256
    public var leaf: Int
    public var verdict: Verdict
    /// Amount paid for this audit (0 unless it passed and payments are on).
    public var paid: UInt64
    public var detail: String?
}

/// Audits every live contract at its own interval, jittered so audits do
/// not line up: a random stored piece, a random 4 KiB leaf, its Merkle path
/// checked against the root the renter kept. A pass pays the contract's
/// price with a voucher; a failure or timeout pays nothing. The clock and
/// the random choices are injected, so tests pick them.
public final class AuditScheduler: @unchecked Sendable {
    // A lock guards `nextDue`; audits themselves run outside it.
    private let lock = NSLock()
    private var nextDue: [Hash256: Date] = [:]
    let db: NetworkDatabase
    let book: FarmerBook
    let link: FarmerLink
    let clock: RenterClock
    let random: RandomSource
    let config: RenterConfiguration
    private let log = Logger(label: "granary.renter")

    init(db: NetworkDatabase, book: FarmerBook, link: FarmerLink, clock: RenterClock, random: RandomSource, config: RenterConfiguration) {
        self.db = db; self.book = book; self.link = link; self.clock = clock; self.random = random; self.config = config
    }

    private func jittered(_ interval: Double) -> Double { interval * (0.75 + 0.5 * random.unit()) }

    /// Audits the contracts whose (jittered) interval has passed.
    @discardableResult
    public func runDue() async -> [AuditOutcome] {
        let now = clock.now()
        guard let contracts = try? db.contracts() else { return [] }
        let due: [ContractRecord] = lock.withLock {
            var due: [ContractRecord] = []
            for c in contracts {
                if let at = nextDue[c.record.id] {
                    if at <= now { due.append(c.record) }
                } else {
                    // First sight of a contract: its first audit comes one jittered interval later.
                    nextDue[c.record.id] = now.addingTimeInterval(jittered(c.record.auditInterval))
                }
            }
            return due
        }
        return await audit(due)
    }

    /// Audits every live contract now, whatever its schedule.
    @discardableResult
    public func auditAll() async -> [AuditOutcome] {
        guard let contracts = try? db.contracts() else { return [] }
        return await audit(contracts.map(\.record))
    }

    private func audit(_ contracts: [ContractRecord]) async -> [AuditOutcome] {
        await withTaskGroup(of: AuditOutcome?.self) { group in
            for c in contracts where !book.isDisqualified(c.farmer.id) {
                group.addTask { await self.audit(c) }
            }
            var out: [AuditOutcome] = []
            for await o in group { if let o { out.append(o) } }
            return out
        }
    }

    /// One audit of one contract; nil when the contract holds no piece yet.
    public func audit(_ contract: ContractRecord) async -> AuditOutcome? {
        let now = clock.now()
        let next = now.addingTimeInterval(jittered(contract.auditInterval))
        lock.withLock { nextDue[contract.id] = next }
        guard let pieces = try? db.storedPieces(contract: contract.id), !pieces.isEmpty else { return nil }
        let piece = pieces[random.next(below: pieces.count)]
        let leafCount = MerkleTree.leafCount(byteCount: piece.size)
        let leaf = random.next(below: leafCount)
        var verdict = AuditOutcome.Verdict.fail
        var detail: String?
        let started = DispatchTime.now().uptimeNanoseconds
        do {
            let link = self.link
            let answer = try await withDeadline(config.requestTimeout) {
                try await link.audit(pieceID: piece.pieceID, leaf: leaf, contract: contract)
            }
            let ms = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6
            book.recordContact(piece.farmer, reached: true, latencyMs: ms)
            if answer.proof.leaves != leaf..<(leaf + 1) || answer.proof.leafCount != leafCount {
                detail = "proof is for leaves \(answer.proof.leaves) of \(answer.proof.leafCount), asked leaf \(leaf) of \(leafCount)"
            } else if !MerkleTree.verify(answer.proof, leafData: answer.leafData, root: piece.root) {
                detail = "leaf \(leaf) of piece \(piece.pieceID.short) does not match its root"
            } else {
                verdict = .pass
            }
        } catch let error as FarmerLinkError {
            switch error {
            case .unreachable: verdict = .timeout
            case .pieceNotFound, .refused, .badProof, .staleVoucher: verdict = .fail
            }
            detail = error.description
        } catch {
            verdict = .timeout
            detail = "\(error)"
        }
        if verdict == .timeout {
            book.recordContact(piece.farmer, reached: false)
            await link.reset(farmer: piece.farmer)
        } else {
            book.recordAudit(piece.farmer, passed: verdict == .pass)
        }
        let pay = verdict == .pass && config.payForAudits ? contract.pricePerAudit : 0
        var outcome = AuditOutcome(contract: contract.id, farmer: piece.farmer, piece: piece.pieceID, leaf: leaf,
                                   verdict: verdict, paid: 0, detail: detail)
        do {
            let (cumulative, sequence) = try db.recordAudit(contract: contract.id, farmer: piece.farmer, piece: piece.pieceID,
                                                            leaf: leaf, at: now, outcome: verdict.rawValue, pay: pay, detail: detail)
            outcome.paid = pay
            if pay > 0 {
                do {
                    let link = self.link
                    let timeout = config.requestTimeout
                    func send(_ cumulative: UInt64, _ sequence: UInt64) async throws {
                        try await withDeadline(timeout) {
                            try await link.pay(contract: contract, cumulative: cumulative, sequence: sequence)
                        }
                        try db.acknowledgeVoucher(contract: contract.id, sequence: sequence)
                    }
                    do {
                        try await send(cumulative, sequence)
                    } catch FarmerLinkError.staleVoucher(let farmerCumulative, let farmerSequence) {
                        // Our ledger is behind the farmer's (network.db came
                        // from an older snapshot): continue above its highest.
                        let next = try db.raiseVoucher(contract: contract.id, above: farmerCumulative, sequence: farmerSequence,
                                                       pay: pay, at: now)
                        log.notice("contract \(contract.id.short): ledger was behind the farmer's voucher (amount \(farmerCumulative)); continuing at \(next.cumulative)")
                        try await send(next.cumulative, next.sequence)
                    }
                } catch {
                    // The amount stays owed in network.db; the next voucher carries it (cumulative).
                    log.info("voucher for contract \(contract.id.short) not delivered: \(error)")
                }
            }
        } catch {
            log.error("could not record audit of \(contract.farmer): \(error)")
        }
        if verdict != .pass { log.info("audit of \(contract.farmer) \(verdict.rawValue): \(detail ?? "")") }
        return outcome
    }
}
