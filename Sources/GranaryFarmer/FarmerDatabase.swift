import Foundation
import GRDB
import GranaryDatabase

/// The farmer's index (farmer.db, SQLite in WAL mode): contracts, pieces
/// (with each piece's Merkle leaf hashes, so audits and range proofs
/// never reread a whole piece) and the highest voucher per contract.
enum FarmerDatabase {
    static func open(at path: String) throws -> DatabasePool {
        var config = Configuration()
        config.busyMode = .timeout(10)
        let pool = try DatabasePool(path: path, configuration: config)
        try migrator.migrate(pool)
        return pool
    }

    static var migrator: VersionedSchema {
        var m = VersionedSchema()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE contracts (
                    id BLOB PRIMARY KEY NOT NULL,
                    revision INTEGER NOT NULL,
                    renter_id BLOB NOT NULL,
                    allowance INTEGER NOT NULL,
                    start_time INTEGER NOT NULL,
                    end_time INTEGER NOT NULL,
                    price_per_audit INTEGER NOT NULL,
                    audit_interval INTEGER NOT NULL,
                    channel_id BLOB NOT NULL,
                    signed BLOB NOT NULL,           -- the SignedContract as countersigned
                    state TEXT NOT NULL,            -- active | expired | unpaid
                    last_paid INTEGER NOT NULL,     -- Unix seconds of the last accepted voucher (or signing)
                    created INTEGER NOT NULL
                );
                CREATE TABLE pieces (
                    id BLOB PRIMARY KEY NOT NULL,
                    contract_id BLOB NOT NULL REFERENCES contracts(id),
                    size INTEGER NOT NULL,
                    root BLOB NOT NULL,
                    stored_at INTEGER NOT NULL,
                    tree BLOB NOT NULL              -- leaf hashes (MerkleTree.levels[0]); older rows: MerkleTree.serialized
                );
                CREATE INDEX pieces_by_contract ON pieces(contract_id);
                CREATE TABLE vouchers (
                    contract_id BLOB PRIMARY KEY NOT NULL REFERENCES contracts(id),
                    cumulative INTEGER NOT NULL,
                    sequence INTEGER NOT NULL,
                    envelope BLOB NOT NULL,         -- the SignedEnvelope as received
                    received_at INTEGER NOT NULL
                );
                """)
        }
        // Transfer protocol 2 hashes pieces' Merkle trees with BLAKE3; the
        // leaf hashes kept for older pieces would fail every audit.
        m.registerMigration("v2: BLAKE3 Merkle trees") { db in
            try RetiredFormatError.refuseBlake2bPieces(db, table: "pieces", database: "farmer.db", kept: "trees")
        }
        return m
    }
}
