import Foundation
import GRDB
import GranaryCore
import GranaryRenter
import Logging
import Synchronization

/// How a store is set up.
public struct StoreConfiguration: Sendable {
    /// Holds meta.db, the cache folders and the control socket.
    public var stateDirectory: String
    /// Budget for clean cached chunks (dirty ones are never evicted).
    public var cacheBudget: UInt64
    /// Dirty data idle this long is sealed and uploaded.
    public var idleUploadDelay: Double = 2
    /// A read of uncached data fails with EIO after this long.
    public var readTimeout: Double = 30
    /// Writes get ENOSPC when the cache disk has less free space than this.
    public var minimumFreeDisk: UInt64 = 128 << 20
    /// While the mount is being read, the uploader seals at most this many
    /// bytes per second (0: no limit), leaving the cache disk and the cores
    /// to the reads. Flushes are never held back.
    public var uploadRateWhileReading: UInt64 = 64 << 20
    /// When and how fast segments are compacted and garbage collected.
    public var compaction = CompactionConfiguration()

    public init(stateDirectory: String, cacheBudget: UInt64 = 4 << 30) {
        self.stateDirectory = stateDirectory
        self.cacheBudget = cacheBudget
    }
}

/// Why a store could not open.
public struct StoreOpenError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Who makes a request: new inodes are owned by the caller.
public struct Caller: Sendable {
    public var uid: UInt32
    public var gid: UInt32
    /// Permission bits a new inode loses when its directory has no default
    /// ACL: the caller's umask when the kernel leaves it to the file system
    /// (FUSE_CAP_DONT_MASK), else 0 (the kernel already applied it).
    public var umask: UInt32
    public init(uid: UInt32, gid: UInt32, umask: UInt32 = 0) { self.uid = uid; self.gid = gid; self.umask = umask }
}

/// The renter's file system state: metadata (meta.db, mirrored in memory for
/// fast lookups), the write-back chunk cache, and the uploader that seals
/// dirty chunks into segments on a `SegmentStore`.
///
/// Thread-safe. Locks: `metaLock` guards the namespace, inode attributes and
/// every inode/entry/xattr row written to meta.db (written while held, so
/// the database never lags the memory it mirrors out of order); each
/// file's `FileData.lock` guards its chunk map and chunk rows. Order:
/// referenceLock, then FileData.lock, then metaLock, then blobLock.
public final class GranaryStore: @unchecked Sendable {
    public static let rootIno: UInt64 = 1

    let config: StoreConfiguration
    let segments: any SegmentStore
    let sealer: ChunkSealer
    let log = Logger(label: "granary.store")
    let db: DatabasePool
    let dirtyDirectory: String
    /// Slots for the dirty bytes of small chunks (one shared cache file).
    let slab: ChunkSlab
    /// Deletes the files of dropped dirty chunks and evicted clean ones
    /// off the FUSE threads (shared with `cleanCache`).
    let reaper: CacheFileReaper
    let cacheSpace = FreeSpaceGauge()
    let readActivity = ReadActivity()
    /// The last cache file could not be created for want of descriptors
    /// (logged once until one can be again).
    let descriptorsRunOut = Atomic<Bool>(false)
    let cleanCache: CleanCache
    let maxSegmentSize: Int

    let metaLock = NSLock()
    var inodes: [UInt64: InodeRecord] = [:]
    var files: [UInt64: FileData] = [:]
    /// Files that may hold dirty chunks: the uploader, `status` and `flush`
    /// look at these instead of every file. A file joins under its own lock
    /// when a chunk turns dirty, and leaves only when a look under that lock
    /// finds none, so it is never missing while dirty.
    var filesWithDirtyChunks: Set<UInt64> = []
    var nextIno: UInt64 = 2
    var nextCookie: Int64 = 3
    var needsPersist: Set<UInt64> = []

    let blobLock = NSLock()
    var blobs: [Hash256: BlobLocation] = [:]

    /// Held by an upload pass from start to end and by the compactor while
    /// it counts references or moves chunks. An upload pass is the only code
    /// that makes a new reference to an existing chunk (dedupe), so while
    /// the compactor holds this lock a chunk no file refers to stays dead.
    let referenceLock = NSLock()
    /// Segments being stored and not yet recorded in meta.db: never orphans.
    let inFlight = InFlightSegments()

