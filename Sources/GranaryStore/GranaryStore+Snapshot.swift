import Foundation
import GRDB

extension GranaryStore {
    /// Writes a consistent copy of meta.db to `path` for a metadata
    /// snapshot (SQLite's online backup, from one read transaction), as it
    /// would read after a restore on a machine without this cache: a chunk
    /// not uploaded yet is replaced by its last durable version when it
    /// has one (`base_id`), and dropped otherwise. After a flush there are none.
    /// Returns how many chunks were still dirty.
    @discardableResult
    public func copyMetadata(to path: String) throws -> Int {
        try? FileManager.default.removeItem(atPath: path)
        let destination = try DatabaseQueue(path: path)
        try commitDeferred()
        try db.backup(to: destination)
        let dirty = try destination.write { db -> Int in
            let n = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM chunk WHERE dirty = 1") ?? 0
            guard n > 0 else { return 0 }
            try db.execute(sql: """
                UPDATE chunk SET dirty = 0, chunk_id = base_id,
                    length = (SELECT plain_length FROM blob WHERE blob.chunk_id = chunk.base_id),
                    base_id = NULL, base_limit = 0, ranges = NULL
                WHERE dirty = 1 AND base_id IS NOT NULL AND EXISTS (SELECT 1 FROM blob WHERE blob.chunk_id = chunk.base_id)
                """)
            try db.execute(sql: "DELETE FROM chunk WHERE dirty = 1")
            return n
        }
        try destination.writeWithoutTransaction { try $0.execute(sql: "VACUUM") }
        try destination.close()
        return dirty
    }
}
