import CGranaryShim
import Foundation
import GRDB
import GranaryCore

/// The uploader's shared state: wake-ups, flush requests and progress.
/// Guarded by its condition's lock.
final class UploaderState: @unchecked Sendable {
    let cond = NSCondition()
    var wakeRequested = false
    var stopping = false
    var stopped = false
    /// Bumped when a forced pass (flush) starts and when it ends.
    var forceRequests = 0
    var passesCompleted = 0
    var uploadedBytes: UInt64 = 0
    var uploadedSegments = 0
    var lastError: String?
    /// A flush or stop is waiting: a pass stops yielding to reads.
    var hurried: Bool {
        cond.lock(); defer { cond.unlock() }
        return forceRequests > 0 || stopping
    }
    /// (time, uploaded bytes) samples for the rate.
    var samples: [(UInt64, UInt64)] = []
    /// Segment storage back from finished uploads, reused (see `SegmentBuffer`).
    private var spareSegments: [[UInt8]] = []

    /// Empty segment storage, with the capacity of an earlier segment when
    /// one came back.
    func takeSegmentStorage(capacity: Int) -> [UInt8] {
        cond.lock()
        let spare = spareSegments.popLast()
        cond.unlock()
        if let spare { return spare }
        var fresh: [UInt8] = []
        fresh.reserveCapacity(capacity)
        return fresh
    }

    /// Takes back a segment's storage once its upload no longer needs it.
    /// Two are kept: the one being packed and the one uploading.
    func recycleSegmentStorage(_ storage: consuming [UInt8]) {
        var storage = storage
        storage.removeAll(keepingCapacity: true)  // no copy when nothing else holds it
        cond.lock()
        if spareSegments.count < 2 { spareSegments.append(storage) }
        cond.unlock()
    }

    /// Every close calls this: only the first call before a pass signals,
    /// so a copy of many small files does not wake the uploader's thread
    /// once per file just to have it wait again for the pass interval.
    func wake() {
        cond.lock()
        if !wakeRequested { wakeRequested = true; cond.signal() }
        cond.unlock()
    }

    func record(bytes: UInt64) {
        cond.lock()
        uploadedBytes += bytes
        let now = monotonicNanos()
        samples.append((now, uploadedBytes))
        samples.removeAll { now - $0.0 > 10_000_000_000 }
        cond.unlock()
    }

    /// Bytes per second over the last ten seconds.
    var rate: Double {
        cond.lock(); defer { cond.unlock() }
        guard let first = samples.first, let last = samples.last, last.0 > first.0 else { return 0 }
        let now = monotonicNanos()
        let span = Double(max(now, last.0) - first.0) / 1e9
        return span > 0 ? Double(last.1 - first.1) / span : 0
    }
}

/// What `granary status` shows about the store.
public struct StoreStatus: Codable, Sendable {
    public var dirtyBytes: UInt64
    public var dirtyChunks: Int
    public var uploadedBytes: UInt64
    public var uploadedSegments: Int
    public var uploadRateBytesPerSecond: Double
    public var etaSeconds: Double?
    public var cacheBytes: UInt64
    public var cacheBudget: UInt64
    public var files: Int
    public var lastError: String?
    /// Segments meta.db knows, their sealed bytes, and how many of those
    /// bytes files still refer to; the rest is what compaction reclaims.
    public var segments: Int
    public var segmentBytes: UInt64
    public var liveBytes: UInt64
    public var reclaimableBytes: UInt64
    /// Totals over the life of this state folder.
    public var compactedBytes: UInt64
    public var segmentsDeleted: Int
    public var compacting: Bool
    public var lastCompaction: CompactionReport?
}

extension GranaryStore {
    func startUploader() {
        let t = Thread { [self] in uploaderMain() }
        t.name = "granary-uploader"
        t.start()
    }

    /// Closes wake the uploader; those within this long of the last pass
    /// join the next one, so copying many small files does not cost one
    /// scan of every file per close. Flush and stop are not delayed.
    static let minimumPassInterval = 0.25
    static let fullPersistInterval: UInt64 = 5_000_000_000

