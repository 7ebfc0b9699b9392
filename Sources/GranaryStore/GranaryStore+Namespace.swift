import Foundation
import GRDB
import GranaryCore

/// Namespace operations: each is one meta.db transaction, applied to memory
/// and database under metaLock.
extension GranaryStore {
    @inline(__always) func checkName(_ name: FileName) throws(FSError) {
        if name.count > maxNameLength { throw .nameTooLong }
        if name.isEmpty { throw .notFound }
    }

    /// The directory record for `ino` (metaLock held).
    func directory(_ ino: UInt64) throws(FSError) -> InodeRecord {
        guard let rec = inodes[ino] else { throw .notFound }
        guard rec.entries != nil else { throw .notDirectory }
        return rec
    }

    // MARK: lookup and attributes

    /// Looks `name` up in `parent` and counts a kernel reference.
    public func lookup(parent: UInt64, name: FileName) throws(FSError) -> InodeAttributes {
        if name.count > maxNameLength { throw .nameTooLong }
        metaLock.lock(); defer { metaLock.unlock() }
        let dir = try directory(parent)
        let ino: UInt64
        if name == [0x2e] { ino = parent }
        else if name == [0x2e, 0x2e] { ino = dir.parent }
        else {
            guard let e = dir.entries![name] else { throw .notFound }
            ino = e.ino
        }
        guard let rec = inodes[ino] else { throw .notFound }
        rec.lookups += 1
        return rec.attributes
    }

    /// Adds kernel references (readdirplus entries).
    public func addLookups(_ ino: UInt64, _ n: UInt64 = 1) {
        metaLock.lock(); defer { metaLock.unlock() }
        inodes[ino]?.lookups += n
    }

    /// Drops kernel references; frees an unlinked inode nobody uses.
    public func forget(_ ino: UInt64, _ n: UInt64) {
        metaLock.lock()
        var free: UInt64?
        if let rec = inodes[ino] {
            rec.lookups = rec.lookups >= n ? rec.lookups - n : 0
            if rec.lookups == 0 && rec.opens == 0 && rec.attr.nlink == 0 { free = detachLocked(ino) }
        }
        metaLock.unlock()
        if let free { releaseData(free) }
    }

    /// Marks an inode read (file data or a directory listing), relatime
    /// style: atime moves only when it is not newer than mtime or ctime, or
    /// is a day old, so reads rarely cost a metadata write.
    public func accessed(_ ino: UInt64) {
        metaLock.lock(); defer { metaLock.unlock() }
        guard let rec = inodes[ino] else { return }
        let now = wallClockNanos()
        let a = rec.attr
        guard a.atime <= a.mtime || a.atime <= a.ctime || now - a.atime >= 86_400_000_000_000 else { return }
        rec.attr.atime = now
        if files[ino] != nil {
            needsPersist.insert(ino)  // written with the file's next persist
        } else if rec.attr.nlink > 0, deferred.lastFailure == nil {
            let row = InodeRow(rec)
            queueMetaWrite { db in try row.write(db) }
        }
    }

    public func getattr(_ ino: UInt64) throws(FSError) -> InodeAttributes {
        metaLock.lock(); defer { metaLock.unlock() }
        guard let rec = inodes[ino] else { throw .notFound }
        return rec.attributes
    }

    public func readlink(_ ino: UInt64) throws(FSError) -> [UInt8] {
        metaLock.lock(); defer { metaLock.unlock() }
        guard let rec = inodes[ino] else { throw .notFound }
        guard let t = rec.target else { throw .invalid }
        return t
    }

    /// What `setattr` changes; nil leaves a field alone.
    public struct AttributeChanges: Sendable {
        public var mode: UInt32?
        public var uid: UInt32?
        public var gid: UInt32?
        public var size: UInt64?
        public var atime: Int64?
        public var mtime: Int64?
        public var ctime: Int64?
        /// Clear setuid, setgid and a file capability, as a truncate by a
        /// caller without CAP_FSETID or a chown does (unless the mode is set).
        public var dropPrivileges = false
        public init() {}
    }

    static let capabilityName: FileName = Array("security.capability".utf8)