    private var walFD: Int32 = -1
    private var dirtyDirFD: Int32 = -1

    let uploader = UploaderState()
    let deferred = DeferredMetaWrites()
    let fetches = ChunkFetches()
    private(set) var compactor: SegmentCompactor!

    public init(configuration: StoreConfiguration, segments: any SegmentStore, keys: RenterKeys) throws {
        config = configuration
        self.segments = segments
        sealer = keys.chunkSealer()
        maxSegmentSize = type(of: segments).maxSegmentSize
        let state = configuration.stateDirectory
        dirtyDirectory = state + "/cache/dirty"
        let cleanDirectory = state + "/cache/clean"
        for dir in [state, state + "/cache", dirtyDirectory, cleanDirectory] {
            do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
                throw StoreOpenError("cannot create \(dir): \(error.localizedDescription)")
            }
        }
        slab = try ChunkSlab(directory: dirtyDirectory)
        reaper = CacheFileReaper(directory: dirtyDirectory)
        cleanCache = CleanCache(directory: cleanDirectory, budget: configuration.cacheBudget, slab: slab, reaper: reaper)
        var dbConfig = Configuration()
        dbConfig.prepareDatabase { db in
            // NORMAL in WAL mode: a commit survives a crash of this process;
            // fsync() additionally fsyncs the WAL for power loss.
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            // A checkpoint fsyncs the WAL and the database while the commit
            // that triggered it (and metaLock) waits. A small-file copy
            // writes a few pages per create, which at SQLite's default of
            // 1000 pages meant a checkpoint every ~250 files; 16 MiB of WAL
            // makes them rare. Durability is unchanged: fsync() still
            // fsyncs the WAL.
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 4096")
            // WAL frames are 4 KiB pages behind 24-byte headers, so every
            // frame straddles two disk blocks. Rewriting a WAL from its
            // start after a checkpoint made each such block, once out of
            // the page cache, a synchronous read before the write (about
            // one disk read per file created); truncated at each restart,
            // the WAL only ever grows into fresh blocks.
            try db.execute(sql: "PRAGMA journal_size_limit = 0")
        }
        do {
            db = try DatabasePool(path: state + "/meta.db", configuration: dbConfig)
            try MetaSchema.migrator.migrate(db)
        } catch {
            throw StoreOpenError("cannot open \(state)/meta.db: \(error)")
        }
        try load()
        walFD = Glibc.open(state + "/meta.db-wal", O_RDONLY | O_CLOEXEC)
        dirtyDirFD = Glibc.open(dirtyDirectory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        startUploader()
        compactor = SegmentCompactor(store: self, configuration: configuration.compaction)
        compactor.start()
    }

    deinit {
        if walFD >= 0 { close(walFD) }
        if dirtyDirFD >= 0 { close(dirtyDirFD) }
    }

    // MARK: loading and crash recovery

