import GRDB
import GranaryDatabase

/// meta.db's schema. Migrations only ever append; `schemaVersion` is the
/// number of migrations applied, readable by tools.
enum MetaSchema {
    static var schemaVersion: Int { migrator.version }

    static var migrator: VersionedSchema {
        var m = VersionedSchema()
        m.registerMigration("v1: inodes, entries, xattrs, chunks, blobs, segments") { db in
            try db.execute(sql: """
                CREATE TABLE inode (
                    ino INTEGER PRIMARY KEY, mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
                    nlink INTEGER NOT NULL, size INTEGER NOT NULL, rdev INTEGER NOT NULL,
                    atime INTEGER NOT NULL, mtime INTEGER NOT NULL, ctime INTEGER NOT NULL,
                    parent INTEGER NOT NULL DEFAULT 0, target BLOB);
                -- cookie: the entry's stable readdir offset, unique and growing.
                CREATE TABLE entry (
                    parent INTEGER NOT NULL, name BLOB NOT NULL, ino INTEGER NOT NULL, cookie INTEGER NOT NULL,
                    PRIMARY KEY (parent, name)) WITHOUT ROWID;
                CREATE TABLE xattr (
                    ino INTEGER NOT NULL, name BLOB NOT NULL, value BLOB NOT NULL,
                    PRIMARY KEY (ino, name)) WITHOUT ROWID;
                -- One row per non-empty 4 MiB chunk of a file. Clean: chunk_id names
                -- sealed content in a durable segment. Dirty: the cache file
                -- cache/dirty/<ino>-<idx> holds the bytes; base_id (if any) is older
                -- content not yet merged, valid below base_limit outside the written
                -- ranges (pairs of little-endian Int64 start/end in `ranges`).
                CREATE TABLE chunk (
                    ino INTEGER NOT NULL, idx INTEGER NOT NULL, dirty INTEGER NOT NULL,
                    chunk_id BLOB, length INTEGER NOT NULL,
                    base_id BLOB, base_limit INTEGER NOT NULL DEFAULT 0, ranges BLOB,
                    PRIMARY KEY (ino, idx)) WITHOUT ROWID;
                CREATE INDEX chunk_by_id ON chunk(chunk_id);
                CREATE INDEX chunk_by_base ON chunk(base_id);
                -- Where a sealed chunk lives: recorded only after its segment is durable.
                CREATE TABLE blob (
                    chunk_id BLOB PRIMARY KEY, segment BLOB NOT NULL, offset INTEGER NOT NULL,
                    sealed_length INTEGER NOT NULL, plain_length INTEGER NOT NULL) WITHOUT ROWID;
                CREATE INDEX blob_by_segment ON blob(segment);
                CREATE TABLE segment (
                    id BLOB PRIMARY KEY, size INTEGER NOT NULL, created INTEGER NOT NULL) WITHOUT ROWID;
                CREATE TABLE counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
                """)
        }
        // live: sealed bytes of the segment's chunks some file still refers
        // to, as of the compactor's last accounting (-1: not counted yet).
        m.registerMigration("v2: segment live bytes") { db in
            try db.execute(sql: "ALTER TABLE segment ADD COLUMN live INTEGER NOT NULL DEFAULT -1")
        }
        // slot: a dirty chunk whose bytes are in slot `slot` of the shared
        // cache file cache/dirty/slab (NULL: in cache/dirty/<ino>-<idx>).
        m.registerMigration("v3: dirty chunks in slab slots") { db in
            try db.execute(sql: "ALTER TABLE chunk ADD COLUMN slot INTEGER")
        }
        return m
    }
}