    /// Whether a write would take something from the file (see
    /// `dropPrivilegesLocked`). metaLock held.
    func holdsPrivilegesLocked(_ rec: InodeRecord) -> Bool {
        let mode = rec.attr.mode
        return mode & UInt32(S_ISUID) != 0 || mode & UInt32(S_ISGID | S_IXGRP) == UInt32(S_ISGID | S_IXGRP)
            || rec.xattrs[Self.capabilityName] != nil
    }

    /// Clears what a write, truncate or chown takes from a file, as Linux
    /// does: setuid; setgid when group-executable (without it the bit marks
    /// mandatory locking); a file capability. Returns whether anything went.
    /// metaLock held; the inode row is written with the caller's change.
    func dropPrivilegesLocked(_ rec: InodeRecord) -> Bool {
        guard holdsPrivilegesLocked(rec) else { return false }
        var mode = rec.attr.mode & ~UInt32(S_ISUID)
        if mode & UInt32(S_IXGRP) != 0 { mode &= ~UInt32(S_ISGID) }
        let hadCapability = rec.xattrs[Self.capabilityName] != nil
        rec.attr.mode = mode
        if hadCapability {
            rec.xattrs[Self.capabilityName] = nil
            let ino = Int64(bitPattern: rec.attr.ino)
            queueMetaWrite { db in
                try db.run("DELETE FROM xattr WHERE ino = ? AND name = ?", [ino, Data(Self.capabilityName)])
            }
        }
        return true
    }

    public func setattr(_ ino: UInt64, _ c: AttributeChanges) throws(FSError) -> InodeAttributes {
        if let size = c.size {
            guard let f = fileData(ino) else {
                if (try getattr(ino)).isDirectory { throw .isDirectory }
                throw .invalid
            }
            try truncate(f, to: size)
            closeDescriptorsIfUnused(f)
        }
        metaLock.lock(); defer { metaLock.unlock() }
        guard let rec = inodes[ino] else { throw .notFound }
        // A change of attributes alone (chmod, chown, utimens: cp -a, rsync
        // -a and tar set them on every file) commits with the next group;
        // a size change commits now, with the chunks the truncate changed.
        if c.size == nil { try checkDeferredWrites() }
        let now = wallClockNanos()
        var a = rec.attr
        var acl: [UInt8]?
        if let m = c.mode {
            a.mode = (a.mode & UInt32(S_IFMT)) | (m & 0o7777)
            if let v = rec.xattrs[PosixACL.accessName], var parsed = PosixACL(xattr: v) {
                parsed.applyChmod(a.mode)
                acl = parsed.xattr
            }
        }
        if c.dropPrivileges && c.mode == nil && !a.isDirectory, dropPrivilegesLocked(rec) { a.mode = rec.attr.mode }
        if let u = c.uid { a.uid = u }
        if let g = c.gid { a.gid = g }
        if let t = c.atime { a.atime = t }
        if let t = c.mtime { a.mtime = t }
        if c.size != nil && c.mtime == nil { a.mtime = now }
        a.ctime = c.ctime ?? now
        if let s = c.size { a.size = s }
        rec.attr = a
        let row = InodeRow(rec)
        let statement: DeferredMetaWrites.Statement = { [acl] db in
            try row.write(db)
            if let acl {
                try db.run("INSERT OR REPLACE INTO xattr (ino, name, value) VALUES (?, ?, ?)",
                           [Int64(bitPattern: ino), Data(PosixACL.accessName), Data(acl)])
            }
        }
        if c.size == nil { queueMetaWrite(statement) } else { try metaWrite(statement) }
        if let acl { rec.xattrs[PosixACL.accessName] = acl }
        return rec.attributes
    }

    // MARK: creating

