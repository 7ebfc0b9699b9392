import Foundation
import GRDB
import GranaryCore

/// network.db's record of the metadata snapshots this renter published
/// (see `MetadataBackup`): their sealed manifests and their segments, which
/// `durableSegmentIDs` leaves out so the Store never takes them for orphans.
extension NetworkDatabase {
    public struct SnapshotRow: Sendable, Hashable {
        public var sequence: UInt64
        public var created: Date
        /// What the snapshot's content was derived from; an unchanged token means nothing to back up.
        public var changeToken: [UInt8]
        /// The manifest exactly as published (sealed).
        public var manifest: [UInt8]
    }

    public func snapshots() throws -> [SnapshotRow] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM metadata_snapshots ORDER BY sequence DESC").map { row in
                SnapshotRow(sequence: UInt64(row["sequence"] as Int64), created: Date(timeIntervalSince1970: row["created"]),
                            changeToken: [UInt8](row["change_token"] as Data), manifest: [UInt8](row["manifest"] as Data))
            }
        }
    }

    /// Claims a segment for a snapshot before it is stored, so no garbage
    /// collection ever sees it as an orphan.
    func markSnapshotSegment(_ id: SegmentID, sequence: UInt64) throws {
        try pool.write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO metadata_snapshot_segments (segment, sequence) VALUES (?, ?)",
                           arguments: [id.data, Int64(bitPattern: sequence)])
        }
    }

    func recordSnapshot(_ row: SnapshotRow) throws {
        try pool.write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO metadata_snapshots (sequence, created, change_token, manifest) VALUES (?, ?, ?, ?)",
                           arguments: [Int64(bitPattern: row.sequence), row.created.timeIntervalSince1970, Data(row.changeToken), Data(row.manifest)])
        }
    }

    public func snapshotSegments(sequence: UInt64) throws -> [SegmentID] {
        try pool.read { db in
            try Data.fetchAll(db, sql: "SELECT segment FROM metadata_snapshot_segments WHERE sequence = ?",
                              arguments: [Int64(bitPattern: sequence)]).map(Hash256.init(data:))
        }
    }

    /// Forgets a snapshot once its segments are deleted.
    func forgetSnapshot(sequence: UInt64) throws {
        try pool.write { db in
            try db.execute(sql: "DELETE FROM metadata_snapshots WHERE sequence = ?", arguments: [Int64(bitPattern: sequence)])
            try db.execute(sql: "DELETE FROM metadata_snapshot_segments WHERE sequence = ?", arguments: [Int64(bitPattern: sequence)])
        }
    }

    /// A digest of where the Store's data lives (durable segments, stored
    /// pieces, contracts): when it changes, network.db's snapshot is worth
    /// renewing. Uploads in flight and releases of spare pieces do not count.
    func placementDigest() throws -> Hash256 {
        try pool.read { db in
            var bytes: [UInt8] = []
            for row in try Row.fetchAll(db, sql: """
                SELECT id, state FROM segments WHERE state = 'durable'
                AND id NOT IN (SELECT segment FROM metadata_snapshot_segments) ORDER BY id
                """) {
                bytes += [UInt8](row["id"] as Data) + Array((row["state"] as String).utf8)
            }
            for row in try Row.fetchAll(db, sql: """
                SELECT piece_id, state FROM pieces WHERE state = 'stored'
                AND segment NOT IN (SELECT segment FROM metadata_snapshot_segments) ORDER BY piece_id
                """) {
                bytes += [UInt8](row["piece_id"] as Data) + Array((row["state"] as String).utf8)
            }
            for row in try Row.fetchAll(db, sql: "SELECT id, state, end FROM contracts ORDER BY id") {
                bytes += [UInt8](row["id"] as Data) + Array("\(row["state"] as String)\(row["end"] as Double)".utf8)
            }
            return Blake2b.hash256(bytes)
        }
    }

    /// After a restore: records the snapshot that was restored and its
    /// segments and pieces (which its own copy of network.db cannot know),
    /// so the renter audits, repairs and eventually deletes them. Pieces
    /// under a contract this copy does not know are left out.
    public func adoptSnapshot(_ manifest: SnapshotManifest, sealedManifest: [UInt8]) throws {
        try pool.write { db in
            let seq = Int64(bitPattern: manifest.sequence)
            try db.execute(sql: "INSERT OR REPLACE INTO metadata_snapshots (sequence, created, change_token, manifest) VALUES (?, ?, ?, ?)",
                           arguments: [seq, manifest.created.timeIntervalSince1970, Data(), Data(sealedManifest)])
            let now = Date().timeIntervalSince1970
            for s in manifest.segments {
                try db.execute(sql: """
                    INSERT OR IGNORE INTO segments (id, length, k, r, s, n, state, created, durable_at) VALUES (?, ?, ?, ?, ?, ?, 'durable', ?, ?)
                    """, arguments: [s.id.data, s.length, s.scheme.k, s.scheme.r, s.scheme.s, s.scheme.n, now, now])
                try db.execute(sql: "INSERT OR REPLACE INTO metadata_snapshot_segments (segment, sequence) VALUES (?, ?)",
                               arguments: [s.id.data, seq])
                let size = s.scheme.pieceSize(segmentLength: s.length)
                for p in s.pieces {
                    guard try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM contracts WHERE id = ?", arguments: [p.contract.data]) == 1 else { continue }
                    let farmer = manifest.farmers[p.farmer].id
                    try db.execute(sql: """
                        INSERT OR IGNORE INTO pieces (piece_id, segment, idx, farmer, contract, root, size, state) VALUES (?, ?, ?, ?, ?, ?, ?, 'stored')
                        """, arguments: [p.pieceID.data, s.id.data, p.index, farmer.data, p.contract.data, p.root.data, size])
                    if db.changesCount > 0 {
                        try db.execute(sql: "UPDATE contracts SET used = used + ? WHERE id = ?", arguments: [size, p.contract.data])
                    }
                }
            }
        }
    }
}

extension NetworkDatabase {
    /// Writes a consistent copy of network.db to `path` with SQLite's
    /// online backup, read from one read transaction (writers go on).
    public func copy(to path: String) throws {
        try? FileManager.default.removeItem(atPath: path)
        let destination = try DatabaseQueue(path: path)
        try pool.backup(to: destination)
        try destination.close()
    }
}