    private func uploaderMain() {
        runInBackground()
        var failures = 0
        var lastPass = Date.distantPast
        var lastFullPersist = monotonicNanos()
        while true {
            let u = uploader
            u.cond.lock()
            if !u.wakeRequested && !u.stopping { _ = u.cond.wait(until: Date().addingTimeInterval(1)) }
            let earliest = lastPass.addingTimeInterval(Self.minimumPassInterval)
            while u.forceRequests == 0 && !u.stopping && Date() < earliest { _ = u.cond.wait(until: earliest) }
            u.wakeRequested = false
            let force = u.forceRequests > 0 || u.stopping
            let forcedAt = u.forceRequests
            let stopping = u.stopping
            u.cond.unlock()

            // Every file idle for half the upload delay (so none is
            // uploaded before its rows are written), and every 5 s all of
            // them: what a crash loses of writes nobody fsynced.
            let now = monotonicNanos()
            if force || now &- lastFullPersist >= Self.fullPersistInterval {
                persistAll()
                lastFullPersist = now
            } else {
                persistAll(writtenBefore: now &- UInt64(config.idleUploadDelay * 5e8))
            }
            referenceLock.lock()
            let ok = uploadPass(force: force)
            referenceLock.unlock()
            reuseRetiredSlots()
            lastPass = Date()
            if stopping {
                u.cond.lock(); u.stopped = true; u.cond.broadcast(); u.cond.unlock()
                return
            }
            u.cond.lock()
            if force { u.forceRequests -= forcedAt; if u.forceRequests < 0 { u.forceRequests = 0 } }
            u.passesCompleted += 1
            u.cond.broadcast()
            u.cond.unlock()
            // Back off while passes fail (network unreachable, contracts
            // still forming): 1, 2, 4, then every 5 s; only stopping cuts it short.
            failures = ok ? 0 : failures + 1
            // A pass that went through clears the error status shows.
            if ok { u.cond.lock(); u.lastError = nil; u.cond.unlock() }
            if failures > 0 {
                let until = Date().addingTimeInterval(min(5, Double(1 << min(failures - 1, 3))))
                u.cond.lock()
                while !u.stopping && Date() < until { _ = u.cond.wait(until: until) }
                u.cond.unlock()
            }
        }
    }

    private struct Pending {
        let file: FileData
        let idx: Int
        let chunk: DirtyChunk
        let version: UInt64
        let id: Hash256
        let length: Int
    }

    /// Seals eligible dirty chunks into segments and stores them; returns
    /// false when something failed (and will be retried).
    func uploadPass(force: Bool) -> Bool {
        let now = monotonicNanos()
        let idleNanos = UInt64(config.idleUploadDelay * 1e9)
        let fileList = dirtyFileList()

        var segment = SegmentBuffer(storage: uploader.takeSegmentStorage(capacity: maxSegmentSize))
        defer { uploader.recycleSegmentStorage(segment.take()) }
        var newBlobs: [(Hash256, BlobLocation)] = []
        var inSegment = Set<Hash256>()
        var pending: [Pending] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        var ok = true
        var pacer = UploadPacer(bytesPerSecond: force ? 0 : config.uploadRateWhileReading)
        let segID0 = Hash256.random()
        var segID = segID0
        // The previous segment uploads while the next one is sealed; it is
        // finished (recorded, its chunks marked clean) before the next one,
        // so commits stay in order. Its chunk IDs count as known.
        var uploading: SegmentCommit?
        defer { if let f = uploading { _ = finishCommit(f) } }

        for f in fileList {
            f.lock.lock()
            var candidates: [Int] = []
            for (idx, state) in f.chunks {
                if case let .dirty(d) = state, force || now &- d.lastWrite >= idleNanos { candidates.append(idx) }
            }
            forgetIfClean(f)
            f.lock.unlock()
            for idx in candidates.sorted() {
                pacer.waitTurn(readActivity) { uploader.hurried }
                f.lock.lock()
                guard !f.freed, case let .dirty(d)? = f.chunks[idx] else { f.lock.unlock(); continue }
                if d.base != nil {
                    do {
                        // The fetch may release the lock; a chunk changed
                        // meanwhile waits for the next pass.
                        _ = try mergeBase(f, idx, d)
                        guard !f.freed, case .dirty(let now)? = f.chunks[idx], now === d, d.base == nil else {
                            f.lock.unlock()
                            continue
                        }
                    } catch {
                        f.lock.unlock()
                        noteError("cannot fetch the old content of a chunk being rewritten: \(error)")
                        ok = false
                        continue
                    }
                }
                metaLock.lock()
                let size = inodes[f.ino]?.attr.size ?? 0
                metaLock.unlock()
                let start = UInt64(idx) * UInt64(chunkSize)
                let length = size > start ? Int(min(UInt64(chunkSize), size - start)) : 0
                if length == 0 {
                    f.chunks[idx] = nil
                    f.changed.insert(idx)
                    persistThenDiscard(f, [(idx, d)])
                    f.lock.unlock()
                    continue
                }
                // A slot holds less than a chunk; beyond it the chunk reads as zeros.
                let r = d.withDescriptor { preadFull($0, buffer.baseAddress!, d.slot == nil ? length : min(length, ChunkSlab.slotSize), d.origin) }
                if r < 0 { f.lock.unlock(); ok = false; continue }
                if r < length { memset(buffer.baseAddress! + r, 0, length - r) }
                let version = d.version
                f.lock.unlock()

                let plain = UnsafeRawBufferPointer(rebasing: buffer[0..<length])
                pacer.sealed(length)
                let id = sealer.chunkID(of: plain)
                blobLock.lock()
                let known = blobs[id] != nil || uploading?.chunkIDs.contains(id) == true
                blobLock.unlock()
                if !known && !inSegment.contains(id) {
                    let sealedSize = ChunkSealer.sealedSize(plaintextCount: length, algorithm: sealer.algorithm)
                    if segment.count + sealedSize > maxSegmentSize && !segment.isEmpty {
                        if let previous = uploading {
                            uploading = nil
                            if !finishCommit(previous) { return false }
                        }
                        uploading = startCommit(segID, &segment, &newBlobs, &pending)
                        inSegment.removeAll()
                        segID = Hash256.random()
                    }
                    let off = segment.count
                    do {
                        try segment.append(count: sealedSize) { _ = try sealer.seal(plain, chunkID: id, into: $0) }
                    } catch {
                        noteError("sealing failed: \(error)")
                        return false
                    }
                    newBlobs.append((id, BlobLocation(segment: segID, offset: off, sealedLength: sealedSize, plainLength: length)))
                    inSegment.insert(id)
                }
                pending.append(Pending(file: f, idx: idx, chunk: d, version: version, id: id, length: length))
            }
        }
        if let previous = uploading {
            uploading = nil
            if !finishCommit(previous) { return false }
        }
        if !pending.isEmpty || !segment.isEmpty {
            if !finishCommit(startCommit(segID, &segment, &newBlobs, &pending)) { return false }
        }
        return ok
    }

