import Foundation
import GRDB
import GranaryCore
import GranaryRenter

/// Reads `n` bytes at `off` unless the file ends first; returns how many
/// (-1 on error).
@inline(__always) func preadFull(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ n: Int, _ off: Int) -> Int {
    var done = 0
    while done < n {
        let r = pread(fd, p + done, n - done, off_t(off + done))
        if r < 0 { if errno == EINTR { continue }; return -1 }
        if r == 0 { break }
        done += r
    }
    return done
}

/// File content: reads and writes through the chunk cache.
extension GranaryStore {
    // MARK: helpers

    @inline(__always) func pwriteFull(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int, _ off: Int) -> Bool {
        var done = 0
        while done < n {
            let r = pwrite(fd, p + done, n - done, off_t(off + done))
            if r < 0 { if errno == EINTR { continue }; return false }
            done += r
        }
        return true
    }

    /// Writes fail with ENOSPC, with a log line, when the cache disk is
    /// nearly full and evicting clean chunks does not help. While the disk
    /// has plenty, it is asked at most every 50 ms (a statfs per new chunk
    /// was a visible share of a small-file copy).
    func checkCacheSpace() throws(FSError) {
        if cacheSpace.recentlyAmple() { return }
        func free() -> UInt64 {
            let f = diskSpace(dirtyDirectory)?.available ?? .max
            cacheSpace.note(ample: f >= 2 * config.minimumFreeDisk)
            return f
        }
        if free() >= config.minimumFreeDisk { return }
        reaper.drain()
        if free() >= config.minimumFreeDisk { return }
        cleanCache.evictAll()
        reaper.drain()
        if free() >= config.minimumFreeDisk { return }
        log.error("cache disk at \(config.stateDirectory) has less than \(config.minimumFreeDisk >> 20) MiB free: writes fail with ENOSPC until the uploader drains dirty data")
        throw .noSpace
    }

    /// The chunk at `idx` as a dirty chunk that can hold bytes up to
    /// `end`, made so if needed (f.lock held). A new chunk that small starts
    /// in a slab slot; one that outgrows its slot moves to a file.
    func dirtyChunk(_ f: FileData, _ idx: Int, reaching end: Int) throws(FSError) -> DirtyChunk {
        if case let .dirty(d)? = f.chunks[idx] {
            if d.slot != nil && end > ChunkSlab.slotSize { return try moveOutOfSlab(f, idx, d) }
            return d
        }
        try checkCacheSpace()
        if f.chunks[idx] == nil && end <= ChunkSlab.slotSize, let slot = slab.allocate() {
            let d = DirtyChunk(slab: slab, slot: slot)
            f.chunks[idx] = .dirty(d)
            f.changed.insert(idx)
            noteDirty(f)
            return d
        }
        return try newCacheFile(f, idx)
    }

    /// Ends an operation on `f`: the chunk files it holds beyond its
    /// budget are handed to the reaper to close, then the lock goes.
    private func unlockTrimming(_ f: FileData) {
        reaper.close(f.trimDescriptors())
        f.lock.unlock()
    }

