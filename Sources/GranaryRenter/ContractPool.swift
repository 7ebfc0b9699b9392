import Foundation
import GranaryCore
import Logging

/// Keeps enough live contracts that no upload waits for an offer round:
/// forms new ones through the market when farmers are missing, renews those
/// near their end, and releases those of farmers it no longer trusts
/// (disqualified or long offline), replacing them.
public final class ContractPool: Sendable {
    let db: NetworkDatabase
    let book: FarmerBook
    let link: FarmerLink
    let source: ContractSource
    let clock: RenterClock
    let config: RenterConfiguration
    private let log = Logger(label: "granary.renter")
    /// The start-up fill, the connector and the maintenance loop all call
    /// `maintain`: two rounds at once each offered for the same missing
    /// farmers, and three farmers signed two contracts each (seen with
    /// 0.5 s of latency on every farmer's host, where rounds run long).
    private let rounds = SingleFlight<Int>()

    init(db: NetworkDatabase, book: FarmerBook, link: FarmerLink, source: ContractSource, clock: RenterClock, config: RenterConfiguration) {
        self.db = db; self.book = book; self.link = link; self.source = source; self.clock = clock; self.config = config
    }

    /// Contracts placement can use right now.
    public func liveContracts() throws -> [NetworkDatabase.ContractRow] {
        let now = clock.now()
        return try db.contracts().filter {
            $0.record.end > now && !book.isDisqualified($0.record.farmer.id) && !book.isOffline($0.record.farmer.id)
        }
    }

    /// One round: release, renew, top up. Returns the number of live
    /// contracts after it. A call while a round runs shares that round.
    @discardableResult
    public func maintain() async -> Int {
        await rounds.run { [self] in await maintainRound() }
    }

    private func maintainRound() async -> Int {
        let now = clock.now()
        // Release contracts of disqualified farmers and expired ones: no more audits or payments.
        for c in (try? db.contracts()) ?? [] {
            if book.isDisqualified(c.record.farmer.id) {
                log.info("releasing contract \(c.record.id.short) with disqualified farmer \(c.record.farmer)")
                try? db.setContractState(c.record.id, "released")
            } else if c.record.end <= now {
                try? db.setContractState(c.record.id, "expired")
            }
        }
        // Renew before expiry.
        for c in (try? liveContracts()) ?? [] {
            let total = c.record.end.timeIntervalSince(c.record.start)
            guard c.record.end.timeIntervalSince(now) < total * config.renewWhenRemaining else { continue }
            do {
                let link = self.link
                let newEnd = now.addingTimeInterval(config.terms.duration)
                let renewed = try await withDeadline(config.requestTimeout) { try await link.renew(contract: c.record, newEnd: newEnd) }
                try db.addContract(renewed)
                log.info("renewed contract \(c.record.id.short) with \(c.record.farmer) until \(renewed.end)")
            } catch {
                log.info("renewal of contract \(c.record.id.short) with \(c.record.farmer) failed: \(error)")
            }
        }
        // Top up with new farmers.
        guard let live = try? liveContracts() else { return 0 }
        // Usable while an eighth of its allowance is free (contracts are sized to each farmer's space).
        let usable = Set(live.filter { $0.free >= min(config.terms.allowance, $0.record.allowance) / 8 }.map(\.record.farmer.id))
        let missing = config.targetContracts - usable.count
        guard missing > 0 else { return usable.count }
        let excluded = Set(book.all.filter { $0.disqualified || book.isOffline($0.contact.id) }.map(\.contact.id)).union(usable)
        do {
            let formed = try await source.formContracts(count: missing, terms: config.terms, excluding: excluded)
            for c in formed where !excluded.contains(c.farmer.id) {
                try book.add(c.farmer)
                try db.addContract(c)
                log.info("contract \(c.id.short) with \(c.farmer): \(c.allowance) bytes until \(c.end)")
            }
            return usable.count + formed.count
        } catch {
            log.info("forming contracts failed: \(error)")
            return usable.count
        }
    }

    /// Rounds of `maintain` until at least `minimum` farmers have live
    /// contracts, or `timeout` passes.
    public func fill(minimum: Int, timeout: Double) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        var have = 0
        while true {
            have = await maintain()
            if have >= minimum { return }
            if Date() >= deadline { break }
            try await Task.sleep(nanoseconds: 500_000_000)
        }
        throw SegmentStoreError.unavailable("only \(have) farmers accepted contracts within \(Int(timeout)) s, \(minimum) are needed")
    }
}