    private func load() throws {
        let now = wallClockNanos()
        try db.write { db in
            if try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM inode WHERE ino = 1") == 0 {
                let mode = UInt32(S_IFDIR) | 0o755
                try db.execute(sql: """
                    INSERT INTO inode (ino, mode, uid, gid, nlink, size, rdev, atime, mtime, ctime, parent)
                    VALUES (1, ?, ?, ?, 2, 0, 0, ?, ?, ?, 1)
                    """, arguments: [mode, getuid(), getgid(), now, now, now])
            }
            // Orphans: unlinked while open when the last run ended.
            try db.execute(sql: "DELETE FROM inode WHERE nlink = 0")
            try db.execute(sql: "DELETE FROM xattr WHERE ino NOT IN (SELECT ino FROM inode)")
            try db.execute(sql: "DELETE FROM chunk WHERE ino NOT IN (SELECT ino FROM inode)")
        }
        var dirtyFiles: Set<String> = [ChunkSlab.fileName]
        var usedSlots = Set<Int>()
        // Cursors, not arrays: a tree of a million files is never in
        // memory twice while it loads.
        try db.read { db in
            let inodeRows = try Row.fetchCursor(db, sql: "SELECT * FROM inode")
            while let row = try inodeRows.next() {
                let attr = InodeAttributes(
                    ino: UInt64(row["ino"] as Int64), mode: UInt32(row["mode"] as Int64), uid: UInt32(row["uid"] as Int64),
                    gid: UInt32(row["gid"] as Int64), nlink: UInt32(row["nlink"] as Int64), size: UInt64(row["size"] as Int64),
                    rdev: UInt64(row["rdev"] as Int64), atime: row["atime"], mtime: row["mtime"], ctime: row["ctime"])
                let rec = InodeRecord(attr: attr)
                rec.parent = UInt64(row["parent"] as Int64)
                if let t: Data = row["target"] { rec.target = [UInt8](t) }
                inodes[attr.ino] = rec
                nextIno = max(nextIno, attr.ino + 1)
                if let data = rec.data { files[attr.ino] = data }
            }
            let entryRows = try Row.fetchCursor(db, sql: "SELECT parent, name, ino, cookie FROM entry")
            while let row = try entryRows.next() {
                let parent = UInt64(row["parent"] as Int64)
                let name = [UInt8](row["name"] as Data)
                let cookie: Int64 = row["cookie"]
                inodes[parent]?.entries?[name] = DirectoryEntry(ino: UInt64(row["ino"] as Int64), cookie: cookie)
                nextCookie = max(nextCookie, cookie + 1)
            }
            let xattrRows = try Row.fetchCursor(db, sql: "SELECT ino, name, value FROM xattr")
            while let row = try xattrRows.next() {
                inodes[UInt64(row["ino"] as Int64)]?.xattrs[[UInt8](row["name"] as Data)] = [UInt8](row["value"] as Data)
            }
            let blobRows = try Row.fetchCursor(db, sql: "SELECT * FROM blob")
            while let row = try blobRows.next() {
                guard let id = Hash256(bytes: row["chunk_id"] as Data), let seg = Hash256(bytes: row["segment"] as Data) else { continue }
                blobs[id] = BlobLocation(segment: seg, offset: row["offset"], sealedLength: row["sealed_length"], plainLength: row["plain_length"])
            }
            let chunkRows = try Row.fetchCursor(db, sql: "SELECT * FROM chunk")
            while let row = try chunkRows.next() {
                let ino = UInt64(row["ino"] as Int64)
                let idx: Int = row["idx"]
                guard let f = files[ino] else { continue }
                if (row["dirty"] as Int64) != 0, let slot = row["slot"] as Int? {
                    let d = DirtyChunk(slab: slab, slot: slot)
                    d.unsynced = false
                    d.lastWrite = 0  // upload soon
                    f.chunks[idx] = .dirty(d)
                    filesWithDirtyChunks.insert(ino)
                    usedSlots.insert(slot)
                } else if (row["dirty"] as Int64) != 0 {
                    // Opened when used: a restart after a long outage may
                    // find more dirty chunks than the process may open.
                    let path = dirtyPath(ino, idx)
                    if access(path, F_OK) != 0 {
                        log.error("dirty chunk \(idx) of inode \(ino) lost its cache file \(path); it reads as zeros")
                        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
                        if fd >= 0 { close(fd) }
                    }
                    let base = (row["base_id"] as Data?).flatMap { Hash256(bytes: $0) }
                    let d = DirtyChunk(path: path, fd: -1, base: base, baseLimit: row["base_limit"], descriptors: f.dirtyDescriptors)
                    if let r: Data = row["ranges"] { d.ranges = RangeSet(encoded: [UInt8](r)) }
                    // A SIGKILL may have left its bytes in the page cache
                    // only: the next fsync of the file syncs it.
                    d.unsynced = true
                    d.lastWrite = 0  // upload soon
                    f.chunks[idx] = .dirty(d)
                    filesWithDirtyChunks.insert(ino)
                    dirtyFiles.insert((path as NSString).lastPathComponent)
                } else if let id = (row["chunk_id"] as Data?).flatMap({ Hash256(bytes: $0) }) {
                    f.chunks[idx] = .clean(id: id, length: row["length"])
                }
            }
        }
        // Clean chunks the last clean unmount left in slots, unless a dirty
        // row names the slot (it cannot, but a damaged index must not
        // serve one chunk's bytes as another's).
        var listed = usedSlots
        for kept in cleanCache.takeSlotIndex() where !listed.contains(kept.slot) {
            listed.insert(kept.slot)
            _ = cleanCache.insert(kept.id, slot: kept.slot, size: kept.size)
        }
        slab.recover(used: usedSlots.union(cleanCache.heldSlots()))
        // Dirty slots a SIGKILL left in the page cache only, and the slots
        // just zeroed, reach the disk before any fsync can promise them.
        if !usedSlots.isEmpty { Glibc.fsync(slab.fd) }
        // Cache files no row names were written after the last persist and
        // never fsynced: nothing promised them, drop them.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dirtyDirectory)) ?? [] where !dirtyFiles.contains(name) {
            Glibc.unlink(dirtyDirectory + "/" + name)
        }
        let recovered = files.values.reduce(0) { $0 + $1.dirtyCount }
        if recovered > 0 { log.notice("recovered \(recovered) dirty chunks from the cache; uploading them") }
    }

    /// Notes that `f` has a dirty chunk (f.lock held).
    func noteDirty(_ f: FileData) {
        metaLock.lock()
        filesWithDirtyChunks.insert(f.ino)
        metaLock.unlock()
    }

    /// The files that may hold dirty chunks. Whoever looks at one under its
    /// lock and finds none calls `forgetIfClean`.
    func dirtyFileList() -> [FileData] {
        metaLock.lock()
        let list = filesWithDirtyChunks.compactMap { files[$0] }
        metaLock.unlock()
        return list
    }

    /// Drops `f` from the dirty set when it has no dirty chunk (f.lock held).
    func forgetIfClean(_ f: FileData) {
        guard f.dirtyCount == 0 else { return }
        metaLock.lock()
        filesWithDirtyChunks.remove(f.ino)
        metaLock.unlock()
    }

    func dirtyPath(_ ino: UInt64, _ idx: Int) -> String { "\(dirtyDirectory)/\(ino)-\(idx)" }

    /// Drops a dirty chunk's cached bytes: its own file, or its slot. A
    /// slot is let go only once meta.db no longer names it (the caller has
    /// committed the chunk's new row).
    func discardDirty(_ ino: UInt64, _ idx: Int, _ d: DirtyChunk) {
        discardDirty(ino, idx, slot: d.slot, fd: d.detachDescriptor())
    }

    /// Persists `f` (its lock held), then discards the dirty chunks its
    /// change let go of. When meta.db refuses the write, their rows still
    /// name them, so their bytes stay (a slot unused, a file kept) until
    /// the next start, which frees what no row names.
    func persistThenDiscard(_ f: FileData, _ dropped: [(Int, DirtyChunk)]) {
        guard persistLocked(f) else {
            if !dropped.isEmpty { log.warning("inode \(f.ino): \(dropped.count) dropped chunks kept until restart (meta.db write failed)") }
            return
        }
        for (idx, d) in dropped { discardDirty(f.ino, idx, d) }
    }

    func discardDirty(_ ino: UInt64, _ idx: Int, slot: Int?, fd: Int32?) {
        if let slot { slab.retire(slot) } else { reaper.delete(dirtyPath(ino, idx), closing: fd) }
    }

    /// Makes retired slab slots reusable once the commits that let go of
    /// them are durable, so that no crash brings back a row naming a slot
    /// that meanwhile holds another chunk's bytes.
    func reuseRetiredSlots() {
        let slots = slab.takeRetired()
        guard !slots.isEmpty else { return }
        syncDatabase()
        slab.reuse(slots)
    }

    // MARK: persistence helpers (metaLock held)

    /// Queues the removal of deleted files' chunk rows (takes metaLock);
    /// `then` runs once that is committed, and the segments' usage is
    /// counted again.
    func queueChunkRowDeletion(_ inos: [UInt64], then: @escaping @Sendable () -> Void = {}) {
        let keys = inos.map { Int64(bitPattern: $0) }
        metaLock.lock()
        queueMetaWrite({ db in for ino in keys { try db.run("DELETE FROM chunk WHERE ino = ?", [ino]) } },
                       afterCommit: { [self] in then(); compactor?.invalidateUsage() })
        metaLock.unlock()
    }

    func writeChunkRow(_ db: Database, ino: UInt64, idx: Int, state: ChunkState?) throws {
        switch state {
        case nil:
            try db.run("DELETE FROM chunk WHERE ino = ? AND idx = ?", [Int64(bitPattern: ino), idx])
        case let .clean(id, length)?:
            try db.run("INSERT OR REPLACE INTO chunk (ino, idx, dirty, chunk_id, length, base_id, base_limit, ranges, slot) VALUES (?, ?, 0, ?, ?, NULL, 0, NULL, NULL)",
                       [Int64(bitPattern: ino), idx, Data(id.bytes), length])
        case let .dirty(d)?:
            try db.run("INSERT OR REPLACE INTO chunk (ino, idx, dirty, chunk_id, length, base_id, base_limit, ranges, slot) VALUES (?, ?, 1, NULL, 0, ?, ?, ?, ?)",
                       [Int64(bitPattern: ino), idx, d.base.map { Data($0.bytes) }, d.baseLimit,
                                       d.base == nil ? nil : Data(d.ranges.encoded), d.slot])
        }
    }

    /// Writes a file's changed chunk rows and its inode row. Called with
    /// `f.lock` held; takes metaLock.
    @discardableResult
    func persistLocked(_ f: FileData) -> Bool {
        metaLock.lock()
        defer { metaLock.unlock() }
        needsPersist.remove(f.ino)
        let rec = inodes[f.ino]
        let changed = f.changed
        if changed.isEmpty && rec == nil { return true }
        do {
            try metaTransaction { db in
                if let rec { try InodeRow(persisting: rec).write(db) }
                if !f.freed { for idx in changed { try writeChunkRow(db, ino: f.ino, idx: idx, state: f.chunks[idx]) } }
            }
            f.changed.removeAll()
            f.rowsPersisted &+= 1
            rec?.storedSize = rec?.attr.size ?? 0
            return true
        } catch {
            log.error("meta.db write failed for inode \(f.ino): \(error)")
            needsPersist.insert(f.ino)
            return false
        }
    }

    /// Persists every file changed by writes since the last call, in
    /// transactions of `persistBatchSize` files, each with metaLock held
    /// throughout so no fsync writes rows in between. A file whose lock is
    /// busy is tried, never waited for there (the lock order is file, then
    /// metaLock), and persisted on its own afterwards.
    ///
    /// With `writtenBefore`, files written since then wait for a later call:
    /// a pass every 0.25 s persisting the files a copy had just written held
    /// metaLock, which every namespace request needs, for a transaction of
    /// 32 files at a time (a warm `cp -r` of 2,000 small files took 540-1,040
    /// ms with it, 520-625 ms without).
    func persistAll(writtenBefore: UInt64? = nil) {
        metaLock.lock()
        let pending = writtenBefore.map { cutoff in needsPersist.filter { (inodes[$0]?.lastDataWrite ?? 0) < cutoff } } ?? Array(needsPersist)
        metaLock.unlock()
        var busy: [FileData] = []
        var start = 0
        while start < pending.count {
            let end = min(start + Self.persistBatchSize, pending.count)
            busy += persistBatch(pending[start..<end])
            start = end
        }
        for f in busy {
            f.lock.lock()
            persistLocked(f)
            f.lock.unlock()
        }
    }

    /// Files per transaction of `persistAll`. Every namespace operation
    /// waits for metaLock while one is written: a copy of many small files
    /// leaves thousands to persist, and one transaction for all of them
    /// stalled the copy for milliseconds at every uploader pass.
    static let persistBatchSize = 32

    /// One transaction of `persistAll`; returns the files it skipped.
    private func persistBatch(_ inos: ArraySlice<UInt64>) -> [FileData] {
        metaLock.lock()
        defer { metaLock.unlock() }
        let batch = inos.compactMap { needsPersist.contains($0) ? files[$0] : nil }
        guard !batch.isEmpty else { return [] }
        var locked: [FileData] = [], busy: [FileData] = []
        defer { for f in locked { f.lock.unlock() } }
        for f in batch { if f.lock.try() { locked.append(f) } else { busy.append(f) } }
        do {
            try metaTransaction { db in
                for f in locked {
                    if let rec = inodes[f.ino] { try InodeRow(persisting: rec).write(db) }
                    if !f.freed { for idx in f.changed { try writeChunkRow(db, ino: f.ino, idx: idx, state: f.chunks[idx]) } }
                }
            }
        } catch {
            log.error("meta.db write failed for \(locked.count) files: \(error)")
            return []
        }
        for f in locked {
            f.changed.removeAll()
            f.rowsPersisted &+= 1
            needsPersist.remove(f.ino)
            if let rec = inodes[f.ino] { rec.storedSize = rec.attr.size }
        }
        return busy
    }

    /// Makes committed metadata durable against power loss (fsync of the WAL).
    func syncDatabase() {
        if walFD >= 0 { Glibc.fsync(walFD) }
    }

    func syncDirtyDirectory() {
        if dirtyDirFD >= 0 { Glibc.fsync(dirtyDirFD) }
    }

    /// Runs `body` with metaLock held and a write transaction open.
    func metaWrite<T>(_ body: (Database) throws -> T) throws(FSError) -> T {
        do { return try metaTransaction { try body($0) } } catch let e as FSError { throw e } catch {
            log.error("meta.db write failed: \(error)")
            throw FSError(databaseError: error)
        }
    }

    /// Every meta.db write goes through here: the deferred namespace
    /// statements run first, in the same transaction, so meta.db stays a
    /// prefix of what the mount did (see `DeferredMetaWrites`).
    func metaTransaction<T>(_ body: (Database) throws -> T) throws -> T {
        var taken = DeferredMetaWrites.Batch()
        do {
            let result = try db.write { db -> T in
                taken = deferred.take()
                for statement in taken.statements { try statement(db) }
                return try body(db)
            }
            if !taken.isEmpty { deferred.committed() }
            for action in taken.actions { action() }
            return result
        } catch {
            if !taken.isEmpty {
                // A refusal of `body` (an FSError it threw) is not the
                // deferred statements' failure: they are simply retried.
                deferred.restore(taken, after: error is FSError ? nil : error)
                scheduleDeferredCommit(retry: true)
            }
            throw error
        }
    }

    /// Queues a namespace change's statements (value snapshots: they run
    /// later, on another thread). Refused while deferred changes cannot be
    /// committed, so memory never runs far ahead of meta.db.
    func deferMetaWrite(_ statement: @escaping DeferredMetaWrites.Statement) throws(FSError) {
        try checkDeferredWrites()
        queueMetaWrite(statement)
    }

    /// Refuses a namespace change while deferred changes cannot be
    /// committed (a full disk under meta.db). Callers that change memory
    /// before they queue their statements check here first.
    func checkDeferredWrites() throws(FSError) {
        if let failure = deferred.lastFailure { throw FSError(databaseError: failure) }
    }

    /// Queues a namespace change's statements after `checkDeferredWrites`
    /// (metaLock held, so the queue keeps the order of the changes).
    func queueMetaWrite(_ statement: @escaping DeferredMetaWrites.Statement, afterCommit action: DeferredMetaWrites.Action? = nil) {
        if deferred.append(statement, afterCommit: action) { scheduleDeferredCommit(retry: false) }
    }

    func scheduleDeferredCommit(retry: Bool) {
        if retry && !deferred.scheduleRetry() { return }
        let delay: DispatchTimeInterval = retry ? .milliseconds(200) : DeferredMetaWrites.delay
        DispatchQueue.global().asyncAfter(deadline: .now() + delay) { [weak self] in try? self?.commitDeferred() }
    }

    /// Commits the deferred namespace changes now (fsync, fsyncdir,
    /// snapshots, unmount). Throws when they cannot be committed.
    func commitDeferred() throws(FSError) {
        guard !deferred.isEmpty else { return }
        do { try metaTransaction { _ in } } catch {
            log.error("meta.db: deferred namespace changes not committed (will retry): \(error)")
            throw FSError(databaseError: error)
        }
    }
}