    /// Ownership and mode of a new inode, as Linux does it: the caller owns
    /// it; in a setgid directory it takes the directory's group, and a new
    /// directory keeps the setgid bit. Under a directory with a default ACL
    /// the mode meets that ACL and the inode inherits it (a directory also as
    /// its default); otherwise the caller's umask applies.
    private func newAttributes(parent: InodeRecord, mode: UInt32, caller: Caller, rdev: UInt64 = 0)
        -> (attr: InodeAttributes, xattrs: [FileName: [UInt8]]) {
        let now = wallClockNanos()
        var gid = caller.gid
        var mode = mode
        let isDir = mode & UInt32(S_IFMT) == UInt32(S_IFDIR)
        var xattrs: [FileName: [UInt8]] = [:]
        if mode & UInt32(S_IFMT) != UInt32(S_IFLNK) {
            if let d = parent.xattrs[PosixACL.defaultName], var acl = PosixACL(xattr: d) {
                mode = acl.applyCreate(mode: mode)
                if !acl.isEquivalentToMode { xattrs[PosixACL.accessName] = acl.xattr }
                if isDir { xattrs[PosixACL.defaultName] = d }
            } else {
                mode &= ~(caller.umask & 0o777)
            }
        }
        if parent.attr.mode & UInt32(S_ISGID) != 0 {
            gid = parent.attr.gid
            if isDir { mode |= UInt32(S_ISGID) }
        }
        let ino = nextIno
        nextIno += 1
        let attr = InodeAttributes(ino: ino, mode: mode, uid: caller.uid, gid: gid, nlink: isDir ? 2 : 1, size: 0,
                                   rdev: rdev, atime: now, mtime: now, ctime: now)
        return (attr, xattrs)
    }

    private func insertLocked(parent dir: InodeRecord, name: FileName, attr: InodeAttributes, xattrs: [FileName: [UInt8]] = [:],
                              target: [UInt8]? = nil) throws(FSError) -> InodeRecord {
        let rec = InodeRecord(attr: attr)
        rec.target = target
        rec.xattrs = xattrs
        rec.lookups = 1
        if attr.isDirectory { rec.parent = dir.attr.ino; dir.attr.nlink += 1 }
        let cookie = nextCookie
        nextCookie += 1
        let dirBefore = dir.attr
        dir.attr.mtime = attr.ctime
        dir.attr.ctime = attr.ctime
        // Committed with the next few milliseconds' changes (group commit).
        let rows = (InodeRow(rec), InodeRow(dir))
        do {
            try deferMetaWrite { db in
                try rows.0.write(db)
                try rows.1.write(db)
                try db.run("INSERT INTO entry (parent, name, ino, cookie) VALUES (?, ?, ?, ?)",
                           [Int64(bitPattern: rows.1.attr.ino), Data(name), Int64(bitPattern: attr.ino), cookie])
                for (n, v) in xattrs {
                    try db.run("INSERT OR REPLACE INTO xattr (ino, name, value) VALUES (?, ?, ?)",
                               [Int64(bitPattern: attr.ino), Data(n), Data(v)])
                }
            }
        } catch {
            dir.attr = dirBefore
            if attr.isDirectory { dir.attr.nlink -= 1 }
            throw error
        }
        dir.entries![name] = DirectoryEntry(ino: attr.ino, cookie: cookie)
        inodes[attr.ino] = rec
        if let data = rec.data { files[attr.ino] = data }
        return rec
    }

    /// mknod, mkfifo, and plain file creation.
    public func mknod(parent: UInt64, name: FileName, mode: UInt32, rdev: UInt64, caller: Caller) throws(FSError) -> InodeAttributes {
        try makeNode(parent: parent, name: name, mode: mode, rdev: rdev, caller: caller, opening: nil)
    }

    /// create(): a new regular file, opened (for writing unless `writable` is false).
    public func create(parent: UInt64, name: FileName, mode: UInt32, caller: Caller, writable: Bool = true) throws(FSError) -> InodeAttributes {
        try makeNode(parent: parent, name: name, mode: UInt32(S_IFREG) | (mode & 0o7777), rdev: 0, caller: caller,
                     opening: writable)
    }

    /// A new node, opened as well unless `opening` is nil (true: for
    /// writing), all under one hold of metaLock.
    private func makeNode(parent: UInt64, name: FileName, mode: UInt32, rdev: UInt64, caller: Caller,
                          opening writable: Bool?) throws(FSError) -> InodeAttributes {
        try checkName(name)
        metaLock.lock(); defer { metaLock.unlock() }
        let dir = try directory(parent)
        if dir.entries![name] != nil || name == [0x2e] || name == [0x2e, 0x2e] { throw .exists }
        var m = mode
        if m & UInt32(S_IFMT) == 0 { m |= UInt32(S_IFREG) }
        let new = newAttributes(parent: dir, mode: m, caller: caller, rdev: rdev)
        let rec = try insertLocked(parent: dir, name: name, attr: new.attr, xattrs: new.xattrs)
        if let writable {
            rec.opens += 1
            if writable { rec.writers += 1 }
        }
        return rec.attributes
    }

