import Foundation
import GRDB
import GranaryDatabase
import GranaryCore

/// Lifecycle of a segment in network.db.
public enum SegmentState: String, Sendable, Codable {
    /// Pieces are going out; never readable, rolled back after a crash.
    case uploading
    /// At least s pieces confirmed.
    case durable
    /// Deleted by the Store; pieces are being released.
    case deleting
}

/// Lifecycle of one piece (one index of a segment on one farmer).
public enum PieceState: String, Sendable, Codable {
    case uploading
    /// Confirmed by the farmer (root checked, fsynced).
    case stored
    /// To be deleted on its farmer (cancelled long tail, replaced, deleted segment).
    case deleting
}

public struct SegmentRow: Sendable, Hashable {
    public var id: SegmentID
    public var length: Int
    public var scheme: RedundancyScheme
    public var state: SegmentState
}

public struct PieceRow: Sendable, Hashable {
    public var pieceID: Hash256
    public var segment: SegmentID
    public var index: Int
    public var farmer: Hash256
    public var contract: Hash256
    public var root: Hash256
    public var size: Int
    public var state: PieceState
}

/// What the renter believes about a farmer (see `Reputation`).
public struct FarmerRow: Sendable, Hashable {
    public var contact: FarmerContact
    public var reputation: Reputation
    public var disqualified: Bool
    public var lastSeen: Date?
    public var lastFailure: Date?
}

/// The renter engine's own SQLite database (`network.db`): segments, pieces,
/// farmers, contracts, audits and vouchers. WAL, synchronous=FULL, every
/// change one transaction, so a `kill -9` leaves either the old or the new
/// state and a segment is never durable without its s stored pieces.
public final class NetworkDatabase: Sendable {
    public let pool: DatabasePool
    public let path: String

    /// The schema version this code writes (the last migration's number).
    public static var schemaVersion: Int { migrator.version }

    public init(path: String) throws {
        var config = Configuration()
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        config.busyMode = .timeout(10)
        self.path = path
        pool = try DatabasePool(path: path, configuration: config)
        try Self.migrator.migrate(pool)
    }