    func noteError(_ text: String) {
        uploader.cond.lock()
        let repeated = uploader.lastError == text
        uploader.lastError = text
        uploader.cond.unlock()
        // A retry failing the same way is logged once, not every pass.
        if repeated { log.debug("\(text)") } else { log.error("\(text)") }
    }

    /// A segment whose upload has started, with what to record once it is
    /// durable. A class, so its storage can be moved out (not copied) when done.
    private final class SegmentCommit {
        let segID: Hash256
        let byteCount: Int
        let newBlobs: [(Hash256, BlobLocation)]
        let pending: [Pending]
        let chunkIDs: Set<Hash256>
        /// Nil when there were no new bytes to store (only known chunks).
        let upload: Blocking.Handle<Void>?
        /// The segment's bytes, shared with the upload until it ends.
        var storage: [UInt8]

        init(segID: Hash256, byteCount: Int, newBlobs: [(Hash256, BlobLocation)], pending: [Pending],
             chunkIDs: Set<Hash256>, upload: Blocking.Handle<Void>?, storage: [UInt8]) {
            self.segID = segID; self.byteCount = byteCount; self.newBlobs = newBlobs; self.pending = pending
            self.chunkIDs = chunkIDs; self.upload = upload; self.storage = storage
        }

        /// The storage, moved out for reuse.
        func takeStorage() -> [UInt8] {
            var s: [UInt8] = []
            swap(&s, &storage)
            return s
        }
    }

    /// Starts storing the packed segment (in the background) and takes its
    /// bookkeeping; the buffer is free for the next segment on return.
    private func startCommit(_ segID: Hash256, _ segment: inout SegmentBuffer, _ newBlobs: inout [(Hash256, BlobLocation)], _ pending: inout [Pending]) -> SegmentCommit {
        var upload: Blocking.Handle<Void>?
        let count = segment.count
        // Nothing to store (known chunks only): the buffer keeps its storage.
        var bytes: [UInt8] = []
        if !segment.isEmpty {
            bytes = segment.take()
            segment = SegmentBuffer(storage: uploader.takeSegmentStorage(capacity: maxSegmentSize))
            let store = segments, packed = bytes
            inFlight.insert(segID)  // never taken for an orphan before it is recorded
            upload = Blocking.start { try await store.put(segID, bytes: packed) }
        }
        let commit = SegmentCommit(segID: segID, byteCount: count, newBlobs: newBlobs, pending: pending,
                                   chunkIDs: Set(newBlobs.map(\.0)), upload: upload, storage: bytes)
        newBlobs.removeAll(); pending.removeAll()
        return commit
    }