    public func mkdir(parent: UInt64, name: FileName, mode: UInt32, caller: Caller) throws(FSError) -> InodeAttributes {
        try checkName(name)
        metaLock.lock(); defer { metaLock.unlock() }
        let dir = try directory(parent)
        if dir.entries![name] != nil || name == [0x2e] || name == [0x2e, 0x2e] { throw .exists }
        let new = newAttributes(parent: dir, mode: UInt32(S_IFDIR) | (mode & 0o7777), caller: caller)
        return try insertLocked(parent: dir, name: name, attr: new.attr, xattrs: new.xattrs).attributes
    }

    public func symlink(target: [UInt8], parent: UInt64, name: FileName, caller: Caller) throws(FSError) -> InodeAttributes {
        try checkName(name)
        if target.count >= 4096 { throw .nameTooLong }
        metaLock.lock(); defer { metaLock.unlock() }
        let dir = try directory(parent)
        if dir.entries![name] != nil { throw .exists }
        var attr = newAttributes(parent: dir, mode: UInt32(S_IFLNK) | 0o777, caller: caller).attr
        attr.size = UInt64(target.count)
        return try insertLocked(parent: dir, name: name, attr: attr, target: target).attributes
    }

    public func link(_ ino: UInt64, newParent: UInt64, newName: FileName) throws(FSError) -> InodeAttributes {
        try checkName(newName)
        metaLock.lock(); defer { metaLock.unlock() }
        let dir = try directory(newParent)
        guard let rec = inodes[ino] else { throw .notFound }
        if rec.attr.isDirectory { throw .permission }
        if dir.entries![newName] != nil { throw .exists }
        if rec.attr.nlink == 0 { throw .notFound }
        try checkDeferredWrites()
        let now = wallClockNanos()
        rec.attr.nlink += 1
        rec.attr.ctime = now
        rec.lookups += 1
        dir.attr.mtime = now
        dir.attr.ctime = now
        let cookie = nextCookie
        nextCookie += 1
        let rows = (InodeRow(rec), InodeRow(dir))
        queueMetaWrite { db in
            try rows.0.write(db)
            try rows.1.write(db)
            try db.run("INSERT INTO entry (parent, name, ino, cookie) VALUES (?, ?, ?, ?)",
                       [Int64(bitPattern: newParent), Data(newName), Int64(bitPattern: ino), cookie])
        }
        dir.entries![newName] = DirectoryEntry(ino: ino, cookie: cookie)
        return rec.attributes
    }

    // MARK: removing

    /// Removes an inode nobody references from memory and meta.db; returns
    /// its number when it has file data to release outside metaLock.
    func detachLocked(_ ino: UInt64) -> UInt64? {
        guard let rec = inodes.removeValue(forKey: ino) else { return nil }
        // After the change that unlinked it, in the same queue; a failed
        // group is kept and retried, so the rows go in the end.
        queueMetaWrite { db in
            try db.run("DELETE FROM inode WHERE ino = ?", [Int64(bitPattern: ino)])
            try db.run("DELETE FROM xattr WHERE ino = ?", [Int64(bitPattern: ino)])
        }
        return rec.attr.isRegular ? ino : nil
    }

    /// Frees a detached file's chunks and cache files. Its chunk rows go
    /// with the next group commit, after the rows that detached it; its
    /// dirty bytes are freed only once that commit is in, since a crash
    /// before it brings the file back with rows naming them.
    func releaseData(_ ino: UInt64) {
        metaLock.lock()
        let f = files.removeValue(forKey: ino)
        filesWithDirtyChunks.remove(ino)
        needsPersist.remove(ino)
        metaLock.unlock()
        guard let f else { return }
        f.lock.lock()
        f.freed = true
        f.closeAllCleanFDs()
        reaper.close(f.openDirtyFiles?.closeAll() ?? [])
        // The chunk map is whole in memory: an empty one with nothing
        // changed means meta.db has no rows either (an empty file: lock
        // files, `touch`), and the delete costs no statement.
        let hasRows = !(f.chunks.isEmpty && f.changed.isEmpty)
        let dirty: [(idx: Int, slot: Int?)] = f.chunks.compactMap { idx, state in
            if case let .dirty(d) = state { return (idx, d.slot) }
            return nil
        }
        f.chunks.removeAll()
        f.lock.unlock()
        guard hasRows else { return }
        queueChunkRowDeletion([ino]) { [self] in
            for d in dirty { discardDirty(ino, d.idx, slot: d.slot, fd: nil) }
        }
    }

