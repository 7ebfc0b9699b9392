import Foundation
import GranaryCore
import Synchronization

/// The fixed chunk size: a file's content is cut at 4 MiB offsets.
public let chunkSize = 4 << 20

/// A chunk being written: its bytes live in a cache file, its own or a
/// slot of the shared `ChunkSlab` (small chunks), from `origin` on. When it
/// was written over older content that is not cached (`base`), only the
/// written `ranges` are valid in the file until the base is fetched and
/// merged, which the uploader does before sealing (writes never wait).
///
/// A file of its own is opened when first used and may be closed again
/// (`DirtyDescriptors`): dirty chunks wait for the network, and one
/// descriptor each would run the process out of them during an outage.
/// Everything here is used under the owning file's lock.
final class DirtyChunk {
    /// The cache file of its own, reopened by this path; nil for a slot.
    let path: String?
    /// Open descriptor, or -1 while closed (never closed for a slot).
    private var descriptor: Int32
    private weak var descriptors: DirtyDescriptors?
    /// The slab slot holding the bytes, or nil for a file of its own.
    let slot: Int?
    /// Where the chunk's byte 0 is in `fd`.
    let origin: Int
    var base: Hash256?
    /// Base bytes at or beyond this offset are gone (truncated away).
    var baseLimit: Int
    var ranges = RangeSet()
    /// Bumped on every change, so the uploader knows whether what it sealed
    /// is still what the chunk holds.
    var version: UInt64 = 1
    var lastWrite: UInt64 = monotonicNanos()
    /// Written since the cache file was last fsynced.
    var unsynced = true

    /// A cache file of its own at `path`, open as `fd` (or -1: opened when used).
    init(path: String, fd: Int32, base: Hash256?, baseLimit: Int, descriptors: DirtyDescriptors) {
        self.path = path
        descriptor = fd
        self.descriptors = descriptors
        self.base = base
        self.baseLimit = baseLimit
        slot = nil
        origin = 0
        if fd >= 0 { descriptors.opened(self) }
    }

    init(slab: ChunkSlab, slot: Int) {
        path = nil
        descriptor = slab.fd
        self.slot = slot
        origin = slab.offset(of: slot)
        base = nil
        baseLimit = 0
    }

    /// The cache file's descriptor, reopened if it was closed; -1 (errno
    /// set) when it cannot be, which the I/O then fails on.
    var fd: Int32 {
        if descriptor < 0, let path {
            descriptor = open(path, O_RDWR | O_CLOEXEC)
            if descriptor >= 0 { descriptors?.opened(self) }
        }
        return descriptor
    }

    var isOpen: Bool { descriptor >= 0 }

    /// Closes a file of its own; the next use reopens it.
    func closeDescriptor() {
        if let fd = detachDescriptor() { close(fd) }
    }

    /// Hands over an open descriptor of a file of its own (to be closed
    /// by whoever deletes the file), leaving the chunk closed.
    func detachDescriptor() -> Int32? {
        guard let fd = takeDescriptor() else { return nil }
        descriptors?.forget(self)
        return fd
    }

    /// `detachDescriptor` for `DirtyDescriptors`, which has dropped it already.
    fileprivate func takeDescriptor() -> Int32? {
        guard path != nil, descriptor >= 0 else { return nil }
        defer { descriptor = -1 }
        return descriptor
    }

    /// Runs `body` with the descriptor and closes it again afterwards if it
    /// was closed before: for the uploader, fsync and shutdown, which touch
    /// every dirty chunk and must not leave them all open.
    func withDescriptor<T>(_ body: (Int32) -> T) -> T {
        let wasOpen = isOpen
        defer { if !wasOpen { closeDescriptor() } }
        return body(fd)
    }

    /// The chunk's stored length: what lies beyond reads as zeros. A
    /// slot's is its size (free slots are zeroed); a file's, the file's.
    func storedLength() -> Int? {
        if slot != nil { return ChunkSlab.slotSize }
        var st = stat()
        if isOpen { return fstat(descriptor, &st) == 0 ? Int(st.st_size) : nil }
        return path.flatMap { stat($0, &st) == 0 ? Int(st.st_size) : nil }
    }

