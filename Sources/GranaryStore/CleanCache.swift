import Foundation
import GranaryCore

/// Clean chunks cached as plaintext files `cache/clean/<chunk id>`, or in
/// the slab slot a small chunk was written in (kept when it was uploaded,
/// not copied out; such entries last until the mount stops), evicted least
/// recently used beyond the budget. Dirty chunks are elsewhere and never
/// evicted. Thread-safe: one lock around the bookkeeping (the files
/// themselves are written before `insert` and only unlinked here).
final class CleanCache: @unchecked Sendable {
    let directory: String
    let budget: UInt64
    let slab: ChunkSlab
    let reaper: CacheFileReaper
    private struct Entry {
        var size: UInt64
        var tick: UInt64
        var slot: Int?
    }
    private let lock = NSLock()
    private var entries: [Hash256: Entry] = [:]
    private var recency = RecencyOrder<Hash256>()
    private(set) var totalBytes: UInt64 = 0

    init(directory: String, budget: UInt64, slab: ChunkSlab, reaper: CacheFileReaper) {
        self.directory = directory
        self.budget = budget
        self.slab = slab
        self.reaper = reaper
        // Rebuild from what the folder holds; partial downloads are dropped.
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names {
            let path = directory + "/" + name
            guard let id = Hash256(hex: name) else { unlink(path); continue }
            var st = stat()
            guard stat(path, &st) == 0 else { continue }
            entries[id] = Entry(size: UInt64(st.st_size), tick: recency.use(id))
            totalBytes += UInt64(st.st_size)
        }
    }

    func path(_ id: Hash256) -> String { directory + "/" + id.hex }

    func contains(_ id: Hash256) -> Bool {
        lock.lock(); defer { lock.unlock() }
        guard entries[id] != nil else { return false }
        touchLocked(id)
        return true
    }

    /// Opens a cached chunk for reading, or nil when it is not cached.
    func open(_ id: Hash256) -> CachedChunk? {
        lock.lock()
        guard let e = entries[id] else { lock.unlock(); return nil }
        touchLocked(id)
        if let slot = e.slot {
            slab.pin(slot)  // under the lock: eviction cannot retire it first
            lock.unlock()
            return CachedChunk(slab: slab, pinned: slot)
        }
        lock.unlock()
        let fd = Glibc.open(path(id), O_RDONLY | O_CLOEXEC)
        if fd < 0 { forget(id); return nil }
        return CachedChunk(file: fd)
    }

    /// Registers a file already in place, then evicts beyond the budget.
    func insert(_ id: Hash256, size: UInt64) {
        lock.lock()
        let old = entries[id]
        add(id, Entry(size: size, tick: 0, slot: nil))
        let victims = evictLocked(keeping: id)
        lock.unlock()
        if let old, old.slot != nil { drop(id, old) }
        for (vid, v) in victims { drop(vid, v) }
    }

    /// Keeps a chunk in the slab slot that holds it; false when the chunk
    /// is cached already (the caller lets its slot go).
    func insert(_ id: Hash256, slot: Int, size: UInt64) -> Bool {
        lock.lock()
        guard entries[id] == nil else { lock.unlock(); return false }
        add(id, Entry(size: size, tick: 0, slot: slot))
        let victims = evictLocked(keeping: id)
        lock.unlock()
        for (vid, v) in victims { drop(vid, v) }
        return true
    }

    private func add(_ id: Hash256, _ entry: Entry) {
        var e = entry
        e.tick = recency.use(id)
        if let old = entries[id] { totalBytes -= old.size }
        entries[id] = e
        totalBytes += e.size
        compactRecencyLocked()
    }

    private func touchLocked(_ id: Hash256) {
        entries[id]?.tick = recency.use(id)
        compactRecencyLocked()
    }

    private func compactRecencyLocked() {
        recency.compact(liveCount: entries.count) { tick, id in entries[id]?.tick == tick }
    }

    /// Least recently used first, never `id` (just added).
    private func evictLocked(keeping id: Hash256) -> [(Hash256, Entry)] {
        guard totalBytes > budget else { return [] }
        var victims: [(Hash256, Entry)] = []
        var kept: (tick: UInt64, key: Hash256)?
        while totalBytes > budget, let oldest = recency.takeOldest() {
            guard let v = entries[oldest.key], v.tick == oldest.tick else { continue }  // used again since
            if oldest.key == id { kept = oldest; continue }
            victims.append((oldest.key, v))
            totalBytes -= v.size
            entries[oldest.key] = nil
        }
        if let kept { recency.putBack(kept) }
        return victims
    }

    /// Deletes an entry's bytes: its file, or its slot (reused once no
    /// reader holds it).
    private func drop(_ id: Hash256, _ e: Entry) {
        if let slot = e.slot { slab.retire(slot) } else { reaper.delete(path(id)) }
    }

    /// Removes an entry from the books; its bytes are the caller's to drop.
    private func take(_ id: Hash256) -> Entry? {
        lock.lock(); defer { lock.unlock() }
        guard let old = entries.removeValue(forKey: id) else { return nil }
        totalBytes -= old.size
        return old
    }

    /// Forgets a chunk whose file is gone (a slot is let go).
    func forget(_ id: Hash256) {
        if let old = take(id), old.slot != nil { drop(id, old) }
    }

    /// Forgets a chunk and deletes its bytes (no file refers to it any more).
    func remove(_ id: Hash256) {
        if let old = take(id) { drop(id, old) } else { reaper.delete(path(id)) }
    }

    // MARK: slots across a restart