    /// Drops one link to `rec` (metaLock held); true when nothing
    /// references it any more (the caller detaches it after queueing the
    /// change that dropped the link).
    private func dropLinkLocked(_ rec: InodeRecord, now: Int64) -> Bool {
        if rec.attr.isDirectory { rec.attr.nlink = 0 } else if rec.attr.nlink > 0 { rec.attr.nlink -= 1 }
        rec.attr.ctime = now
        return rec.attr.nlink == 0 && rec.lookups == 0 && rec.opens == 0
    }

    public func unlink(parent: UInt64, name: FileName) throws(FSError) {
        try checkName(name)
        var free: UInt64?
        do {
            metaLock.lock(); defer { metaLock.unlock() }
            let dir = try directory(parent)
            guard let e = dir.entries![name], let rec = inodes[e.ino] else { throw .notFound }
            if rec.attr.isDirectory { throw .isDirectory }
            try checkDeferredWrites()
            let now = wallClockNanos()
            dir.attr.mtime = now
            dir.attr.ctime = now
            rec.attr.nlink -= 1
            rec.attr.ctime = now
            queueRemoval(of: name, from: dir, rec)
            dir.entries![name] = nil
            if rec.attr.nlink == 0 && rec.lookups == 0 && rec.opens == 0 { free = detachLocked(rec.attr.ino) }
        }
        if let free { releaseData(free) }
    }

    /// Queues the rows of an unlink or rmdir: the entry goes, the folder's
    /// and the inode's new attributes are written (metaLock held).
    private func queueRemoval(of name: FileName, from dir: InodeRecord, _ rec: InodeRecord) {
        let rows = (InodeRow(dir), InodeRow(rec))
        queueMetaWrite { db in
            try db.run("DELETE FROM entry WHERE parent = ? AND name = ?", [Int64(bitPattern: rows.0.attr.ino), Data(name)])
            try rows.0.write(db)
            try rows.1.write(db)
        }
    }

    public func rmdir(parent: UInt64, name: FileName) throws(FSError) {
        try checkName(name)
        if name == [0x2e] { throw .invalid }
        if name == [0x2e, 0x2e] { throw .notEmpty }
        metaLock.lock(); defer { metaLock.unlock() }
        let dir = try directory(parent)
        guard let e = dir.entries![name], let rec = inodes[e.ino] else { throw .notFound }
        guard rec.attr.isDirectory else { throw .notDirectory }
        if !rec.entries!.isEmpty { throw .notEmpty }
        try checkDeferredWrites()
        let now = wallClockNanos()
        dir.attr.mtime = now
        dir.attr.ctime = now
        dir.attr.nlink -= 1
        rec.attr.nlink = 0
        rec.attr.ctime = now
        queueRemoval(of: name, from: dir, rec)
        dir.entries![name] = nil
        if rec.lookups == 0 && rec.opens == 0 { _ = detachLocked(rec.attr.ino) }
    }

    /// True when `ino` is `ancestor` or lies below it (metaLock held).
    private func isInSubtree(_ ino: UInt64, of ancestor: UInt64) -> Bool {
        var cur = ino
        var steps = 0
        while steps < 100_000 {
            if cur == ancestor { return true }
            if cur == Self.rootIno { return false }
            guard let rec = inodes[cur] else { return false }
            cur = rec.parent
            steps += 1
        }
        return false
    }

    public static let renameNoReplace: UInt32 = 1
    public static let renameExchange: UInt32 = 2

