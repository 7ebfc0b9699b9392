import GRDB

/// Why a database was not opened: it was written by a newer Granary.
public struct SchemaTooNewError: Error, Equatable, CustomStringConvertible {
    /// Which database (its path).
    public let database: String
    /// The schema version found in the file.
    public let found: Int
    /// The newest schema version this build knows.
    public let supported: Int
    /// Migrations recorded in the file that this build does not know.
    public let unknownMigrations: [String]

    public var description: String {
        var text = "\(database) has schema version \(found), newer than version \(supported) that this granary understands"
        if !unknownMigrations.isEmpty { text += " (unknown migrations: \(unknownMigrations.joined(separator: ", ")))" }
        return text + "; it was written by a newer granary: run that version (or newer), not this one. Nothing was changed."
    }
}

/// A database's schema as an ordered list of named migrations (GRDB's
/// `DatabaseMigrator`), with a version number = how many migrations a file
/// has applied, kept in `PRAGMA user_version` for tools.
///
/// Opening migrates an older file forward and refuses a newer one: one
/// whose `user_version` is higher than the migrations known here, or that
/// records a migration this build does not know. GRDB alone would ignore
/// unknown migrations and let old code write into a newer schema.
///
/// Migrations only ever append, and an identifier never changes once
/// released: files in the field name them in `grdb_migrations`.
public struct VersionedSchema: Sendable {
    public typealias Migration = @Sendable (Database) throws -> Void

    private var migrations: [(identifier: String, body: Migration)] = []

    public init() {}

    /// The version this build writes: the number of registered migrations.
    public var version: Int { migrations.count }

    public var identifiers: [String] { migrations.map(\.identifier) }

    /// Named like GRDB's, so a migration reads the same in either.
    public mutating func registerMigration(_ identifier: String, migrate body: @escaping Migration) {
        precondition(!identifiers.contains(identifier), "migration \(identifier) registered twice")
        migrations.append((identifier, body))
    }

    /// Refuses a newer file, then applies what is missing and records the
    /// version, all under one barrier so no other connection sees a half state.
    public func migrate(_ writer: DatabasePool) throws {
        let path = writer.path
        var migrator = DatabaseMigrator()
        for m in migrations { migrator.registerMigration(m.identifier, migrate: m.body) }
        let known = Set(identifiers)
        let version = self.version
        try writer.barrierWriteWithoutTransaction { db in
            let found = try Int.fetchOne(db, sql: "PRAGMA user_version") ?? 0
            let applied = try migrator.appliedIdentifiers(db)
            let unknown = applied.subtracting(known).sorted()
            if found > version || !unknown.isEmpty {
                throw SchemaTooNewError(database: path, found: max(found, applied.count), supported: version,
                                        unknownMigrations: unknown)
            }
        }
        try migrator.migrate(writer)
        try writer.barrierWriteWithoutTransaction { db in
            try db.execute(sql: "PRAGMA user_version = \(version)")
        }
    }

    /// The version recorded in an open database (0 for a file from before
    /// versions were recorded).
    public static func recordedVersion(_ reader: any DatabaseReader) throws -> Int {
        try reader.read { db in try Int.fetchOne(db, sql: "PRAGMA user_version") ?? 0 }
    }
}