    /// Where a clean unmount lists the chunks kept in slab slots. Read and
    /// deleted at the next start, before any slot can be reused: a list
    /// left from an older run could name slots holding other bytes since.
    var slotIndexPath: String { (directory as NSString).deletingLastPathComponent + "/slab-clean" }

    /// Writes the slot entries to `slotIndexPath` (the slab is fsynced
    /// first by the caller): 32-byte chunk ID, slot and size (Int64 each).
    func saveSlotIndex() {
        lock.lock()
        var bytes: [UInt8] = []
        for (id, e) in entries {
            guard let slot = e.slot else { continue }
            bytes += id.bytes
            withUnsafeBytes(of: Int64(slot).littleEndian) { bytes += $0 }
            withUnsafeBytes(of: Int64(e.size).littleEndian) { bytes += $0 }
        }
        lock.unlock()
        guard !bytes.isEmpty else { return }
        let tmp = slotIndexPath + ".tmp"
        let fd = Glibc.open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        let ok = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) == $0.count } && fsync(fd) == 0
        close(fd)
        if ok { rename(tmp, slotIndexPath) } else { unlink(tmp) }
    }

    /// The slab slots clean chunks are kept in.
    func heldSlots() -> Set<Int> {
        lock.lock(); defer { lock.unlock() }
        return Set(entries.values.compactMap(\.slot))
    }

    /// Reads and deletes the list `saveSlotIndex` wrote (empty when none).
    func takeSlotIndex() -> [(id: Hash256, slot: Int, size: UInt64)] {
        guard let data = FileManager.default.contents(atPath: slotIndexPath) else { return [] }
        unlink(slotIndexPath)
        let dirFD = Glibc.open((slotIndexPath as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirFD >= 0 { fsync(dirFD); close(dirFD) }
        let bytes = [UInt8](data)
        var out: [(id: Hash256, slot: Int, size: UInt64)] = []
        var at = 0
        while at + 48 <= bytes.count {
            func int(_ o: Int) -> Int64 { bytes[o..<o + 8].reversed().reduce(0) { $0 << 8 | Int64($1) } }
            if let id = Hash256(bytes: Data(bytes[at..<at + 32])) {
                let slot = Int(int(at + 32)), size = int(at + 40)
                if slot >= 0, slot < ChunkSlab.maxSlots, size >= 0, size <= Int64(ChunkSlab.slotSize) { out.append((id, slot, UInt64(size))) }
            }
            at += 48
        }
        return out
    }

    /// Drops every clean chunk (to free disk space under pressure).
    func evictAll() {
        lock.lock()
        let all = entries
        entries.removeAll()
        recency.removeAll()
        totalBytes = 0
        lock.unlock()
        for (id, e) in all { drop(id, e) }
    }
}

/// Where a sealed chunk lives in a durable segment.
struct BlobLocation: Sendable {
    let segment: Hash256
    let offset: Int
    let sealedLength: Int
    let plainLength: Int
}

/// Runs async work from a plain thread (FUSE workers, the uploader) and
/// waits for it, at most `timeout` seconds.
enum Blocking {
    final class Box<T>: @unchecked Sendable {  // written once before the semaphore signals
        var result: Result<T, Error>?
    }

    /// With `progress`, the wait ends only once that counter stood still
    /// for `timeout` seconds: a fetch over a slow link takes what it takes,
    /// one from farmers that do not answer still fails in bounded time.
    static func run<T: Sendable>(timeout: Double? = nil, progress: (@Sendable () -> UInt64)? = nil,
                                 _ body: @escaping @Sendable () async throws -> T) throws -> T {
        let sem = DispatchSemaphore(value: 0)
        let box = Box<T>()
        let task = Task {
            do { box.result = .success(try await body()) } catch { box.result = .failure(error) }
            sem.signal()
        }
        guard let timeout else {
            sem.wait()
            return try box.result!.get()
        }
        var mark = progress?()
        var quietSince = DispatchTime.now()
        while true {
            let check = progress == nil ? timeout : min(1, timeout)
            if sem.wait(timeout: .now() + check) == .success { break }
            let now = progress?()
            if now != mark { mark = now; quietSince = .now() }
            if DispatchTime.now().uptimeNanoseconds - quietSince.uptimeNanoseconds >= UInt64(timeout * 1e9) {
                task.cancel()
                throw TimedOut(seconds: timeout)
            }
        }
        return try box.result!.get()
    }

    /// An operation started with `start`, waited for later from a thread.
    final class Handle<T: Sendable>: @unchecked Sendable {  // result written once before the semaphore signals
        fileprivate let sem = DispatchSemaphore(value: 0)
        fileprivate var result: Result<T, Error>?
        fileprivate var task: Task<Void, Never>?

        /// The result; after `timeout` seconds the operation is cancelled and this throws.
        func wait(timeout: Double) throws -> T {
            if sem.wait(timeout: .now() + timeout) == .timedOut {
                task?.cancel()
                throw TimedOut(seconds: timeout)
            }
            sem.signal()  // later waits return at once
            return try result!.get()
        }
    }

    /// Starts `body` without waiting for it.
    static func start<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) -> Handle<T> {
        let h = Handle<T>()
        h.task = Task {
            do { h.result = .success(try await body()) } catch { h.result = .failure(error) }
            h.sem.signal()
        }
        return h
    }

    struct TimedOut: Error, CustomStringConvertible {
        let seconds: Double
        var description: String { "no byte from segment storage within \(Int(seconds)) s" }
    }
}
