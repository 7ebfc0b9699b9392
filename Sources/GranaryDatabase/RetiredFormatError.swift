import GRDB

/// Why a database was not opened: it holds data in a format this build no
/// longer reads, and migrating it would need what only the network has.
/// Raised inside the migration, so nothing in the file was changed.
public struct RetiredFormatError: Error, Equatable, CustomStringConvertible {
    /// Which database (its path, or its role when the path is not known).
    public let database: String
    /// What the file holds, for the person reading the message.
    public let holding: String
    /// What changed and since when.
    public let change: String

    public init(database: String, holding: String, change: String) {
        self.database = database; self.holding = holding; self.change = change
    }

    public var description: String {
        "\(database) holds \(holding) in a format this granary no longer reads: \(change). Nothing was changed: run the granary that wrote it, or start with a new state folder."
    }
}

extension RetiredFormatError {
    /// Refuses (throws) when `table` holds rows: their pieces' Merkle trees
    /// were hashed with BLAKE2b, before transfer protocol 2 moved them to
    /// BLAKE3. For a migration of `database` (farmer.db, network.db), which
    /// keeps each piece's Merkle `kept` ("trees", "roots").
    public static func refuseBlake2bPieces(_ db: Database, table: String, database: String, kept: String) throws {
        let pieces = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \(table)") ?? 0
        guard pieces > 0 else { return }
        throw RetiredFormatError(database: database, holding: "\(pieces) pieces with BLAKE2b Merkle \(kept)",
                                 change: "pieces' Merkle trees hash with BLAKE3 since transfer protocol 2 (2026-12-05)")
    }
}
