import Foundation
import GranaryCore
import Logging

/// The renter's view of every farmer it has dealt with: reputation,
/// uptime, latency, disqualification. Kept in memory for the hot paths
/// (placement, reads) and written through to network.db when it changes
/// what matters (audits, disqualification); contact and latency updates
/// are flushed with the next maintenance round.
public final class FarmerBook: @unchecked Sendable {
    // A lock, not an actor: placement and read ranking consult it synchronously.
    private let lock = NSLock()
    private var farmers: [Hash256: FarmerRow] = [:]
    /// When a farmer began failing every contact (nil while it answers).
    private var failingSince: [Hash256: Date] = [:]
    /// Until when a farmer counts as slow: it let a read run past the hedge
    /// delay (a frozen process, a congested link). Later reads go around it
    /// instead of each waiting a hedge delay for it again.
    private var slowUntil: [Hash256: Date] = [:]
    /// How long a slow farmer is gone around before it is tried again.
    static let slowPenaltySeconds: Double = 30
    private var dirty: Set<Hash256> = []
    private let db: NetworkDatabase
    private let clock: RenterClock
    private let offlineGrace: Double
    private let log = Logger(label: "granary.renter")

    init(db: NetworkDatabase, clock: RenterClock, offlineGrace: Double) throws {
        self.db = db
        self.clock = clock
        self.offlineGrace = offlineGrace
        for f in try db.farmers() { farmers[f.contact.id] = f }
    }

    func add(_ contact: FarmerContact) throws {
        try db.upsertFarmer(contact)
        lock.lock()
        if farmers[contact.id] == nil {
            farmers[contact.id] = FarmerRow(contact: contact, reputation: Reputation(), disqualified: false, lastSeen: nil, lastFailure: nil)
        } else {
            farmers[contact.id]!.contact.address = contact.address
        }
        lock.unlock()
    }

    public func farmer(_ id: Hash256) -> FarmerRow? { lock.lock(); defer { lock.unlock() }; return farmers[id] }
    public var all: [FarmerRow] { lock.lock(); defer { lock.unlock() }; return Array(farmers.values) }

    public func isDisqualified(_ id: Hash256) -> Bool { farmer(id)?.disqualified ?? false }

    /// Failing every contact for longer than the offline grace.
    public func isOffline(_ id: Hash256) -> Bool {
        lock.lock(); defer { lock.unlock() }
        guard let since = failingSince[id] else { return false }
        return clock.now().timeIntervalSince(since) >= offlineGrace
    }

    /// How long every contact with this farmer has failed; nil while it answers.
    public func failingFor(_ id: Hash256) -> Double? {
        lock.lock(); defer { lock.unlock() }
        return failingSince[id].map { max(0, clock.now().timeIntervalSince($0)) }
    }

    /// Currently failing contacts (not necessarily for long).
    public func isFailing(_ id: Hash256) -> Bool { lock.lock(); defer { lock.unlock() }; return failingSince[id] != nil }

    /// How long new pieces go around a farmer after a failed contact. Then
    /// it is tried again (last, by its rank): nothing else may contact it
    /// for an hour (audits), and a farmer that was only cut off or frozen
    /// for a while must take pieces again without waiting for that.
    static let failedRetrySeconds: Double = 20

    /// Failing, and its last failure recent: not to be given new pieces yet.
    public func isRecentlyFailed(_ id: Hash256) -> Bool {
        lock.lock(); defer { lock.unlock() }
        guard failingSince[id] != nil else { return false }
        guard let last = farmers[id]?.lastFailure else { return true }
        return clock.now().timeIntervalSince(last) < Self.failedRetrySeconds
    }

    /// Slow recently (see `recordSlow`): not asked first for data.
    public func isSlow(_ id: Hash256) -> Bool {
        lock.lock(); defer { lock.unlock() }
        return slowUntil[id].map { clock.now() < $0 } ?? false
    }

    /// A request to this farmer was still unanswered after `waitedMs`
    /// (past the hedge delay) when the read finished without it. Not a
    /// failure (nothing was refused, uptime is untouched), but its latency
    /// counts and it is gone around for a while.
    func recordSlow(_ id: Hash256, waitedMs: Double) {
        lock.lock()
        if var f = farmers[id] {
            f.reputation.recordLatency(milliseconds: waitedMs)
            farmers[id] = f
            dirty.insert(id)
            if slowUntil[id].map({ clock.now() >= $0 }) ?? true {
                log.info("farmer \(f.contact) slow: no answer within \(Int(waitedMs)) ms; reads go around it for \(Int(Self.slowPenaltySeconds)) s")
            }
            slowUntil[id] = clock.now().addingTimeInterval(Self.slowPenaltySeconds)
        }
        lock.unlock()
    }

    /// Whether pieces on this farmer count toward a segment's health.
    public func isHealthy(_ id: Hash256) -> Bool { !isDisqualified(id) && !isOffline(id) }

    public func rank(_ id: Hash256) -> Double {
        lock.lock(); defer { lock.unlock() }
        guard let f = farmers[id], !f.disqualified else { return 0 }
        let slow = slowUntil[id].map { clock.now() < $0 } ?? false
        return f.reputation.rank * (failingSince[id] == nil && !slow ? 1 : 0.05)
    }

    func recordContact(_ id: Hash256, reached: Bool, latencyMs: Double? = nil) {
        lock.lock()
        let now = clock.now()
        if var f = farmers[id] {
            f.reputation.recordContact(reached: reached)
            if reached {
                f.lastSeen = now
                if let latencyMs { f.reputation.recordLatency(milliseconds: latencyMs) }
                failingSince[id] = nil
            } else {
                f.lastFailure = now
                if failingSince[id] == nil { failingSince[id] = now }
            }
            farmers[id] = f
            dirty.insert(id)
        }
        lock.unlock()
    }

    /// Records an audit outcome and disqualifies below the threshold;
    /// written to the database at once. Returns whether the farmer is now disqualified.
    @discardableResult
    func recordAudit(_ id: Hash256, passed: Bool) -> Bool {
        lock.lock()
        guard var f = farmers[id] else { lock.unlock(); return false }
        f.reputation.recordAudit(passed: passed)
        if !f.disqualified && f.reputation.shouldDisqualify {
            f.disqualified = true
            log.warning("farmer \(f.contact) disqualified: audit score \(String(format: "%.2f", f.reputation.auditScore))")
        }
        farmers[id] = f
        dirty.remove(id)
        lock.unlock()
        try? db.saveFarmer(f)
        return f.disqualified
    }

    /// Writes pending contact/latency updates.
    func flush() {
        lock.lock()
        let rows = dirty.compactMap { farmers[$0] }
        dirty.removeAll()
        lock.unlock()
        for r in rows { try? db.saveFarmer(r) }
    }
}
