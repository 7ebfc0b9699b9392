import Foundation
import GranaryCore

/// The fixed chunk size: a file's content is cut at 4 MiB offsets.
public let chunkSize = 4 << 20

/// A chunk being written: its bytes live in a cache file that stays open,
/// its own or a slot of the shared `ChunkSlab` (small chunks), from
/// `origin` on. When it was written over older content that is not cached
/// (`base`), only the written `ranges` are valid in the file until the base
/// is fetched and merged, which the uploader does before sealing (writes
/// never wait).
final class DirtyChunk {
    let fd: Int32
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

    init(fd: Int32, base: Hash256?, baseLimit: Int) {
        self.fd = fd
        self.base = base
        self.baseLimit = baseLimit
        slot = nil
        origin = 0
    }

    init(slab: ChunkSlab, slot: Int) {
        fd = slab.fd
        self.slot = slot
        origin = slab.offset(of: slot)
        base = nil
        baseLimit = 0
    }

    /// The chunk's stored length: what lies beyond reads as zeros. A
    /// slot's is its size (free slots are zeroed); a file's, the file's.
    func storedLength() -> Int? {
        if slot != nil { return ChunkSlab.slotSize }
        var st = stat()
        return fstat(fd, &st) == 0 ? Int(st.st_size) : nil
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

/// A regular file's content map. Its own lock serialises the file's I/O;
/// lock order is always FileData.lock before the store's metadata lock.
final class FileData {
    let ino: UInt64
    let lock = NSLock()
    var chunks: [Int: ChunkState] = [:]
    /// Chunk indices whose rows in meta.db are stale.
    var changed: Set<Int> = []
    /// Clean cached chunks open for reading, by index.
    var cleanFDs: [Int: (id: Hash256, chunk: CachedChunk)] = [:]
    /// End offset of the last read, for sequential read-ahead.
    var lastReadEnd: UInt64 = 0
    /// The chunk a sequential read last opened ahead of itself.
    var openedAhead = -1
    /// Removed from the namespace and freed: late operations do nothing.
    var freed = false

    init(ino: UInt64) { self.ino = ino }

    var dirtyCount: Int { chunks.values.reduce(0) { if case .dirty = $1 { return $0 + 1 }; return $0 } }

    func closeCleanFD(_ idx: Int) { cleanFDs[idx] = nil }

    func closeAllCleanFDs() { cleanFDs.removeAll() }
}