    static var migrator: VersionedSchema {
        var m = VersionedSchema()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE segments (
                    id BLOB PRIMARY KEY,
                    length INTEGER NOT NULL,
                    k INTEGER NOT NULL, r INTEGER NOT NULL, s INTEGER NOT NULL, n INTEGER NOT NULL,
                    state TEXT NOT NULL,
                    created REAL NOT NULL,
                    durable_at REAL
                );
                CREATE TABLE farmers (
                    id BLOB PRIMARY KEY,
                    public_key BLOB NOT NULL,
                    address TEXT NOT NULL,
                    alpha REAL NOT NULL, beta REAL NOT NULL,
                    up_alpha REAL NOT NULL, up_beta REAL NOT NULL,
                    latency_ms REAL,
                    audits_passed INTEGER NOT NULL DEFAULT 0,
                    audits_failed INTEGER NOT NULL DEFAULT 0,
                    disqualified INTEGER NOT NULL DEFAULT 0,
                    last_seen REAL, last_failure REAL
                );
                CREATE TABLE contracts (
                    id BLOB PRIMARY KEY,
                    farmer BLOB NOT NULL REFERENCES farmers(id),
                    signed BLOB NOT NULL,
                    allowance INTEGER NOT NULL,
                    used INTEGER NOT NULL DEFAULT 0,
                    price INTEGER NOT NULL,
                    audit_interval REAL NOT NULL,
                    start REAL NOT NULL,
                    end REAL NOT NULL,
                    state TEXT NOT NULL DEFAULT 'active'
                );
                CREATE INDEX contracts_farmer ON contracts(farmer);
                CREATE TABLE pieces (
                    piece_id BLOB PRIMARY KEY,
                    segment BLOB NOT NULL,
                    idx INTEGER NOT NULL,
                    farmer BLOB NOT NULL,
                    contract BLOB NOT NULL,
                    root BLOB NOT NULL,
                    size INTEGER NOT NULL,
                    state TEXT NOT NULL
                );
                CREATE INDEX pieces_segment ON pieces(segment);
                CREATE INDEX pieces_farmer ON pieces(farmer, state);
                CREATE TABLE audits (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    contract BLOB NOT NULL,
                    farmer BLOB NOT NULL,
                    piece_id BLOB,
                    leaf INTEGER,
                    at REAL NOT NULL,
                    outcome TEXT NOT NULL,
                    paid INTEGER NOT NULL DEFAULT 0,
                    detail TEXT
                );
                CREATE INDEX audits_farmer ON audits(farmer);
                CREATE TABLE vouchers (
                    contract BLOB PRIMARY KEY,
                    cumulative INTEGER NOT NULL,
                    sequence INTEGER NOT NULL,
                    acknowledged INTEGER NOT NULL DEFAULT 0,
                    updated REAL NOT NULL
                );
                """)
            try db.execute(sql: "PRAGMA user_version = 1")
        }
        // Metadata snapshots (see MetadataBackup): their segments are kept
        // apart from the Store's so garbage collection never takes them.
        m.registerMigration("v2: metadata snapshots") { db in
            try db.execute(sql: """
                CREATE TABLE metadata_snapshots (
                    sequence INTEGER PRIMARY KEY,
                    created REAL NOT NULL,
                    change_token BLOB NOT NULL,
                    manifest BLOB NOT NULL
                );
                CREATE TABLE metadata_snapshot_segments (
                    segment BLOB PRIMARY KEY,
                    sequence INTEGER NOT NULL
                );
                """)
        }
        // Transfer protocol 2 hashes pieces' Merkle trees with BLAKE3: the
        // roots recorded here for older pieces cannot check a farmer's
        // proofs any more, and only re-uploading could replace them.
        m.registerMigration("v3: BLAKE3 Merkle roots") { db in
            try RetiredFormatError.refuseBlake2bPieces(db, table: "pieces", database: "network.db", kept: "roots")
        }
        return m
    }

    // MARK: segments

    public func segment(_ id: SegmentID) throws -> SegmentRow? {
        try pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM segments WHERE id = ?", arguments: [id.data]).map(Self.segmentRow)
        }
    }

    static func segmentRow(_ row: Row) -> SegmentRow {
        SegmentRow(id: Hash256(data: row["id"]), length: row["length"],
                   scheme: try! RedundancyScheme(k: row["k"], r: row["r"], s: row["s"], n: row["n"]),
                   state: SegmentState(rawValue: row["state"]) ?? .uploading)
    }

    public func segments(state: SegmentState) throws -> [SegmentRow] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM segments WHERE state = ?", arguments: [state.rawValue]).map(Self.segmentRow)
        }
    }

    /// Starts (or restarts) an upload: the segment row in `uploading` and
    /// any pieces of an earlier attempt queued for deletion, in one transaction.
    public func beginUpload(_ id: SegmentID, length: Int, scheme: RedundancyScheme) throws {
        try pool.write { db in
            try db.execute(sql: "UPDATE pieces SET state = 'deleting' WHERE segment = ? AND state != 'deleting'", arguments: [id.data])
            try db.execute(sql: """
                INSERT INTO segments (id, length, k, r, s, n, state, created) VALUES (?, ?, ?, ?, ?, ?, 'uploading', ?)
                ON CONFLICT(id) DO UPDATE SET length = excluded.length, k = excluded.k, r = excluded.r,
                    s = excluded.s, n = excluded.n, state = 'uploading', created = excluded.created, durable_at = NULL
                """, arguments: [id.data, length, scheme.k, scheme.r, scheme.s, scheme.n, Date().timeIntervalSince1970])
        }
    }

    /// Marks a segment durable, but only if at least s of its pieces are stored
    /// (checked inside the transaction). Returns whether it did.
    @discardableResult
    public func markDurable(_ id: SegmentID, required s: Int) throws -> Bool {
        try pool.write { db in
            let stored = try Int.fetchOne(db, sql: "SELECT COUNT(DISTINCT idx) FROM pieces WHERE segment = ? AND state = 'stored'",
                                          arguments: [id.data]) ?? 0
            guard stored >= s else { return false }
            try db.execute(sql: "UPDATE segments SET state = 'durable', durable_at = ? WHERE id = ? AND state = 'uploading'",
                           arguments: [Date().timeIntervalSince1970, id.data])
            return db.changesCount > 0
        }
    }

    /// Marks a segment deleted and all its pieces to be released, in one transaction.
    public func beginDelete(_ id: SegmentID) throws {
        try pool.write { db in
            try db.execute(sql: "UPDATE segments SET state = 'deleting' WHERE id = ?", arguments: [id.data])
            try db.execute(sql: "UPDATE pieces SET state = 'deleting' WHERE segment = ?", arguments: [id.data])
        }
    }

    /// Rolls back uploads a crash interrupted: their pieces are queued for
    /// deletion and the segment forgotten (the Store puts it again).
    @discardableResult
    public func rollBackInterruptedUploads() throws -> [SegmentID] {
        try pool.write { db in
            let ids = try Data.fetchAll(db, sql: "SELECT id FROM segments WHERE state = 'uploading'").map(Hash256.init(data:))
            for id in ids {
                try db.execute(sql: "UPDATE pieces SET state = 'deleting' WHERE segment = ?", arguments: [id.data])
                try db.execute(sql: "DELETE FROM segments WHERE id = ?", arguments: [id.data])
            }
            return ids
        }
    }

    /// Forgets segments in `deleting` whose pieces are all released.
    public func purgeDeletedSegments() throws {
        try pool.write { db in
            try db.execute(sql: """
                DELETE FROM segments WHERE state = 'deleting'
                AND NOT EXISTS (SELECT 1 FROM pieces WHERE pieces.segment = segments.id)
                """)
        }
    }

    public func durableSegmentIDs() throws -> [SegmentID] {
        try pool.read { db in
            try Data.fetchAll(db, sql: """
                SELECT id FROM segments WHERE state = 'durable' AND id NOT IN (SELECT segment FROM metadata_snapshot_segments)
                """).map(Hash256.init(data:))
        }
    }

    // MARK: pieces

    static func pieceRow(_ row: Row) -> PieceRow {
        PieceRow(pieceID: Hash256(data: row["piece_id"]), segment: Hash256(data: row["segment"]), index: row["idx"],
                 farmer: Hash256(data: row["farmer"]), contract: Hash256(data: row["contract"]),
                 root: Hash256(data: row["root"]), size: row["size"],
                 state: PieceState(rawValue: row["state"]) ?? .deleting)
    }

    public func pieces(of segment: SegmentID) throws -> [PieceRow] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM pieces WHERE segment = ? ORDER BY idx", arguments: [segment.data]).map(Self.pieceRow)
        }
    }

    public func pieces(state: PieceState, limit: Int = 1_000) throws -> [PieceRow] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM pieces WHERE state = ? LIMIT ?", arguments: [state.rawValue, limit]).map(Self.pieceRow)
        }
    }

    public func storedPieces(onFarmer farmer: Hash256) throws -> [PieceRow] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM pieces WHERE farmer = ? AND state = 'stored'", arguments: [farmer.data]).map(Self.pieceRow)
        }
    }

    public func storedPieces(contract: Hash256) throws -> [PieceRow] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM pieces WHERE contract = ? AND state = 'stored'", arguments: [contract.data]).map(Self.pieceRow)
        }
    }

    /// Records an upload attempt, reserving its size on the contract.
    public func addPiece(_ p: PieceRow) throws {
        try pool.write { db in
            try db.execute(sql: """
                INSERT INTO pieces (piece_id, segment, idx, farmer, contract, root, size, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [p.pieceID.data, p.segment.data, p.index, p.farmer.data, p.contract.data, p.root.data, p.size, p.state.rawValue])
            try db.execute(sql: "UPDATE contracts SET used = used + ? WHERE id = ?", arguments: [p.size, p.contract.data])
        }
    }

    public func setPieceState(_ pieceID: Hash256, _ state: PieceState) throws {
        try pool.write { db in
            try db.execute(sql: "UPDATE pieces SET state = ? WHERE piece_id = ?", arguments: [state.rawValue, pieceID.data])
        }
    }

    /// Marks every piece of `segment` that is not in `keep` for deletion.
    public func releasePieces(of segment: SegmentID, keeping keep: Set<Hash256>) throws {
        try pool.write { db in
            for row in try Row.fetchAll(db, sql: "SELECT piece_id FROM pieces WHERE segment = ? AND state != 'deleting'", arguments: [segment.data]) {
                let id = Hash256(data: row["piece_id"])
                if !keep.contains(id) {
                    try db.execute(sql: "UPDATE pieces SET state = 'deleting' WHERE piece_id = ?", arguments: [id.data])
                }
            }
        }
    }

    /// Forgets a released piece and gives its bytes back to the contract.
    public func removePiece(_ pieceID: Hash256) throws {
        try pool.write { db in
            if let row = try Row.fetchOne(db, sql: "SELECT contract, size FROM pieces WHERE piece_id = ?", arguments: [pieceID.data]) {
                try db.execute(sql: "UPDATE contracts SET used = MAX(0, used - ?) WHERE id = ?",
                               arguments: [row["size"] as Int, row["contract"] as Data])
                try db.execute(sql: "DELETE FROM pieces WHERE piece_id = ?", arguments: [pieceID.data])
            }
        }
    }

    // MARK: farmers

    public func upsertFarmer(_ contact: FarmerContact) throws {
        try pool.write { db in try Self.upsertFarmer(contact, in: db) }
    }

    /// A new farmer starts with the prior reputation; a known one only
    /// updates its address.
    private static func upsertFarmer(_ contact: FarmerContact, in db: Database) throws {
        let r = Reputation()
        try db.execute(sql: """
            INSERT INTO farmers (id, public_key, address, alpha, beta, up_alpha, up_beta) VALUES (?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET address = excluded.address
            """, arguments: [contact.id.data, Data(contact.publicKey), contact.address, r.alpha, r.beta, r.upAlpha, r.upBeta])
    }

    public func farmers() throws -> [FarmerRow] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM farmers").map { row in
                var rep = Reputation()
                rep.alpha = row["alpha"]; rep.beta = row["beta"]
                rep.upAlpha = row["up_alpha"]; rep.upBeta = row["up_beta"]
                rep.latencyMs = row["latency_ms"]
                rep.auditsPassed = row["audits_passed"]; rep.auditsFailed = row["audits_failed"]
                return FarmerRow(
                    contact: FarmerContact(id: Hash256(data: row["id"]), publicKey: [UInt8](row["public_key"] as Data), address: row["address"]),
                    reputation: rep, disqualified: (row["disqualified"] as Int) != 0,
                    lastSeen: (row["last_seen"] as Double?).map(Date.init(timeIntervalSince1970:)),
                    lastFailure: (row["last_failure"] as Double?).map(Date.init(timeIntervalSince1970:)))
            }
        }
    }

    public func saveFarmer(_ f: FarmerRow) throws {
        try pool.write { db in
            try db.execute(sql: """
                UPDATE farmers SET alpha = ?, beta = ?, up_alpha = ?, up_beta = ?, latency_ms = ?, audits_passed = ?,
                    audits_failed = ?, disqualified = ?, last_seen = ?, last_failure = ?, address = ? WHERE id = ?
                """, arguments: [f.reputation.alpha, f.reputation.beta, f.reputation.upAlpha, f.reputation.upBeta,
                                 f.reputation.latencyMs, f.reputation.auditsPassed, f.reputation.auditsFailed,
                                 f.disqualified ? 1 : 0, f.lastSeen?.timeIntervalSince1970, f.lastFailure?.timeIntervalSince1970,
                                 f.contact.address, f.contact.id.data])
        }
    }

    // MARK: contracts

    public struct ContractRow: Sendable, Hashable {
        public var record: ContractRecord
        public var used: Int64
        public var state: String
        public var free: Int64 { record.allowance - used }
    }

    public func addContract(_ c: ContractRecord) throws {
        try pool.write { db in
            try Self.upsertFarmer(c.farmer, in: db)
            try db.execute(sql: """
                INSERT INTO contracts (id, farmer, signed, allowance, price, audit_interval, start, end, state)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active')
                ON CONFLICT(id) DO UPDATE SET signed = excluded.signed, allowance = excluded.allowance, end = excluded.end, state = 'active'
                """, arguments: [c.id.data, c.farmer.id.data, Data(c.signedBytes), c.allowance, Int64(c.pricePerAudit),
                                 c.auditInterval, c.start.timeIntervalSince1970, c.end.timeIntervalSince1970])
        }
    }

    public func contracts(activeOnly: Bool = true) throws -> [ContractRow] {
        try pool.read { db in
            let sql = """
                SELECT c.*, f.public_key, f.address FROM contracts c JOIN farmers f ON f.id = c.farmer
                \(activeOnly ? "WHERE c.state = 'active'" : "")
                """
            return try Row.fetchAll(db, sql: sql).map { row in
                let contact = FarmerContact(id: Hash256(data: row["farmer"]), publicKey: [UInt8](row["public_key"] as Data), address: row["address"])
                let rec = ContractRecord(id: Hash256(data: row["id"]), farmer: contact, allowance: row["allowance"],
                                         pricePerAudit: UInt64(row["price"] as Int64), auditInterval: row["audit_interval"],
                                         start: Date(timeIntervalSince1970: row["start"]), end: Date(timeIntervalSince1970: row["end"]),
                                         signedBytes: [UInt8](row["signed"] as Data))
                return ContractRow(record: rec, used: row["used"], state: row["state"])
            }
        }
    }

    public func setContractState(_ id: Hash256, _ state: String) throws {
        try pool.write { db in
            try db.execute(sql: "UPDATE contracts SET state = ? WHERE id = ?", arguments: [state, id.data])
        }
    }

    // MARK: audits and vouchers

    /// Records an audit and, for a pass, the voucher it pays, in one
    /// transaction; returns the new cumulative amount and sequence.
    @discardableResult
    public func recordAudit(contract: Hash256, farmer: Hash256, piece: Hash256?, leaf: Int?, at: Date,
                            outcome: String, pay: UInt64, detail: String?) throws -> (cumulative: UInt64, sequence: UInt64) {
        try pool.write { db in
            try db.execute(sql: """
                INSERT INTO audits (contract, farmer, piece_id, leaf, at, outcome, paid, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [contract.data, farmer.data, piece?.data, leaf, at.timeIntervalSince1970, outcome, Int64(pay), detail])
            let current = try Row.fetchOne(db, sql: "SELECT cumulative, sequence FROM vouchers WHERE contract = ?", arguments: [contract.data])
            var cumulative = UInt64(current?["cumulative"] as Int64? ?? 0)
            var sequence = UInt64(current?["sequence"] as Int64? ?? 0)
            if pay > 0 {
                cumulative += pay; sequence += 1
                try Self.setVoucher(db, contract: contract, cumulative: cumulative, sequence: sequence, at: at)
            }
            return (cumulative, sequence)
        }
    }

    /// Moves a contract's ledger above the farmer's highest accepted
    /// voucher (`cumulative`, `sequence`) plus `pay` still owed for the
    /// audit at hand; never lowers it. Returns the voucher to send.
    public func raiseVoucher(contract: Hash256, above cumulative: UInt64, sequence: UInt64, pay: UInt64,
                             at: Date) throws -> (cumulative: UInt64, sequence: UInt64) {
        try pool.write { db in
            let current = try Row.fetchOne(db, sql: "SELECT cumulative, sequence FROM vouchers WHERE contract = ?", arguments: [contract.data])
            let newCumulative = max(UInt64(current?["cumulative"] as Int64? ?? 0), cumulative + pay)
            let newSequence = max(UInt64(current?["sequence"] as Int64? ?? 0), sequence + 1)
            try Self.setVoucher(db, contract: contract, cumulative: newCumulative, sequence: newSequence, at: at)
            return (newCumulative, newSequence)
        }
    }

    /// A contract's voucher to send (not yet acknowledged by the farmer).
    private static func setVoucher(_ db: Database, contract: Hash256, cumulative: UInt64, sequence: UInt64, at: Date) throws {
        try db.execute(sql: """
            INSERT INTO vouchers (contract, cumulative, sequence, acknowledged, updated) VALUES (?, ?, ?, 0, ?)
            ON CONFLICT(contract) DO UPDATE SET cumulative = excluded.cumulative, sequence = excluded.sequence,
                acknowledged = 0, updated = excluded.updated
            """, arguments: [contract.data, Int64(clamping: cumulative), Int64(clamping: sequence), at.timeIntervalSince1970])
    }

    public func acknowledgeVoucher(contract: Hash256, sequence: UInt64) throws {
        try pool.write { db in
            try db.execute(sql: "UPDATE vouchers SET acknowledged = 1 WHERE contract = ? AND sequence = ?",
                           arguments: [contract.data, Int64(sequence)])
        }
    }

    public struct AuditRecord: Sendable, Hashable {
        public var contract: Hash256
        public var farmer: Hash256
        public var outcome: String
        public var paid: UInt64
        public var at: Date
    }

    public func audits(farmer: Hash256? = nil) throws -> [AuditRecord] {
        try pool.read { db in
            let rows = try farmer.map { try Row.fetchAll(db, sql: "SELECT * FROM audits WHERE farmer = ? ORDER BY id", arguments: [$0.data]) }
                ?? Row.fetchAll(db, sql: "SELECT * FROM audits ORDER BY id")
            return rows.map { AuditRecord(contract: Hash256(data: $0["contract"]), farmer: Hash256(data: $0["farmer"]),
                                          outcome: $0["outcome"], paid: UInt64($0["paid"] as Int64), at: Date(timeIntervalSince1970: $0["at"])) }
        }
    }

    /// Cumulative amount promised per contract.
    public func vouchers() throws -> [Hash256: UInt64] {
        try pool.read { db in
            var out: [Hash256: UInt64] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT contract, cumulative FROM vouchers") {
                out[Hash256(data: row["contract"])] = UInt64(row["cumulative"] as Int64)
            }
            return out
        }
    }
}

extension Hash256 {
    var data: Data { Data(bytes) }
    init(data: Data) { self = Hash256(bytes: data) ?? .zero }
}