    public func rename(parent: UInt64, name: FileName, newParent: UInt64, newName: FileName, flags: UInt32) throws(FSError) {
        try checkName(name)
        try checkName(newName)
        if flags & ~(Self.renameNoReplace | Self.renameExchange) != 0 { throw .invalid }
        if flags & Self.renameNoReplace != 0 && flags & Self.renameExchange != 0 { throw .invalid }
        for n in [name, newName] where n == [0x2e] || n == [0x2e, 0x2e] { throw .invalid }
        var free: UInt64?
        var replacing: FileData?
        do {
            metaLock.lock(); defer { metaLock.unlock() }
            let src = try directory(parent)
            let dst = try directory(newParent)
            guard let se = src.entries![name], let srec = inodes[se.ino] else { throw .notFound }
            let de = dst.entries![newName]
            let drec = de.flatMap { inodes[$0.ino] }
            try checkDeferredWrites()
            let now = wallClockNanos()

            if flags & Self.renameExchange != 0 {
                guard let de, let drec else { throw .notFound }
                if srec.attr.isDirectory && isInSubtree(newParent, of: srec.attr.ino) { throw .invalid }
                if drec.attr.isDirectory && isInSubtree(parent, of: drec.attr.ino) { throw .invalid }
                let c1 = nextCookie, c2 = nextCookie + 1
                nextCookie += 2
                src.entries![name] = DirectoryEntry(ino: de.ino, cookie: c1)
                dst.entries![newName] = DirectoryEntry(ino: se.ino, cookie: c2)
                if parent != newParent {
                    if srec.attr.isDirectory { srec.parent = newParent; src.attr.nlink -= 1; dst.attr.nlink += 1 }
                    if drec.attr.isDirectory { drec.parent = parent; dst.attr.nlink -= 1; src.attr.nlink += 1 }
                }
                for r in [srec, drec] { r.attr.ctime = now }
                for r in [src, dst] { r.attr.mtime = now; r.attr.ctime = now }
                let rows = [srec, drec, src, dst].map { InodeRow($0) }
                queueMetaWrite { db in
                    try db.run("UPDATE entry SET ino = ?, cookie = ? WHERE parent = ? AND name = ?",
                               [Int64(bitPattern: de.ino), c1, Int64(bitPattern: parent), Data(name)])
                    try db.run("UPDATE entry SET ino = ?, cookie = ? WHERE parent = ? AND name = ?",
                               [Int64(bitPattern: se.ino), c2, Int64(bitPattern: newParent), Data(newName)])
                    for r in rows { try r.write(db) }
                }
                return
            }

            if let de, de.ino == se.ino { return }  // two links to one inode: POSIX says do nothing
            if flags & Self.renameNoReplace != 0 && de != nil { throw .exists }
            if srec.attr.isDirectory && isInSubtree(newParent, of: srec.attr.ino) { throw .invalid }
            if let drec {
                if srec.attr.isDirectory {
                    guard drec.attr.isDirectory else { throw .notDirectory }
                    if !drec.entries!.isEmpty { throw .notEmpty }
                } else if drec.attr.isDirectory {
                    throw .isDirectory
                }
            }
            let cookie = nextCookie
            nextCookie += 1
            src.entries![name] = nil
            if let drec, drec.attr.isDirectory { dst.attr.nlink -= 1 }
            dst.entries![newName] = DirectoryEntry(ino: se.ino, cookie: cookie)
            if srec.attr.isDirectory && parent != newParent {
                srec.parent = newParent
                src.attr.nlink -= 1
                dst.attr.nlink += 1
            }
            srec.attr.ctime = now
            for r in [src, dst] { r.attr.mtime = now; r.attr.ctime = now }
            let unreferenced = drec.map { dropLinkLocked($0, now: now) } ?? false
            var rows = [srec, src, dst].map { InodeRow($0) }
            if let drec { rows.append(InodeRow(drec)) }
            queueMetaWrite { [rows] db in
                try db.run("DELETE FROM entry WHERE parent = ? AND name = ?", [Int64(bitPattern: parent), Data(name)])
                try db.run("INSERT OR REPLACE INTO entry (parent, name, ino, cookie) VALUES (?, ?, ?, ?)",
                           [Int64(bitPattern: newParent), Data(newName), Int64(bitPattern: se.ino), cookie])
                for r in rows { try r.write(db) }
            }
            if let drec, unreferenced { free = detachLocked(drec.attr.ino) }
            if drec != nil && needsPersist.contains(se.ino) { replacing = files[se.ino] }
        }
        // A file that replaces another is written to meta.db with the rename,
        // as ext4 does (auto_da_alloc): "write a new version, rename it over
        // the old one" without fsync then keeps one version or the other
        // through a crash, never an empty file.
        if let replacing {
            replacing.lock.lock()
            persistLocked(replacing)
            replacing.lock.unlock()
        }
        if let free { releaseData(free) }
    }