    /// Waits for the segment to be durable, then records where its chunks
    /// live, then marks chunks clean whose content did not change meanwhile.
    private func finishCommit(_ c: SegmentCommit) -> Bool {
        let segID = c.segID, newBlobs = c.newBlobs, pending = c.pending
        if let upload = c.upload {
            defer { inFlight.remove(segID) }
            do {
                try upload.wait(timeout: 600)
            } catch {
                noteError("upload of a \(c.byteCount >> 10) KiB segment failed, will retry: \(error)")
                return false
            }
            uploader.recycleSegmentStorage(c.takeStorage())
            do {
                try metaTransaction { db in
                    try db.run("INSERT OR IGNORE INTO segment (id, size, created, live) VALUES (?, ?, ?, ?)",
                               [Data(segID.bytes), c.byteCount, wallClockNanos(), c.byteCount])
                    for (id, loc) in newBlobs {
                        try db.run("INSERT OR IGNORE INTO blob (chunk_id, segment, offset, sealed_length, plain_length) VALUES (?, ?, ?, ?, ?)",
                                   [Data(id.bytes), Data(loc.segment.bytes), loc.offset, loc.sealedLength, loc.plainLength])
                    }
                }
            } catch {
                noteError("meta.db: cannot record segment \(segID.short): \(error)")
                return false
            }
            blobLock.lock()
            for (id, loc) in newBlobs where blobs[id] == nil { blobs[id] = loc }
            blobLock.unlock()
            compactor?.invalidateUsage()
            uploader.cond.lock(); uploader.uploadedSegments += 1; uploader.cond.unlock()
        }
        markClean(pending)
        return true
    }

    /// Clean rows per transaction of `markClean` (metaLock is held through each).
    static let cleanRowBatch = 128

    /// Marks the uploaded chunks clean in a few meta.db transactions, not
    /// one per chunk (a segment of small files holds thousands). The file
    /// locks are not held across them, so fsync's guarantee is kept another
    /// way: each chunk's row is first marked changed, so an fsync that runs
    /// before the chunk turns clean in memory rewrites its row as dirty; a
    /// chunk written meanwhile stays dirty and its row is rewritten; and a
    /// file persisted after it was looked at (its `rowsPersisted` moved) gets
    /// no clean row from the batch, which would overwrite the dirty row an
    /// fsync had just made durable: its row is written under its lock below.
    private func markClean(_ pending: [Pending]) {
        func unchanged(_ p: Pending) -> DirtyChunk? {
            guard !p.file.freed, case let .dirty(d)? = p.file.chunks[p.idx], d === p.chunk, d.version == p.version, d.base == nil else { return nil }
            return d
        }
        var marked: [(pending: Pending, persisted: UInt64)] = []
        for p in pending {
            p.file.lock.lock()
            if unchanged(p) != nil { p.file.changed.insert(p.idx); marked.append((p, p.file.rowsPersisted)) }
            p.file.lock.unlock()
        }
        guard !marked.isEmpty else { return }
        // metaLock, which every persist holds, is held through each batch.
        var batchedClean = Set<Int>()
        var start = 0
        while start < marked.count {
            let end = min(start + Self.cleanRowBatch, marked.count)
            metaLock.lock()
            let current = (start..<end).filter { marked[$0].pending.file.rowsPersisted == marked[$0].persisted }
            do {
                try metaTransaction { db in
                    for i in current {
                        let p = marked[i].pending
                        try writeChunkRow(db, ino: p.file.ino, idx: p.idx, state: .clean(id: p.id, length: p.length))
                    }
                }
            } catch {
                metaLock.unlock()
                log.error("meta.db: cannot mark chunks clean: \(error)")
                return
            }
            metaLock.unlock()
            batchedClean.formUnion(current)
            start = end
        }
        var uploaded: UInt64 = 0
        var deletedMeanwhile: Set<UInt64> = []
        for (i, entry) in marked.enumerated() {
            let p = entry.pending
            let f = p.file
            f.lock.lock()
            defer { f.lock.unlock() }
            guard let d = unchanged(p) else {
                if f.freed {
                    // Deleted meanwhile: its chunk rows may have gone before
                    // the clean row was written.
                    deletedMeanwhile.insert(f.ino)
                } else {
                    // Written meanwhile: its row says clean, make it say dirty again.
                    f.changed.insert(p.idx)
                    metaLock.lock(); needsPersist.insert(f.ino); metaLock.unlock()
                }
                continue
            }
            let newState = ChunkState.clean(id: p.id, length: p.length)
            if !batchedClean.contains(i) || !f.changed.contains(p.idx) {
                // Left out of the batch, or an fsync rewrote the row as dirty
                // since: written clean now, under the file's lock.
                do { try metaTransaction { db in try writeChunkRow(db, ino: f.ino, idx: p.idx, state: newState) } } catch {
                    log.error("meta.db: cannot mark chunk clean: \(error)")
                    continue
                }
            }
            f.chunks[p.idx] = newState
            f.changed.remove(p.idx)
            keepAsCleanCopy(f.ino, p.idx, d, id: p.id, length: p.length)
            uploaded += UInt64(p.length)
        }
        if !deletedMeanwhile.isEmpty { queueChunkRowDeletion(Array(deletedMeanwhile)) }
        uploader.record(bytes: uploaded)
    }

