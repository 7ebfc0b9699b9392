import Foundation
import GranaryCore
import GranaryWire
import GRDB

/// The signed records a node holds for others, kept in routing.db so a
/// restarted node serves them again (a network whose every node restarts
/// keeps its records). One row per storage key: the highest sequence only.
extension RoutingTableStore {
    /// A stored row that was not loaded, and why (it is deleted).
    public struct DroppedRecord: Sendable, CustomStringConvertible {
        public var storageKey: String
        public var reason: String
        public var description: String { "record \(storageKey.prefix(8)): \(reason)" }
    }

    /// The stored records that still verify (signature, owner's proof of
    /// work at `difficulty`, size, expiry, storage key), at most `limit`
    /// of them, the longest-lived first. Every other row is deleted and
    /// named in `dropped`.
    public func loadRecords(difficulty: Int, limit: Int, now: Date = Date()) throws(DHTError)
        -> (records: [SignedRecord], dropped: [DroppedRecord]) {
        do {
            return try pool.write { db in
                var kept: [SignedRecord] = []
                var dropped: [(key: Data, reason: String)] = []
                let rows = try Row.fetchCursor(db, sql: "SELECT storage_key, envelope FROM record ORDER BY expires_at DESC")
                while let row = try rows.next() {
                    let keyData: Data = row["storage_key"]
                    let bytes: Data = row["envelope"]
                    if kept.count >= limit {
                        dropped.append((keyData, "over this node's limit of \(limit) records"))
                        continue
                    }
                    let (record, why) = Self.verify(storageKey: keyData, envelope: bytes, difficulty: difficulty, now: now)
                    if let record { kept.append(record) } else { dropped.append((keyData, why)) }
                }
                for d in dropped { try db.execute(sql: "DELETE FROM record WHERE storage_key = ?", arguments: [d.key]) }
                return (kept, dropped.map { DroppedRecord(storageKey: Hex.encode([UInt8]($0.key)), reason: $0.reason) })
            }
        } catch {
            throw .storage("\(path): \(error)")
        }
    }

    /// The record a row holds when it verifies, else nil and why not.
    private static func verify(storageKey: Data, envelope bytes: Data, difficulty: Int, now: Date) -> (SignedRecord?, String) {
        guard bytes.count <= SignedRecord.maxEnvelopeBytes else {
            return (nil, "\(bytes.count) bytes, more than the \(SignedRecord.maxEnvelopeBytes) a record may take")
        }
        let envelope: Granary_SignedEnvelope
        do { envelope = try Granary_SignedEnvelope(serializedBytes: bytes) } catch { return (nil, "not a signed envelope") }
        let record: SignedRecord
        do { record = try SignedRecord(verifying: envelope, difficulty: difficulty, now: now) } catch {
            return (nil, "\(error)")
        }
        guard Data(record.storageKey.bytes) == storageKey else {
            return (nil, "stored under another key than its owner and key give")
        }
        return (record, "")
    }

    /// Keeps `record` (replacing the row of its storage key).
    public func saveRecord(_ record: SignedRecord) throws(DHTError) {
        do {
            let bytes = try record.envelope.serializedData()
            try pool.write { db in
                try db.execute(sql: "INSERT OR REPLACE INTO record (storage_key, envelope, expires_at) VALUES (?, ?, ?)",
                               arguments: [Data(record.storageKey.bytes), bytes, record.expiresAt.timeIntervalSince1970])
            }
        } catch {
            throw .storage("\(path): \(error)")
        }
    }

    /// Deletes the row of one storage key.
    public func deleteRecord(storageKey: Hash256) throws(DHTError) {
        do {
            try pool.write { db in
                try db.execute(sql: "DELETE FROM record WHERE storage_key = ?", arguments: [Data(storageKey.bytes)])
            }
        } catch {
            throw .storage("\(path): \(error)")
        }
    }

    /// Deletes the rows that expired by `now`; returns how many.
    @discardableResult
    public func deleteExpiredRecords(now: Date = Date()) throws(DHTError) -> Int {
        do {
            return try pool.write { db in
                try db.execute(sql: "DELETE FROM record WHERE expires_at <= ?", arguments: [now.timeIntervalSince1970])
                return db.changesCount
            }
        } catch {
            throw .storage("\(path): \(error)")
        }
    }

    /// How many records are stored.
    public func recordCount() throws(DHTError) -> Int {
        do { return try pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM record") ?? 0 } } catch {
            throw .storage("\(path): \(error)")
        }
    }
}
