import Foundation
import GranaryDatabase
import GranaryRenter
import GranaryTestSupport
import Testing

/// State folders from older granary versions open and migrate; from newer
/// ones they are refused, naming the version. The old files are written
/// here with raw SQL, exactly as the first released schema (v1, applied by
/// GRDB's migrator, with no `user_version`) left them.
@Suite(.serialized) struct SchemaUpgradeTests {
    /// meta.db as the first release created it, with one file in the root.
    static let metaV1 = """
        CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
        INSERT INTO grdb_migrations VALUES ('v1: inodes, entries, xattrs, chunks, blobs, segments');
        CREATE TABLE inode (
            ino INTEGER PRIMARY KEY, mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
            nlink INTEGER NOT NULL, size INTEGER NOT NULL, rdev INTEGER NOT NULL,
            atime INTEGER NOT NULL, mtime INTEGER NOT NULL, ctime INTEGER NOT NULL,
            parent INTEGER NOT NULL DEFAULT 0, target BLOB);
        CREATE TABLE entry (
            parent INTEGER NOT NULL, name BLOB NOT NULL, ino INTEGER NOT NULL, cookie INTEGER NOT NULL,
            PRIMARY KEY (parent, name)) WITHOUT ROWID;
        CREATE TABLE xattr (
            ino INTEGER NOT NULL, name BLOB NOT NULL, value BLOB NOT NULL,
            PRIMARY KEY (ino, name)) WITHOUT ROWID;
        CREATE TABLE chunk (
            ino INTEGER NOT NULL, idx INTEGER NOT NULL, dirty INTEGER NOT NULL,
            chunk_id BLOB, length INTEGER NOT NULL,
            base_id BLOB, base_limit INTEGER NOT NULL DEFAULT 0, ranges BLOB,
            PRIMARY KEY (ino, idx)) WITHOUT ROWID;
        CREATE INDEX chunk_by_id ON chunk(chunk_id);
        CREATE INDEX chunk_by_base ON chunk(base_id);
        CREATE TABLE blob (
            chunk_id BLOB PRIMARY KEY, segment BLOB NOT NULL, offset INTEGER NOT NULL,
            sealed_length INTEGER NOT NULL, plain_length INTEGER NOT NULL) WITHOUT ROWID;
        CREATE INDEX blob_by_segment ON blob(segment);
        CREATE TABLE segment (
            id BLOB PRIMARY KEY, size INTEGER NOT NULL, created INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO inode VALUES (1, 16877, 0, 0, 2, 0, 0, 0, 0, 0, 1, NULL);
        INSERT INTO inode VALUES (2, 33188, 0, 0, 1, 0, 0, 0, 0, 0, 1, NULL);
        INSERT INTO entry VALUES (1, CAST('from-v1.txt' AS BLOB), 2, 3);
        """

    /// network.db as the first release created it (migration "v1", user_version 1).
    static let networkV1 = """
        CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
        INSERT INTO grdb_migrations VALUES ('v1');
        PRAGMA user_version = 1;
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
        
        """

    static func sqlite(_ db: String, _ sql: String) -> Shell.Result {
        let file = db + ".sql"
        try? sql.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        return Shell.run("sqlite3 '\(db)' < '\(file)'", timeout: 30)
    }