    /// An uploaded chunk's cached bytes become its clean cached copy, where
    /// they are: its own file is renamed into the clean cache; a slab slot
    /// is kept as it is (no copy, no new file). The chunk's clean row is
    /// committed, so no row names the slot any more.
    private func keepAsCleanCopy(_ ino: UInt64, _ idx: Int, _ d: DirtyChunk, id: Hash256, length: Int) {
        if let slot = d.slot {
            if !cleanCache.insert(id, slot: slot, size: UInt64(min(length, ChunkSlab.slotSize))) {
                discardDirty(ino, idx, d)  // the same content is cached already
            }
            return
        }
        // A chunk whose end is a hole (extended by truncate) has a shorter
        // file: it must hold `length` bytes, since a read spliced from it
        // would otherwise come back short, and the kernel takes a short
        // read for the end of the file.
        let fd = d.fd
        var st = stat()
        if fstat(fd, &st) == 0 && Int(st.st_size) < length { _ = ftruncate(fd, off_t(length)) }
        // Its pages leave the page cache (as borg does with what it has
        // made durable): a read through the mount caches what it reads in
        // the mount's own page cache, so these would be a second copy. On
        // these VMs a page the kernel frees is reused at once, while a new
        // one costs the host a fault: a 1 GiB write beside the upload of
        // the previous gigabyte ran at 410-590 MB/s keeping them and at
        // 660-1,170 MB/s dropping them.
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        d.closeDescriptor()
        let from = dirtyPath(ino, idx)
        let to = cleanCache.path(id)
        if Glibc.rename(from, to) == 0 {
            cleanCache.insert(id, size: UInt64(max(Int(st.st_size), length)))
        } else {
            Glibc.unlink(from)
        }
    }

    /// A segment being packed, in the array the segment store takes, so
    /// it is handed over without a copy; its storage comes back for the next
    /// segment (`UploaderState.recycleSegmentStorage`). A fresh 64 MiB
    /// buffer per pass plus a copy into a fresh array per segment had been
    /// a third of the uploader's CPU (page faults and copying, in perf
    /// while a 1 GiB write was sealed), on a core the mount's reads want.
    struct SegmentBuffer {
        private var bytes: [UInt8]
        init(storage: [UInt8]) { bytes = storage }
        var count: Int { bytes.count }
        var isEmpty: Bool { bytes.isEmpty }

        /// Grows by `count` bytes that `fill` writes.
        mutating func append(count: Int, _ fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
            let start = bytes.count
            bytes.append(contentsOf: repeatElement(0, count: count))
            try bytes.withUnsafeMutableBytes { try fill(UnsafeMutableRawBufferPointer(rebasing: $0[start..<start + count])) }
        }

        /// The packed bytes, leaving this buffer empty.
        mutating func take() -> [UInt8] {
            var out: [UInt8] = []
            swap(&out, &bytes)
            return out
        }
    }

    // MARK: status, flush, compact, shutdown

    /// Runs a compaction and garbage collection pass now and waits for it;
    /// nil when the store stops or `deadline` passes first.
    public func compact(deadline: Date = .distantFuture) -> CompactionReport? {
        compactor.compactNow(deadline: deadline)
    }