    // MARK: directories

    /// A snapshot of a directory's entries in cookie order (stable offsets).
    public func listDirectory(_ ino: UInt64) throws(FSError) -> (parent: UInt64, entries: [DirectoryListingEntry]) {
        metaLock.lock(); defer { metaLock.unlock() }
        let dir = try directory(ino)
        var out: [DirectoryListingEntry] = []
        out.reserveCapacity(dir.entries!.count)
        for (name, e) in dir.entries! {
            out.append(DirectoryListingEntry(name: name, ino: e.ino, mode: inodes[e.ino]?.attr.mode ?? 0, cookie: e.cookie))
        }
        out.sort { $0.cookie < $1.cookie }
        return (dir.parent, out)
    }

    // MARK: open files

    public func open(_ ino: UInt64, writable: Bool = false) throws(FSError) {
        metaLock.lock(); defer { metaLock.unlock() }
        guard let rec = inodes[ino] else { throw .notFound }
        rec.opens += 1
        if writable { rec.writers += 1 }
    }

    /// A truncate by path (no handle) leaves nothing open: there may be
    /// no last close to close it.
    private func closeDescriptorsIfUnused(_ f: FileData) {
        f.lock.lock()
        metaLock.lock()
        let unused = (inodes[f.ino]?.opens ?? 0) == 0
        metaLock.unlock()
        if unused { reaper.close(f.openDirtyFiles?.closeAll() ?? []) }
        f.lock.unlock()
    }

    /// Last close of a handle: persists the file and frees it if unlinked.
    public func release(_ ino: UInt64, writable: Bool = false) {
        if let f = fileData(ino) {
            f.lock.lock()
            reaper.close(f.closeAllDescriptors())
            f.lock.unlock()
        }
        metaLock.lock()
        var free: UInt64?
        if let rec = inodes[ino] {
            rec.opens = max(0, rec.opens - 1)
            if writable { rec.writers = max(0, rec.writers - 1) }
            if rec.opens == 0 && rec.lookups == 0 && rec.attr.nlink == 0 { free = detachLocked(ino) }
        }
        metaLock.unlock()
        if let free { releaseData(free) }
        uploader.wake()
    }

    // MARK: extended attributes

    public static let xattrCreate: Int32 = 1
    public static let xattrReplace: Int32 = 2

    /// Sets an extended attribute. An access ACL also sets the mode's
    /// permission bits; `dropSetgid` (the caller is outside the file's group
    /// and unprivileged) clears set-group-ID as well, as Linux does.
    public func setxattr(_ ino: UInt64, name: FileName, value: [UInt8], flags: Int32, dropSetgid: Bool = false) throws(FSError) {
        if name.count > 255 || name.isEmpty { throw .range }
        if value.count > 65536 { throw FSError(E2BIG) }
        metaLock.lock(); defer { metaLock.unlock() }
        guard let rec = inodes[ino] else { throw .notFound }
        let old = rec.xattrs[name]
        if flags & Self.xattrCreate != 0 && old != nil { throw .exists }
        if flags & Self.xattrReplace != 0 && old == nil { throw .noData }
        if old == nil && Self.xattrListSize(rec.xattrs) + name.count + 1 > Self.xattrListLimit { throw .noSpace }
        if Self.xattrBytes(rec.xattrs) - (old.map { name.count + $0.count } ?? 0) + name.count + value.count > Self.xattrBytesLimit {
            throw .noSpace
        }
        try checkDeferredWrites()
        var stored: [UInt8]? = value
        var attr = rec.attr
        if name == PosixACL.accessName || name == PosixACL.defaultName {
            guard let acl = PosixACL(xattr: value) else { throw .invalid }
            if name == PosixACL.defaultName {
                guard attr.isDirectory else { throw .access }
            } else {
                // The mode follows the ACL; an ACL the mode says in full is not kept.
                attr.mode = (attr.mode & ~UInt32(0o777)) | acl.modeBits
                if dropSetgid { attr.mode &= ~UInt32(S_ISGID) }
                if acl.isEquivalentToMode { stored = nil }
            }
        }
        attr.ctime = wallClockNanos()
        rec.attr = attr
        let row = InodeRow(rec)
        queueMetaWrite { [stored] db in
            if let stored {
                try db.run("INSERT OR REPLACE INTO xattr (ino, name, value) VALUES (?, ?, ?)",
                           [Int64(bitPattern: ino), Data(name), Data(stored)])
            } else {
                try db.run("DELETE FROM xattr WHERE ino = ? AND name = ?", [Int64(bitPattern: ino), Data(name)])
            }
            try row.write(db)
        }
        rec.xattrs[name] = stored
    }