    func touch() {
        version &+= 1
        lastWrite = monotonicNanos()
        unsynced = true
    }
}

/// One piece of a read's reply: `count` bytes of an open cache file at
/// `offset`, or a run of zeros.
public enum ReadPiece: Sendable {
    case file(fd: Int32, offset: Int, count: Int)
    case zeros(Int)
}

/// What one chunk of a file is.
enum ChunkState {
    /// Sealed content `id` of `length` plaintext bytes, in a durable segment.
    case clean(id: Hash256, length: Int)
    case dirty(DirtyChunk)
}

/// A file's chunks by index. Most files are one chunk (under 4 MiB), kept
/// inline: a one-entry Dictionary is an allocation of 184 bytes for each
/// of maybe a million files. More chunks live in a Dictionary.
struct ChunkMap: Sequence {
    private enum Storage {
        case empty
        case one(Int, ChunkState)
        case many([Int: ChunkState])
    }
    private var storage = Storage.empty

    subscript(idx: Int) -> ChunkState? {
        get {
            switch storage {
            case .empty: return nil
            case let .one(i, state): return i == idx ? state : nil
            case let .many(all): return all[idx]
            }
        }
        set {
            switch storage {
            case .empty:
                if let newValue { storage = .one(idx, newValue) }
            case let .one(i, state):
                if i == idx { storage = newValue.map { .one(idx, $0) } ?? .empty }
                else if let newValue { storage = .many([i: state, idx: newValue]) }
            case var .many(all):
                storage = .empty  // `all` is then the only reference: changed in place
                all[idx] = newValue
                if all.count > 1 { storage = .many(all) }
                else if let (i, state) = all.first { storage = .one(i, state) }
            }
        }
    }

    var count: Int {
        switch storage {
        case .empty: return 0
        case .one: return 1
        case let .many(all): return all.count
        }
    }

    var isEmpty: Bool { count == 0 }
    /// Views, as a Dictionary's are: no array is made to walk them.
    var keys: LazyMapSequence<ChunkMap, Int> { lazy.map(\.key) }
    var values: LazyMapSequence<ChunkMap, ChunkState> { lazy.map(\.value) }

    mutating func removeAll() { storage = .empty }

    struct Iterator: IteratorProtocol {
        fileprivate var one: (key: Int, value: ChunkState)?
        fileprivate var many: Dictionary<Int, ChunkState>.Iterator?

        mutating func next() -> (key: Int, value: ChunkState)? {
            if let o = one { one = nil; return o }
            return many?.next()
        }
    }

    func makeIterator() -> Iterator {
        switch storage {
        case .empty: return Iterator()
        case let .one(i, state): return Iterator(one: (i, state))
        case let .many(all): return Iterator(many: all.makeIterator())
        }
    }
}

/// A regular file's content map. Its own lock serialises the file's I/O;
/// lock order is always FileData.lock before the store's metadata lock.
final class FileData {
    let ino: UInt64
    let lock = FileLock()
    var chunks = ChunkMap() {
        didSet { chunkCount.store(chunks.count, ordering: .relaxed) }
    }
    /// `chunks.count`, for `stat` (st_blocks), which reads it without
    /// the file's lock: the metadata lock must not wait for a file's I/O.
    let chunkCount = Atomic<Int>(0)
    /// Chunk indices whose rows in meta.db are stale.
    var changed: Set<Int> = []
    /// How many times its rows were persisted; changed with both its lock
    /// and metaLock held, so either lock is enough to read it. The
    /// uploader's clean rows must not overwrite a row an fsync wrote after
    /// the uploader last looked (see `markClean`).
    var rowsPersisted: UInt64 = 0
    /// Clean cached chunks open for reading, by index.
    var cleanFDs: [Int: (id: Hash256, chunk: CachedChunk)] = [:]
    /// End offset of the last read, for sequential read-ahead.
    var lastReadEnd: UInt64 = 0
    /// The chunk a sequential read last opened ahead of itself.
    var openedAhead = -1
    /// Removed from the namespace and freed: late operations do nothing.
    var freed = false
    /// Its dirty chunks' open cache files; made with its first cache file
    /// of its own (most files never have one: their bytes sit in the slab).
    private(set) var openDirtyFiles: DirtyDescriptors?
    var dirtyDescriptors: DirtyDescriptors {
        if let d = openDirtyFiles { return d }
        let d = DirtyDescriptors()
        openDirtyFiles = d
        return d
    }