    public func status() -> StoreStatus {
        let fileList = dirtyFileList()
        metaLock.lock()
        let fileCount = files.count
        metaLock.unlock()
        var dirtyBytes: UInt64 = 0
        var dirtyChunks = 0
        for f in fileList {
            f.lock.lock()
            metaLock.lock()
            let size = inodes[f.ino]?.attr.size ?? 0
            metaLock.unlock()
            for (idx, state) in f.chunks {
                if case .dirty = state {
                    dirtyChunks += 1
                    let start = UInt64(idx) * UInt64(chunkSize)
                    if size > start { dirtyBytes += min(UInt64(chunkSize), size - start) }
                }
            }
            forgetIfClean(f)
            f.lock.unlock()
        }
        let rate = uploader.rate
        let usage = compactor.usage()
        let totals = compactor.totals()
        let compacting = compactor.isRunning
        let lastCompaction = compactor.report
        uploader.cond.lock()
        defer { uploader.cond.unlock() }
        return StoreStatus(
            dirtyBytes: dirtyBytes, dirtyChunks: dirtyChunks, uploadedBytes: uploader.uploadedBytes,
            uploadedSegments: uploader.uploadedSegments, uploadRateBytesPerSecond: rate,
            etaSeconds: dirtyBytes == 0 ? 0 : (rate > 0 ? Double(dirtyBytes) / rate : nil),
            cacheBytes: cleanCache.totalBytes, cacheBudget: cleanCache.budget, files: fileCount,
            lastError: uploader.lastError, segments: usage.segments, segmentBytes: usage.storedBytes,
            liveBytes: usage.liveBytes, reclaimableBytes: usage.reclaimableBytes, compactedBytes: totals.compactedBytes,
            segmentsDeleted: totals.segmentsDeleted, compacting: compacting, lastCompaction: lastCompaction)
    }

    /// Uploads everything dirty now; returns when nothing is dirty or the
    /// deadline passes (then false). `progress` is called about twice a second.
    @discardableResult
    public func flush(deadline: Date = .distantFuture, progress: ((StoreStatus) -> Void)? = nil) -> Bool {
        while true {
            let st = status()
            progress?(st)
            if st.dirtyChunks == 0 { persistAll(); try? commitDeferred(); syncDatabase(); return true }
            if Date() >= deadline { return false }
            let u = uploader
            u.cond.lock()
            u.forceRequests += 1
            u.wakeRequested = true
            u.cond.signal()
            let target = u.passesCompleted + 1
            while u.passesCompleted < target && !u.stopped && Date() < deadline {
                _ = u.cond.wait(until: min(deadline, Date().addingTimeInterval(0.5)))
                if u.passesCompleted < target { u.cond.unlock(); progress?(status()); u.cond.lock() }
            }
            let stopped = u.stopped
            u.cond.unlock()
            if stopped { return status().dirtyChunks == 0 }
        }
    }

    /// Stops the uploader after one last pass bounded by `deadline`, and
    /// makes all metadata durable. What is left dirty stays in the cache
    /// and is uploaded on the next start.
    public func shutdown(deadline: Date) {
        // An interrupted compaction is safe (at worst it leaves orphans).
        compactor.stop(deadline: min(deadline, Date().addingTimeInterval(5)))
        _ = flush(deadline: deadline)
        let u = uploader
        u.cond.lock()
        u.stopping = true
        u.cond.signal()
        u.cond.unlock()
        // Don't wait forever for a pass stuck on the network.
        u.cond.lock()
        while !u.stopped && Date() < deadline.addingTimeInterval(5) { _ = u.cond.wait(until: Date().addingTimeInterval(0.2)) }
        u.cond.unlock()
        persistAll()
        for f in dirtyFileList() {
            f.lock.lock()
            for (_, s) in f.chunks {
                guard case let .dirty(d) = s, d.unsynced else { continue }
                if d.slot == nil { _ = d.withDescriptor { Glibc.fsync($0) } }
                d.unsynced = false
            }
            f.lock.unlock()
        }
        // Once for all its slots; the clean chunks kept in it are listed
        // for the next start, and none of their slots is reused after that.
        slab.freezeReuse()
        Glibc.fsync(slab.fd)
        cleanCache.saveSlotIndex()
        syncDirtyDirectory()
        try? commitDeferred()
        syncDatabase()
    }
}

/// Lowers the calling thread's CPU priority (nice 10; Linux applies nice per
/// thread): sealing, coding and hashing for upload and compaction then use
/// what the mount's foreground requests leave, instead of taking a core from
/// a reader or writer on a 2-core machine. They still get all of an idle CPU.
func runInBackground() {
    _ = granary_nice_this_thread(10)
}