    static func userVersion(_ db: String) -> String {
        Shell.run("sqlite3 '\(db)' 'PRAGMA user_version'", timeout: 30).output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test(.timeLimit(.minutes(3)))
    func oldMetaDatabaseMigratesAndMountsANewerOneIsRefused() throws {
        try FuseEnvironment.require()
        let bin = try GranaryBinary.require()
        let dir = TemporaryDirectory("granary-schema")
        let state = dir.path + "/state", mnt = dir.path + "/mnt", segments = dir.path + "/segments"
        defer { Shell.run("fusermount3 -u -z '\(mnt)' 2>/dev/null; true", timeout: 20) }
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        #expect(Shell.run("'\(bin)' key init --plain --state '\(state)'").status == 0)
        let v1 = Self.sqlite(state + "/meta.db", Self.metaV1)
        #expect(v1.status == 0, "\(v1.output)")
        #expect(Self.userVersion(state + "/meta.db") == "0")

        func mount() throws -> ChildProcess {
            try ChildProcess.granary(["mount", mnt, "--state", state, "--local-segments", segments], name: "granary-mount")
        }
        let m = try mount()
        _ = try m.waitForLine(timeout: 30) { $0.hasPrefix("granary mount ready at") }
        #expect(FileManager.default.fileExists(atPath: mnt + "/from-v1.txt"), "the v1 file shows in the mount")
        #expect(Shell.run("echo new > '\(mnt)/after.txt'").status == 0)
        m.stop(grace: 20)
        let migrated = Self.userVersion(state + "/meta.db")
        #expect(Int(migrated) ?? 0 >= 1, "user_version records the schema version: \(migrated)")

        // A newer granary's file: a migration this build does not know.
        let future = Self.sqlite(state + "/meta.db", "INSERT INTO grdb_migrations VALUES ('v99: from the future'); PRAGMA user_version = 99;")
        #expect(future.status == 0, "\(future.output)")
        let refused = try mount()
        #expect(try refused.waitForExit(timeout: 30) != 0)
        let text = refused.output.joined(separator: "\n")
        #expect(text.contains("schema version 99") && text.contains("newer"), "\(text)")
        #expect(Self.userVersion(state + "/meta.db") == "99", "a refused file is left as it was")
    }

    @Test func oldNetworkDatabaseMigratesANewerOneIsRefused() throws {
        let dir = TemporaryDirectory("granary-schema-net")
        let path = dir.path + "/network.db"
        #expect(Self.sqlite(path, Self.networkV1).status == 0)
        let reopened = try NetworkDatabase(path: path)
        #expect(try reopened.segments(state: .durable).isEmpty)
        #expect(Self.userVersion(path) == String(NetworkDatabase.schemaVersion))

        #expect(Self.sqlite(path, "PRAGMA user_version = 42;").status == 0)
        #expect(throws: SchemaTooNewError.self) { _ = try NetworkDatabase(path: path) }
        do {
            _ = try NetworkDatabase(path: path)
        } catch let error as SchemaTooNewError {
            #expect(error.found == 42 && error.description.contains("schema version 42"))
        }
    }

    /// Pieces recorded before transfer protocol 2 have BLAKE2b Merkle roots,
    /// which cannot check a BLAKE3 proof: the file is refused, not migrated
    /// into audits that would fail and disqualify every farmer.
    @Test func networkDatabaseWithBlake2bPiecesIsRefusedUnchanged() throws {
        let dir = TemporaryDirectory("granary-schema-retired")
        let path = dir.path + "/network.db"
        let piece = "INSERT INTO pieces VALUES (x'01', x'02', 0, x'03', x'04', x'05', 4096, 'stored');"
        #expect(Self.sqlite(path, Self.networkV1 + piece).status == 0)
        do {
            _ = try NetworkDatabase(path: path)
            Issue.record("a network.db with BLAKE2b pieces was opened")
        } catch let error as RetiredFormatError {
            #expect(error.description.contains("1 pieces with BLAKE2b Merkle roots") && error.description.contains("Nothing was changed"))
        }
        #expect(Self.userVersion(path) == "1", "a refused file is left as it was")
        #expect(Self.sqlite(path, "SELECT COUNT(*) FROM pieces").output.trimmingCharacters(in: .whitespacesAndNewlines) == "1")
    }

    @Test(.timeLimit(.minutes(2)))
    func farmerRefusesANewerDatabase() throws {
        let dir = TemporaryDirectory("granary-schema-farm")
        let storage = dir.path + "/farmer"
        let env = ["GRANARY_POW_BITS": "4"]
        let first = try ChildProcess.granary(["farm", "--storage", storage, "--capacity", "1G", "--listen", "127.0.0.1:0"],
                                             name: "farmer", environment: env)
        _ = try first.waitForLine(timeout: 60) { $0.contains("listening") }
        first.stop(grace: 10)
        #expect(Self.userVersion(storage + "/farmer.db") != "0", "the farmer records its schema version")
        #expect(Self.sqlite(storage + "/farmer.db", "INSERT INTO grdb_migrations VALUES ('v7: later'); PRAGMA user_version = 7;").status == 0)
        let second = try ChildProcess.granary(["farm", "--storage", storage, "--capacity", "1G", "--listen", "127.0.0.1:0"],
                                              name: "farmer", environment: env)
        #expect(try second.waitForExit(timeout: 60) != 0)
        let text = second.output.joined(separator: "\n")
        #expect(text.contains("schema version 7") && text.contains("v7: later"), "\(text)")
    }
}