    init(ino: UInt64) { self.ino = ino }

    deinit { lock.destroy() }

    var dirtyCount: Int { chunks.values.reduce(0) { if case .dirty = $1 { return $0 + 1 }; return $0 } }

    func closeCleanFD(_ idx: Int) { cleanFDs[idx] = nil }

    /// Between operations: the dirty descriptors beyond their budget, and
    /// the clean ones beyond it farthest from the last read. A reader keeps
    /// its file open throughout, and `cat` of a 100 GiB file otherwise held
    /// a descriptor per chunk read (25,600) until its close.
    func trimDescriptors() -> [Int32] {
        defer { trimCleanDescriptors() }
        return openDirtyFiles?.trim() ?? []
    }

    private func trimCleanDescriptors() {
        guard cleanFDs.count > DirtyDescriptors.budget else { return }
        let here = Int(lastReadEnd / UInt64(chunkSize))
        let far = cleanFDs.keys.sorted { abs($0 - here) > abs($1 - here) }
        for idx in far.prefix(cleanFDs.count - DirtyDescriptors.budget) { cleanFDs[idx] = nil }
    }

    func closeAllCleanFDs() { cleanFDs.removeAll() }

    /// At a file's last close: all its cache files, clean ones now and
    /// dirty ones returned for the caller to close.
    func closeAllDescriptors() -> [Int32] {
        cleanFDs.removeAll()
        return openDirtyFiles?.closeAll() ?? []
    }
}

/// A file's lock: a bare pthread mutex of its own, where NSLock would be
/// an object plus the mutex it allocates, for each of maybe a million
/// files. Its owner calls `destroy` once (FileData's deinit).
struct FileLock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }
    /// Takes the lock if it is free; true when taken.
    func `try`() -> Bool { pthread_mutex_trylock(mutex) == 0 }

    func destroy() {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }
}

/// The dirty chunks of one file whose cache files are open, oldest opened
/// first (under the file's lock). A file keeps at most `budget` open past
/// an operation, and none after its last close, so the process holds
/// about `budget` per open file however much waits for upload. Before
/// this, each dirty chunk kept its file open until uploaded, and a long
/// copy during an outage reached the hard limit (20,000 here) and failed
/// with EIO.
final class DirtyDescriptors {
    /// A 128 MiB window of 4 MiB chunks: a writer moving through a larger
    /// file reopens what it comes back to.
    static let budget = 32
    private var open: [DirtyChunk] = []

    var count: Int { open.count }

    func opened(_ d: DirtyChunk) { open.append(d) }

    func forget(_ d: DirtyChunk) {
        if let i = open.lastIndex(where: { $0 === d }) { open.remove(at: i) }
    }

    /// Takes the oldest opened beyond the budget, for the caller to close
    /// off the FUSE thread (`CacheFileReaper.close`). Only between
    /// operations: an operation may hold several of their descriptors.
    func trim() -> [Int32] {
        guard open.count > Self.budget else { return [] }
        let excess = open.prefix(open.count - Self.budget)
        open.removeFirst(excess.count)
        return excess.compactMap { $0.takeDescriptor() }
    }

    /// Takes them all, for the caller to close.
    func closeAll() -> [Int32] {
        let all = open
        open.removeAll()
        return all.compactMap { $0.takeDescriptor() }
    }
}
