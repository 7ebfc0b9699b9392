import Foundation
import GranaryCore
import GranaryWire

extension DHTNode {
    /// Signs a record under this node's identity and stores it at the k
    /// nodes closest to BLAKE2b(ownerID || key); the node republishes it
    /// every republish interval until it expires. A later call with a
    /// higher `sequence` replaces it everywhere. Returns how many remote
    /// nodes accepted it (0 in a network of one).
    @discardableResult
    public func putRecord(key: [UInt8], value: [UInt8], sequence: UInt64, ttl: Duration) async throws(DHTError) -> Int {
        try await putRecord(key: key, value: value, sequence: sequence, ttl: ttl, signedBy: identity)
    }

    /// `putRecord` signed by another key than this node's: the record's
    /// owner is `owner` (a bare key is accepted only under
    /// `SignedRecord.keyOnlyPrefix`). This node republishes it like its own.
    @discardableResult
    public func putRecord(key: [UInt8], value: [UInt8], sequence: UInt64, ttl: Duration,
                          signedBy owner: NodeIdentity) async throws(DHTError) -> Int {
        let seconds = min(Double(ttl.components.seconds), SignedRecord.maxLifetime(forKey: key))
        let record = try SignedRecord(owner: owner, key: key, value: value, sequence: sequence,
                                      expiresAt: Date().addingTimeInterval(seconds))
        if let old = ownRecords[record.storageKey], old.sequence > sequence {
            throw .recordRejected("sequence \(sequence) is lower than the \(old.sequence) already published")
        }
        ownRecords[record.storageKey] = record
        return await replicate(record)
    }

    /// Stops republishing a record this node published (it lives on at
    /// its holders until it expires).
    public func forgetRecord(owner: Hash256, key: [UInt8]) {
        ownRecords[SignedRecord.storageKey(owner: owner, key: key)] = nil
    }

    /// Sends STORE of `record` to the k nodes closest to its storage key.
    func replicate(_ record: SignedRecord) async -> Int {
        let targets = await lookup(target: record.storageKey, mode: .closest).closest
        var m = Granary_DhtStore()
        m.record = record.envelope
        let message = Granary_DhtDatagram.OneOf_Message.store(m)
        return await withTaskGroup(of: Bool.self) { group in
            for c in targets { group.addTask {
                if case let .storeResult(r)? = await self.request(c, message)?.message { return r.stored }
                return false
            } }
            var n = 0
            for await ok in group where ok { n += 1 }
            return n
        }
    }

    /// The newest unexpired record `owner` published under `key`, verified
    /// (owner's signature, proof of work, expiry), or nil when none is found.
    public func getRecord(owner: Hash256, key: [UInt8]) async -> SignedRecord? {
        let storageKey = SignedRecord.storageKey(owner: owner, key: key)
        let now = Date()
        var best = [records[storageKey], ownRecords[storageKey]].compactMap { $0 }
            .filter { $0.expiresAt > now }.max { $0.sequence < $1.sequence }
        if ownRecords[storageKey] == nil || best == nil {
            let found = await lookup(target: storageKey, mode: .value(owner: owner, key: key)).record
            if let found, found.sequence >= (best?.sequence ?? 0) { best = found }
        }
        return best
    }

    /// STORE: keeps a record only when it verifies, fits the size bound
    /// and is newer than the one held (only the highest sequence of a key
    /// is kept, so a replayed older record is refused, also after a
    /// restart). Returns false for an older or equal sequence.
    func accept(record envelope: Granary_SignedEnvelope) throws(DHTError) -> Bool {
        let size = (try? envelope.serializedData())?.count ?? Int.max
        guard size <= SignedRecord.maxEnvelopeBytes else {
            throw .recordRejected("a record of \(size) bytes exceeds the \(SignedRecord.maxEnvelopeBytes) a node stores")
        }
        let record = try SignedRecord(verifying: envelope, difficulty: configuration.difficulty)
        let key = record.storageKey
        if let held = records[key], held.sequence >= record.sequence {
            let same = held.envelope == envelope
            if same { recordArrived[key] = .now }
            return same
        }
        if records[key] == nil, records.count >= configuration.maxStoredRecords {
            purgeExpiredRecords()
            if records.count >= configuration.maxStoredRecords { try makeRoom(for: key) }
        }
        records[key] = record
        recordArrived[key] = .now
        if let store {
            do { try store.saveRecord(record) } catch { logger.warning("record \(key.short) kept in memory only: \(error)") }
        }
        return true
    }

    /// When full, a node keeps the records whose keys are closest to its
    /// own ID, the ones Kademlia makes it responsible for: a new record
    /// closer than the farthest one held takes its place, any other is
    /// refused. A flood of records (key-only ones need no proof of work)
    /// cannot push out those that belong here.
    private func makeRoom(for key: Hash256) throws(DHTError) {
        guard let farthest = records.keys.max(by: { ($0 ^ id) < ($1 ^ id) }), (key ^ id) < (farthest ^ id) else {
            throw .recordRejected("this node holds \(records.count) records, its limit, all closer to it than this one")
        }
        records[farthest] = nil
        recordArrived[farthest] = nil
        if let store {
            do { try store.deleteRecord(storageKey: farthest) } catch { logger.warning("cannot delete record \(farthest.short): \(error)") }
        }
    }

    func purgeExpiredRecords() {
        let now = Date()
        records = records.filter { $0.value.expiresAt > now }
        recordArrived = recordArrived.filter { records[$0.key] != nil }
        ownRecords = ownRecords.filter { $0.value.expiresAt > now }
        if let store {
            do { try store.deleteExpiredRecords(now: now) } catch { logger.warning("cannot delete expired records: \(error)") }
        }
    }

    /// Reads back the records kept in routing.db (at start): those that
    /// still verify are served again; expired, altered or surplus rows are
    /// deleted, each with a log line.
    func loadStoredRecords() {
        guard let store else { return }
        do {
            let (kept, dropped) = try store.loadRecords(difficulty: configuration.difficulty, limit: configuration.maxStoredRecords)
            for d in dropped { logger.warning("dropped stored \(d)") }
            for r in kept where records[r.storageKey].map({ $0.sequence < r.sequence }) ?? true { records[r.storageKey] = r }
            counters.update { $0.recordsLoaded += kept.count; $0.recordsDroppedAtLoad += dropped.count }
            if !kept.isEmpty || !dropped.isEmpty {
                logger.info("loaded \(kept.count) records from \(store.path), dropped \(dropped.count)")
            }
        } catch {
            logger.warning("cannot load stored records: \(error)")
        }
    }

    /// Kademlia's republish: owners re-store their records; holders
    /// replicate what they keep to the current k closest (nodes come and
    /// go), except records stored here within the last interval (another
    /// holder just republished those).
    func republish() async {
        purgeExpiredRecords()
        let fresh = ContinuousClock.now - configuration.republishInterval
        let held = records.filter { key, _ in
            guard let arrived = recordArrived[key] else { return true }
            return arrived < fresh
        }.values
        for record in Array(ownRecords.values) + Array(held) where !stopped {
            _ = await replicate(record)
        }
    }

    /// Republishes now, as the periodic timer does (tests; an operator's nudge).
    public func republishNow() async { await republish() }

    /// The records this node holds for others (not its own), newest sequence per key.
    public func heldRecords() -> [SignedRecord] { Array(records.values) }
}