    /// A dirty chunk in a cache file of its own, holding the chunk's
    /// current bytes (f.lock held).
    private func newCacheFile(_ f: FileData, _ idx: Int) throws(FSError) -> DirtyChunk {
        let path = dirtyPath(f.ino, idx)
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            let err = errno
            if err == EMFILE || err == ENFILE {
                // Once per burst: a copy that hits the limit would log every file.
                if descriptorsRunOut.exchange(true, ordering: .relaxed) == false {
                    log.error("cannot create cache file \(path): out of open files (\(String(cString: strerror(err)))); raise the open-file limit (ulimit -n) or close files the mount holds open")
                }
            } else {
                log.error("cannot create cache file \(path): \(String(cString: strerror(err)))")
            }
            throw err == ENOSPC ? .noSpace : .io
        }
        descriptorsRunOut.store(false, ordering: .relaxed)
        func fileChunk(base: Hash256?, limit: Int) -> DirtyChunk {
            DirtyChunk(path: path, fd: fd, base: base, baseLimit: limit, descriptors: f.dirtyDescriptors)
        }
        let d: DirtyChunk
        if case let .clean(id, length)? = f.chunks[idx] {
            f.closeCleanFD(idx)
            if let src = cleanCache.open(id) {
                // Cached: copy, and the chunk is complete from the start.
                let buf = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: 4096)
                let n = src.read(into: buf, count: length, at: 0)
                let copied = n >= 0 && pwriteFull(fd, buf, n, 0)
                buf.deallocate()
                if !copied { close(fd); Glibc.unlink(path); throw .io }
                d = fileChunk(base: nil, limit: 0)
            } else {
                d = fileChunk(base: id, limit: length)
            }
        } else if case let .dirty(old)? = f.chunks[idx], old.slot != nil {
            // Out of its slot: the slot's bytes first.
            let buf = UnsafeMutableRawPointer.allocate(byteCount: ChunkSlab.slotSize, alignment: 4096)
            let n = preadFull(old.fd, buf, ChunkSlab.slotSize, old.origin)
            let copied = n >= 0 && pwriteFull(fd, buf, n, 0)
            buf.deallocate()
            if !copied { close(fd); Glibc.unlink(path); throw .io }
            d = fileChunk(base: nil, limit: 0)
            d.version = old.version &+ 1
        } else {
            d = fileChunk(base: nil, limit: 0)
        }
        f.chunks[idx] = .dirty(d)
        f.changed.insert(idx)
        noteDirty(f)
        return d
    }

    /// A chunk growing past its slot moves to a file of its own. Its row
    /// is rewritten now, and when what it held was fsynced the move is made
    /// durable too, before the slot can be reused (f.lock held).
    private func moveOutOfSlab(_ f: FileData, _ idx: Int, _ d: DirtyChunk) throws(FSError) -> DirtyChunk {
        let wasSynced = !d.unsynced
        let moved = try newCacheFile(f, idx)
        if wasSynced {
            guard Glibc.fsync(moved.fd) == 0 else { throw .io }
            moved.unsynced = false
            syncDirtyDirectory()
        }
        persistThenDiscard(f, [(idx, d)])
        if wasSynced { syncDatabase() }
        return moved
    }

    /// A clean chunk's plaintext, open for reading: from the cache, else
    /// fetched from segment storage into it (bounded by the read timeout).
    /// Concurrent fetches of one chunk share a single read. What is
    /// returned stays readable even if the cache evicts it at once (a
    /// budget smaller than the chunks being read).
    func fetchCached(_ id: Hash256) throws(FSError) -> CachedChunk {
        if let c = cleanCache.open(id) { return c }
        return try fetches.fetch(id) { () throws(FSError) in
            if let c = cleanCache.open(id) { return c }  // another fetch just finished
            return try fetchUncached(id)
        }
    }

    private func fetchUncached(_ id: Hash256) throws(FSError) -> CachedChunk {
        func location() -> BlobLocation? {
            blobLock.lock(); defer { blobLock.unlock() }
            return blobs[id]
        }
        guard var loc = location() else {
            log.error("chunk \(id.short) has no recorded segment: metadata is inconsistent")
            throw .io
        }
        let store = segments
        var sealed: [UInt8] = []
        // Too few pieces answering is retried until the read timeout: farmers
        // killed and restarted, or cut off for seconds, come back (a chaos
        // run's `diff` got EIO three seconds into such a gap).
        let deadline = monotonicNanos() &+ UInt64(config.readTimeout * 1e9)
        var retries = 0
        while true {
            let from = loc
            do {
                sealed = try Blocking.run(timeout: config.readTimeout, progress: { store.bytesReceived }) {
                    try await store.read(from.segment, offset: from.offset, length: from.sealedLength)
                }
                if retries > 0 { log.notice("read of chunk \(id.short) from segment \(from.segment.short) succeeded after \(retries) retries") }
                break
            } catch {
                // The compactor may have moved the chunk (and deleted the old
                // segment) while this read was on its way: follow it.
                if let moved = location(), moved.segment != from.segment { loc = moved; continue }
                let left = deadline > monotonicNanos() ? Double(deadline - monotonicNanos()) / 1e9 : 0
                if case SegmentStoreError.unavailable = error, left > 1 {
                    if retries == 0 { log.warning("read of chunk \(id.short) from segment \(from.segment.short) failed, retrying for up to \(Int(left)) s: \(error)") }
                    retries += 1
                    Thread.sleep(forTimeInterval: min(Double(retries), 3, left - 1))
                    continue
                }
                log.error("read of chunk \(id.short) from segment \(from.segment.short) failed\(retries > 0 ? " after \(retries) retries" : ""): \(error)")
                throw .io
            }
        }
        let plain: [UInt8]
        do { plain = try sealer.open(sealed, chunkID: id) } catch {
            log.error("chunk \(id.short) from segment \(loc.segment.short) failed to open: \(error)")
            throw .io
        }
        let path = cleanCache.path(id)
        let tmp = path + ".\(UInt64.random(in: 0 ... .max)).tmp"
        let fd = Glibc.open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            log.error("cannot create \(tmp): \(String(cString: strerror(errno)))")
            throw errno == ENOSPC ? .noSpace : .io
        }
        let ok = plain.withUnsafeBytes { pwriteFull(fd, $0.baseAddress!, $0.count, 0) }
        guard ok, Glibc.rename(tmp, path) == 0 else {
            log.error("cannot write \(tmp): \(String(cString: strerror(errno)))")
            close(fd); Glibc.unlink(tmp); throw .io
        }
        // Kept open: the insert may evict it at once when the budget is small.
        let chunk = CachedChunk(file: fd)
        cleanCache.insert(id, size: UInt64(plain.count))
        return chunk
    }

    /// `fetchCached` with the file's lock released (held on entry and again
    /// on return, also when it throws): a network read may take the read
    /// timeout, and other reads and writes of the file must not wait for it.
    private func fetchReleasingLock(_ f: FileData, _ id: Hash256) throws(FSError) -> CachedChunk {
        f.lock.unlock()
        defer { f.lock.lock() }
        return try fetchCached(id)
    }

    /// Fetches a dirty chunk's base and fills what was not written over it
    /// (f.lock held on entry and on return). A base not in the cache is
    /// fetched with the lock released: the fetch may take the read timeout
    /// when farmers are unreachable, and other reads and writes of the file
    /// must not wait for it. Returns false when the lock was released (merged
    /// or not: the chunk may have changed meanwhile): whatever the caller
    /// gathered under the lock before must be looked at again.
    @discardableResult
    func mergeBase(_ f: FileData, _ idx: Int, _ d: DirtyChunk) throws(FSError) -> Bool {
        guard let base = d.base else { return true }
        var heldThroughout = true
        let src: CachedChunk
        if let cached = cleanCache.open(base) { src = cached } else {
            let fetched = try fetchReleasingLock(f, base)
            guard !f.freed, case let .dirty(now)? = f.chunks[idx], now === d, d.base == base else { return false }
            src = fetched
            heldThroughout = false
        }
        let buf = UnsafeMutableRawPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buf.deallocate() }
        // Borrowed: the uploader merges chunks of files nobody has open.
        let merged = d.withDescriptor { fd in
            d.ranges.gaps(below: d.baseLimit).allSatisfy { s, e in
                let n = src.read(into: buf, count: e - s, at: s)
                return n <= 0 || pwriteFull(fd, buf, n, d.origin + s)
            }
        }
        if !merged { throw .io }
        d.base = nil
        d.ranges = RangeSet()
        d.unsynced = true
        f.changed.insert(idx)
        return heldThroughout
    }

    // MARK: read

    /// Reads up to `buffer.count` bytes at `offset`; returns the count (0 at EOF).
    public func read(_ ino: UInt64, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(FSError) -> Int {
        var failed = false
        let total = try read(ino, offset: offset, count: buffer.count) { pieces in
            var at = 0
            for piece in pieces {
                switch piece {
                case let .zeros(n):
                    memset(buffer.baseAddress! + at, 0, n)
                    at += n
                case let .file(fd, position, n):
                    let r = preadFull(fd, buffer.baseAddress! + at, n, position)
                    if r < 0 { failed = true; return }
                    if r < n { memset(buffer.baseAddress! + at + r, 0, n - r) }
                    at += n
                }
            }
        }
        if failed { throw .io }
        return total
    }

    /// Reads up to `count` bytes at `offset` as pieces of open cache files
    /// and runs of zeros, and hands them to `reply` while the file's lock is
    /// held: the descriptors stay open and their bytes stay put until it
    /// returns, so the caller can send them to the kernel without copying
    /// them through a buffer (splice). Returns the count (0 at EOF).
    public func read(_ ino: UInt64, offset: UInt64, count: Int, reply: ([ReadPiece]) -> Void) throws(FSError) -> Int {
        guard let f = fileData(ino) else { throw .isDirectory }
        readActivity.noteRead()
        f.lock.lock()
        defer { unlockTrimming(f) }
        let sequential = offset == f.lastReadEnd
        var pieces: [ReadPiece] = []
        pieces.reserveCapacity(4)
        func add(_ fd: Int32, at position: Int, _ n: Int, fileLength: Int) {
            let avail = max(0, min(n, fileLength - position))
            if avail > 0 { pieces.append(.file(fd: fd, offset: position, count: avail)) }
            if avail < n { pieces.append(.zeros(n - avail)) }
        }
        var fetchedCold = false
        var total = 0
        gather: while true {
            metaLock.lock()
            let size = inodes[ino]?.attr.size ?? 0
            metaLock.unlock()
            if offset >= size || count == 0 { reply([]); return 0 }
            total = Int(min(UInt64(count), size - offset))
            pieces.removeAll(keepingCapacity: true)
            var done = 0
            while done < total {
                let pos = Int(offset) + done
                let idx = pos / chunkSize
                let within = pos % chunkSize
                let n = min(chunkSize - within, total - done)
                switch f.chunks[idx] {
                case nil:
                    pieces.append(.zeros(n))
                case let .dirty(d)?:
                    if d.base != nil && !d.ranges.covers(within, within + n) {
                        // Without the lock for a while, the pieces gathered
                        // so far may be closed or reused: gather again.
                        guard try mergeBase(f, idx, d) else { continue gather }
                    }
                    // The cache file may be shorter than the chunk (a hole at
                    // its end reads as zeros).
                    guard let stored = d.storedLength() else { throw .io }
                    add(d.fd, at: d.origin + within, n, fileLength: d.origin + stored)
                case let .clean(id, length)?:
                    let cached: CachedChunk
                    if let e = f.cleanFDs[idx], e.id == id { cached = e.chunk } else {
                        f.closeCleanFD(idx)
                        if let o = openCached(id) { cached = o } else {
                            // The network read runs without the file's lock, so
                            // other reads and writes of the file go on. They may
                            // close or reuse what the pieces gathered so far
                            // point at (a truncate, a reader evicting, the
                            // uploader), and change the size: gather again.
                            // A sequential reader's next chunks are fetched
                            // alongside this one, not after it.
                            if sequential { readAhead(f, after: idx, count: readAheadChunks) }
                            let fetched = try fetchReleasingLock(f, id)
                            if case .clean(id, _)? = f.chunks[idx] { f.cleanFDs[idx] = (id, fetched) }
                            fetchedCold = true
                            continue gather
                        }
                        f.cleanFDs[idx] = (id, cached)
                    }
                    add(cached.fd, at: cached.origin + within, n, fileLength: cached.origin + min(length, cached.capacity))
                }
                done += n
            }
            break
        }
        f.lastReadEnd = offset + UInt64(total)
        let lastIndex = (Int(offset) + total - 1) / chunkSize
        let ahead = sequential ? openAhead(f, lastIndex + 1) : nil
        if sequential || fetchedCold { readAhead(f, after: lastIndex, count: sequential ? readAheadChunks : 1) }
        reply(pieces)
        // The next chunk's disk read is asked for once this reply is out:
        // the advice allocates and queues its pages, which takes a while.
        ahead?.advise()
        return total
    }

    /// Opens a cached chunk for reading and has the kernel read it in whole,
    /// asynchronously: each 4 MiB chunk is its own file, whose page cache
    /// read-ahead would otherwise start small at every chunk boundary while
    /// the reply waits for the disk.
    private func openCached(_ id: Hash256) -> CachedChunk? {
        guard let c = cleanCache.open(id) else { return nil }
        _ = posix_fadvise(c.fd, off_t(c.origin), off_t(c.capacity == .max ? 0 : c.capacity), POSIX_FADV_WILLNEED)
        return c
    }

    /// A sequential read opens the next chunk ahead of it (f.lock held), so
    /// its disk reads overlap the replies of this one. Returns what to
    /// advise the kernel to read in once the reply is out.
    private func openAhead(_ f: FileData, _ idx: Int) -> ReadAheadAdvice? {
        guard f.openedAhead != idx else { return nil }
        f.openedAhead = idx
        switch f.chunks[idx] {
        case let .clean(id, _)?:
            if f.cleanFDs[idx]?.id == id { return nil }
            f.closeCleanFD(idx)
            guard let c = cleanCache.open(id) else { return nil }
            f.cleanFDs[idx] = (id, c)
            return ReadAheadAdvice(clean: c, dirty: nil)
        case let .dirty(d)?:
            return ReadAheadAdvice(clean: nil, dirty: d)
        case nil:
            return nil
        }
    }

    /// Reads fetch the next chunks in the background, each in parallel
    /// with the others (f.lock held): `readAheadChunks` for a sequential
    /// reader, one after a cold random read. One at a time, a cold read
    /// over a 100 ms round trip ran at 7 MB/s, each 4 MiB fetch a TCP
    /// transfer of its own still growing its window.
    private func readAhead(_ f: FileData, after idx: Int, count: Int) {
        let ids: [Hash256] = ((idx + 1)...(idx + count)).compactMap { next in
            if case let .clean(id, _)? = f.chunks[next], !cleanCache.contains(id), !fetches.isRunning(id) { return id }
            return nil
        }
        // Plain threads, never Dispatch workers: blocking those starves
        // the Swift concurrency pool the segment store's reads run on.
        for id in ids {
            let t = Thread { [self] in _ = try? fetchCached(id) }
            t.start()
        }
    }

    /// Chunks fetched ahead of a sequential reader: four, or fewer when
    /// the cache budget could not keep them until they are read.
    var readAheadChunks: Int { Int(min(4, max(1, cleanCache.budget / UInt64(4 * chunkSize)))) }

    // MARK: write

    /// Writes `data` at `offset` (or at the end when `append`); never waits
    /// for the network.
    /// With `dropPrivileges` (a writer without CAP_FSETID, as the kernel
    /// marks it) setuid, setgid and a file capability go as well; the
    /// result then says whether the mode changed.
    public func write(_ ino: UInt64, offset: UInt64, data: UnsafeRawBufferPointer, append: Bool = false,
                      dropPrivileges: Bool = false) throws(FSError) -> (count: Int, modeChanged: Bool) {
        guard let f = fileData(ino) else { throw .isDirectory }
        f.lock.lock()
        defer { unlockTrimming(f) }
        if f.freed { throw .notFound }
        var start = offset
        if append { metaLock.lock(); start = inodes[ino]?.attr.size ?? offset; metaLock.unlock() }
        if start + UInt64(data.count) > UInt64(Int64.max) { throw FSError(EFBIG) }
        var done = 0
        while done < data.count {
            let pos = Int(start) + done
            let idx = pos / chunkSize
            let within = pos % chunkSize
            let n = min(chunkSize - within, data.count - done)
            try write(f, idx, at: within, data.baseAddress! + done, count: n)
            done += n
        }
        var modeChanged = false
        metaLock.lock()
        if let rec = inodes[ino] {
            let end = start + UInt64(data.count)
            if contentChangedLocked(rec, end: end) { f.changed.insert(Int(end - 1) / chunkSize) }
            if dropPrivileges { modeChanged = dropPrivilegesLocked(rec) }
        }
        metaLock.unlock()
        return (data.count, modeChanged)
    }

    /// Records a change to `rec`'s bytes that reach `end` (metaLock held):
    /// the size grows to `end` (nil: it stays, as KEEP_SIZE asks), mtime
    /// and ctime move, the uploader leaves the file for a later pass, and
    /// the inode is written with the file's next persist. Returns whether
    /// the size grew.
    @discardableResult
    func contentChangedLocked(_ rec: InodeRecord, end: UInt64?) -> Bool {
        let now = wallClockNanos()
        var grew = false
        if let end, end > rec.attr.size { rec.attr.size = end; grew = true }
        rec.attr.mtime = now
        rec.attr.ctime = now
        rec.lastDataWrite = monotonicNanos()
        needsPersist.insert(rec.attr.ino)
        return grew
    }

    /// Writes `count` bytes into chunk `idx` at `within` (f.lock held).
    @inline(__always)
    private func write(_ f: FileData, _ idx: Int, at within: Int, _ bytes: UnsafeRawPointer, count n: Int) throws(FSError) {
        let d = try dirtyChunk(f, idx, reaching: within + n)
        guard pwriteFull(d.fd, bytes, n, d.origin + within) else {
            let e = errno
            log.error("write to cache file of inode \(f.ino) failed: \(String(cString: strerror(e)))")
            throw e == ENOSPC ? .noSpace : .io
        }
        if d.base != nil { d.ranges.insert(within, within + n); f.changed.insert(idx) }
        d.touch()
        // A chunk file written up to its end (a sequential writer moving
        // on) starts going to disk now: the fsync that follows a large
        // copy then waits for the last chunks only, not for all of them.
        if within + n == chunkSize && d.slot == nil { FileSync.startWriteback(d.fd, offset: 0, length: chunkSize) }
    }

    // MARK: truncate, allocate, sync

    /// Sets a file's size: chunks beyond go, the boundary chunk is cut.
    func truncate(_ f: FileData, to newSize: UInt64) throws(FSError) {
        f.lock.lock()
        defer { unlockTrimming(f) }
        metaLock.lock()
        let old = inodes[f.ino]?.attr.size ?? 0
        metaLock.unlock()
        var dropped: [(Int, DirtyChunk)] = []  // discarded once their rows are gone
        if newSize < old {
            let keep = Int((newSize + UInt64(chunkSize) - 1) / UInt64(chunkSize))  // chunks [0, keep) stay
            for idx in Array(f.chunks.keys) where idx >= keep { dropChunk(f, idx, into: &dropped) }
            let within = Int(newSize % UInt64(chunkSize))
            let last = Int(newSize / UInt64(chunkSize))
            if within > 0, let state = f.chunks[last] {
                var cut = true
                if case let .clean(_, length) = state, length <= within { cut = false }
                if cut {
                    let d = try dirtyChunk(f, last, reaching: within)
                    if let slot = d.slot { slab.zero(slot, from: within) } else { ftruncate(d.fd, off_t(within)) }
                    d.ranges.clip(within)
                    d.baseLimit = min(d.baseLimit, within)
                    d.touch()
                    f.changed.insert(last)
                }
            }
        }
        metaLock.lock()
        if let rec = inodes[f.ino] { rec.attr.size = newSize }
        needsPersist.insert(f.ino)
        metaLock.unlock()
        persistThenDiscard(f, dropped)
    }

    /// Forgets chunk `idx` of `f` (truncated away or punched out); a dirty
    /// one goes into `dropped`, to be discarded once no row names it.
    func dropChunk(_ f: FileData, _ idx: Int, into dropped: inout [(Int, DirtyChunk)]) {
        if case let .dirty(d)? = f.chunks[idx] { dropped.append((idx, d)) }
        f.closeCleanFD(idx)
        f.chunks[idx] = nil
        f.changed.insert(idx)
    }

    /// FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE.
    public static let fallocKeepSize: Int32 = 0x01, fallocPunchHole: Int32 = 0x02, fallocZeroRange: Int32 = 0x10

    /// Mode 0 and KEEP_SIZE reserve nothing (space is checked, not held:
    /// cache files are sparse); PUNCH_HOLE and ZERO_RANGE zero the range.
    /// COLLAPSE_RANGE and INSERT_RANGE are refused (EOPNOTSUPP), as on
    /// most file systems but ext4 and XFS.
    public func fallocate(_ ino: UInt64, mode: Int32, offset: UInt64, length: UInt64) throws(FSError) {
        guard let f = fileData(ino) else { throw .notSupported }
        if mode & ~(Self.fallocKeepSize | Self.fallocPunchHole | Self.fallocZeroRange) != 0 { throw .notSupported }
        if length == 0 { throw .invalid }
        if offset + length > UInt64(Int64.max) { throw FSError(EFBIG) }
        if mode & (Self.fallocPunchHole | Self.fallocZeroRange) != 0 {
            return try zero(f, offset: offset, length: length, keepSize: mode & Self.fallocKeepSize != 0)
        }
        try checkCacheSpace()
        let room = statfs()
        f.lock.lock()
        defer { f.lock.unlock() }
        // Nothing is written now, but a program that reserves space wants
        // to hear at once that the holes it asks for cannot be filled.
        let holes = holeBytes(f, offset: offset, length: length)
        if holes > room.available * room.blockSize {
            log.warning("fallocate of \(length) bytes refused: \(holes) bytes of holes to reserve, \(room.available * room.blockSize) available")
            throw .noSpace
        }
        if mode & Self.fallocKeepSize != 0 { return }
        metaLock.lock()
        if let rec = inodes[ino], offset + length > rec.attr.size {
            rec.attr.size = offset + length
            rec.attr.ctime = wallClockNanos()
            needsPersist.insert(ino)
        }
        metaLock.unlock()
    }

    /// The bytes of a range that fall in chunks holding no data (f.lock held).
    private func holeBytes(_ f: FileData, offset: UInt64, length: UInt64) -> UInt64 {
        let end = offset + length, size = UInt64(chunkSize)
        var data: UInt64 = 0
        for idx in f.chunks.keys {
            let start = UInt64(idx) * size
            if start < end && start + size > offset { data += min(end, start + size) - max(offset, start) }
        }
        return length - data
    }

    /// Makes `length` bytes at `offset` read as zeros (punch hole, zero
    /// range): chunks the range covers within the file go, as a truncate
    /// drops them, and the partly covered ones at its ends get zeros
    /// written. Without `keepSize` the file grows to the range's end.
    private func zero(_ f: FileData, offset: UInt64, length: UInt64, keepSize: Bool) throws(FSError) {
        f.lock.lock()
        defer { unlockTrimming(f) }
        if f.freed { throw .notFound }
        metaLock.lock()
        let size = inodes[f.ino]?.attr.size ?? 0
        metaLock.unlock()
        let start = Int(offset), end = Int(min(offset + length, size))  // bytes past the size are zeros already
        var dropped: [(Int, DirtyChunk)] = []
        var pos = start
        var zeros: UnsafeMutableRawPointer?
        defer { zeros.map { free($0) } }
        while pos < end {
            let idx = pos / chunkSize, within = pos % chunkSize
            let n = min(chunkSize - within, end - pos)
            let chunkEnd = min(idx * chunkSize + chunkSize, Int(size))
            if f.chunks[idx] == nil {
                // A hole already.
            } else if within == 0 && pos + n >= chunkEnd {
                dropChunk(f, idx, into: &dropped)
            } else {
                if zeros == nil { zeros = calloc(1, chunkSize) }
                guard let z = zeros else { throw .noSpace }
                try write(f, idx, at: within, z, count: n)
            }
            pos += n
        }
        metaLock.lock()
        if let rec = inodes[f.ino] { contentChangedLocked(rec, end: keepSize ? nil : offset + length) }
        metaLock.unlock()
        persistThenDiscard(f, dropped)
    }

    /// lseek's SEEK_DATA (`data`) and SEEK_HOLE: the first offset at or
    /// after `offset` in data or in a hole, at chunk granularity (a chunk
    /// that holds any data counts as data, which lseek(2) allows). The end
    /// of the file is a hole. ENXIO at or beyond the end, or when no data
    /// follows. While a handle that may write is open, the whole file
    /// counts as data: a shared mmap's bytes in a hole reach the mount only
    /// when the kernel writes them back, and FUSE does not write them back
    /// before it asks, so a `cp` would skip them.
    public func seek(_ ino: UInt64, offset: UInt64, data: Bool) throws(FSError) -> UInt64 {
        guard let f = fileData(ino) else { throw .invalid }
        f.lock.lock()
        defer { f.lock.unlock() }
        metaLock.lock()
        let size = inodes[ino]?.attr.size ?? 0, written = inodes[ino]?.isOpenForWriting ?? false
        metaLock.unlock()
        guard offset < size else { throw FSError(ENXIO) }
        if written { return data ? offset : size }
        let first = Int(offset / UInt64(chunkSize)), last = Int((size - 1) / UInt64(chunkSize))
        if data {
            // A sparse file may have far fewer chunks than indices to scan.
            let next = f.chunks.count < last - first + 1
                ? f.chunks.keys.filter { $0 >= first && $0 <= last }.min()
                : (first...last).first { f.chunks[$0] != nil }
            guard let next else { throw FSError(ENXIO) }
            return max(offset, UInt64(next) * UInt64(chunkSize))
        }
        var idx = first
        while idx <= last && f.chunks[idx] != nil { idx += 1 }
        return min(size, max(offset, UInt64(idx) * UInt64(chunkSize)))
    }

    /// fsync: returns once the file's data and metadata are durable on the
    /// local disk (cache files, meta.db's WAL, the cache directory).
    public func fsync(_ ino: UInt64) throws(FSError) {
        if let f = fileData(ino) {
            f.lock.lock()
            var failed = false
            let unsynced: [DirtyChunk] = f.chunks.values.compactMap { state -> DirtyChunk? in
                if case let .dirty(d) = state, d.unsynced { return d }
                return nil
            }
            // Every chunk's writeback is started before the first wait, so
            // the disk gets them all at once instead of one file per fsync.
            if unsynced.count > 1 {
                for d in unsynced where d.isOpen { FileSync.startWriteback(d.fd, offset: d.origin, length: d.slot == nil ? 0 : ChunkSlab.slotSize) }
            }
            for d in unsynced {
                if d.withDescriptor({ Glibc.fsync($0) }) != 0 { failed = true } else { d.unsynced = false }
            }
            if !persistLocked(f) { failed = true }
            f.lock.unlock()
            if failed { throw .io }
            syncDirtyDirectory()
        }
        try commitDeferred()
        syncDatabase()
    }

    /// fsyncdir: commits deferred namespace changes and makes them durable.
    public func fsyncDirectory(_ ino: UInt64) throws(FSError) {
        try commitDeferred()
        syncDatabase()
    }
}
