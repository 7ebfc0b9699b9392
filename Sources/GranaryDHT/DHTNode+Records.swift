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
        let seconds = min(Double(ttl.components.seconds), SignedRecord.maxLifetime)
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

    /// STORE: keeps a record only when it verifies and is newer than the
    /// one held. Returns false for an older or equal sequence.
    func accept(record envelope: Granary_SignedEnvelope) throws(DHTError) -> Bool {
        let record = try SignedRecord(verifying: envelope, difficulty: configuration.difficulty)
        let key = record.storageKey
        if let held = records[key], held.sequence >= record.sequence { return held.envelope == envelope }
        if records[key] == nil, records.count >= configuration.maxStoredRecords {
            purgeExpiredRecords()
            guard records.count < configuration.maxStoredRecords else {
                throw .recordRejected("this node holds \(records.count) records, its limit")
            }
        }
        records[key] = record
        return true
    }

    func purgeExpiredRecords() {
        let now = Date()
        records = records.filter { $0.value.expiresAt > now }
        ownRecords = ownRecords.filter { $0.value.expiresAt > now }
    }

    /// Owners re-store their records; holders replicate what they keep to
    /// the current k closest (nodes come and go).
    func republish() async {
        purgeExpiredRecords()
        for record in Array(ownRecords.values) + Array(records.values) where !stopped {
            _ = await replicate(record)
        }
    }
}
