import Foundation
import GranaryCore
import GRDB
import GranaryDatabase

/// The routing table on disk (SQLite through GRDB, WAL), so a restarted
/// node rejoins through the contacts it knew instead of only its bootstrap
/// list. Written as a whole snapshot: the table is at most a few thousand rows.
/// The same file keeps the signed records the node holds for others
/// (`RoutingTableStore+Records.swift`).
public final class RoutingTableStore: Sendable {
    let pool: DatabasePool
    public let path: String

    public init(path: String) throws(DHTError) {
        self.path = path
        do {
            var config = Configuration()
            config.busyMode = .timeout(5)
            pool = try DatabasePool(path: path, configuration: config)
            try Self.schema.migrate(pool)
        } catch {
            throw .storage("\(path): \(error)")
        }
    }

    /// The file's migrations, in order (append only; identifiers never change).
    public static var schema: VersionedSchema {
        var migrator = VersionedSchema()
        migrator.registerMigration("v1-contacts") { db in
            try db.create(table: "contact") { t in
                t.primaryKey("node_id", .blob)
                t.column("public_key", .blob).notNull()
                t.column("host", .text).notNull()
                t.column("port", .integer).notNull()
                t.column("last_seen", .double).notNull()
            }
        }
        // Records held for others, one row per storage key (the highest
        // sequence only), as the signed envelope received: verified again
        // at load, so a row altered on disk is dropped, not served.
        migrator.registerMigration("v2-records") { db in
            try db.create(table: "record") { t in
                t.primaryKey("storage_key", .blob)
                t.column("envelope", .blob).notNull()
                t.column("expires_at", .double).notNull()
            }
            try db.create(index: "record_expiry", on: "record", columns: ["expires_at"])
        }
        return migrator
    }

    /// Loads the saved contacts, skipping rows that no longer verify (a key
    /// whose proof of work is below the network's difficulty).
    public func load(difficulty: Int) throws(DHTError) -> [DHTContact] {
        do {
            return try pool.read { db in
                try Row.fetchAll(db, sql: "SELECT public_key, host, port FROM contact ORDER BY last_seen").compactMap { row in
                    let keyBytes: Data = row["public_key"]
                    guard let key = NodePublicKey(bytes: [UInt8](keyBytes)),
                          (try? key.validate(difficulty: difficulty)) != nil else { return nil }
                    return DHTContact(publicKey: key, address: DHTAddress(host: row["host"], port: row["port"]))
                }
            }
        } catch {
            throw .storage("\(path): \(error)")
        }
    }

    /// Replaces the saved table with `contacts` in one transaction.
    public func save(_ contacts: [DHTContact]) throws(DHTError) {
        do {
            try pool.write { db in
                try db.execute(sql: "DELETE FROM contact")
                let now = Date().timeIntervalSince1970
                for (i, c) in contacts.enumerated() {
                    try db.execute(sql: "INSERT OR REPLACE INTO contact (node_id, public_key, host, port, last_seen) VALUES (?, ?, ?, ?, ?)",
                                   arguments: [Data(c.id.bytes), Data(c.publicKey.bytes), c.address.host, c.address.port, now + Double(i) / 1e6])
                }
            }
        } catch {
            throw .storage("\(path): \(error)")
        }
    }
}