    /// listxattr cannot return more than 64 KiB of names (XATTR_LIST_MAX):
    /// a name that would make the list longer is refused with ENOSPC, as
    /// ext4 refuses one its xattr block cannot hold, so that tools copying
    /// xattrs (cp -a, rsync -X, tar --xattrs) can always list them.
    static let xattrListLimit = 65536
    /// Names and values of one inode together, all of them kept in memory.
    static let xattrBytesLimit = 1 << 20

    static func xattrListSize(_ xattrs: [FileName: [UInt8]]) -> Int {
        xattrs.keys.reduce(0) { $0 + $1.count + 1 }
    }

    static func xattrBytes(_ xattrs: [FileName: [UInt8]]) -> Int {
        xattrs.reduce(0) { $0 + $1.key.count + $1.value.count }
    }

    public func getxattr(_ ino: UInt64, name: FileName) throws(FSError) -> [UInt8] {
        metaLock.lock(); defer { metaLock.unlock() }
        guard let rec = inodes[ino] else { throw .notFound }
        guard let v = rec.xattrs[name] else { throw .noData }
        return v
    }

    /// Names, each NUL-terminated, as listxattr returns them.
    public func listxattr(_ ino: UInt64) throws(FSError) -> [UInt8] {
        metaLock.lock(); defer { metaLock.unlock() }
        guard let rec = inodes[ino] else { throw .notFound }
        var out: [UInt8] = []
        for name in rec.xattrs.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) { out += name; out.append(0) }
        return out
    }

    public func removexattr(_ ino: UInt64, name: FileName) throws(FSError) {
        metaLock.lock(); defer { metaLock.unlock() }
        guard let rec = inodes[ino] else { throw .notFound }
        guard rec.xattrs[name] != nil else { throw .noData }
        try checkDeferredWrites()
        rec.attr.ctime = wallClockNanos()
        let row = InodeRow(rec)
        queueMetaWrite { db in
            try db.run("DELETE FROM xattr WHERE ino = ? AND name = ?", [Int64(bitPattern: ino), Data(name)])
            try row.write(db)
        }
        rec.xattrs[name] = nil
    }

    // MARK: file system

    /// statfs: the capacity and free space of the renter's contracts (in
    /// bytes of data, before erasure coding), with what can be written now
    /// also bounded by the cache disk, where writes land first. A store
    /// without a limit of its own (a local folder), or a pool still
    /// forming, reports the cache disk.
    public func statfs() -> (blocks: UInt64, free: UInt64, available: UInt64, files: UInt64, blockSize: UInt64) {
        let d = diskSpace(config.stateDirectory) ?? (0, 0, 0, 4096)
        metaLock.lock(); let n = UInt64(inodes.count); metaLock.unlock()
        guard let c = segments.capacity(), c.total > 0 else {
            return (d.total / d.blockSize, d.free / d.blockSize, d.available / d.blockSize, n, d.blockSize)
        }
        let bs = d.blockSize
        return (c.total / bs, c.free / bs, min(c.free, d.available) / bs, n, bs)
    }

    func fileData(_ ino: UInt64) -> FileData? {
        metaLock.lock(); defer { metaLock.unlock() }
        return files[ino]
    }
}
