import Foundation
import GRDB

/// An inode's meta.db row as values: taken under metaLock, written later
/// (deferred commits) or at once.
struct InodeRow: Sendable {
    let attr: InodeAttributes
    let parent: UInt64
    let target: [UInt8]?

    /// The row a namespace or attribute change writes. A file's size stays
    /// the one meta.db has with its chunk rows: those are written later
    /// (the file's next persist), and a size ahead of them would bring the
    /// file back after a crash as zeros where its new bytes were.
    init(_ rec: InodeRecord) {
        var a = rec.attr
        if a.isRegular { a.size = rec.storedSize }
        attr = a
        parent = rec.parent
        target = rec.target
    }

    /// The row written with the file's chunk rows: its size as it is now.
    init(persisting rec: InodeRecord) {
        attr = rec.attr
        parent = rec.parent
        target = rec.target
    }

    func write(_ db: Database) throws {
        let a = attr
        try db.run("""
            INSERT OR REPLACE INTO inode (ino, mode, uid, gid, nlink, size, rdev, atime, mtime, ctime, parent, target)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, [Int64(bitPattern: a.ino), a.mode, a.uid, a.gid, a.nlink, Int64(a.size), Int64(bitPattern: a.rdev),
                  a.atime, a.mtime, a.ctime, Int64(bitPattern: parent), target.map { Data($0) }])
    }
}

extension FSError {
    /// What a failed meta.db write means to the caller: a full disk is
    /// ENOSPC (the caller can free space and retry), anything else EIO.
    init(databaseError error: any Error) {
        if let e = error as? DatabaseError, e.resultCode == .SQLITE_FULL { self.init(ENOSPC) } else { self.init(EIO) }
    }
}
