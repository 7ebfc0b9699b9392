import Foundation

/// A clean chunk's cached plaintext opened for reading: a file of its own
/// in the clean cache, or the slab slot it was written in, kept when it
/// was uploaded. A slot stays pinned while this is alive, so it is not
/// reused under a reader. Closes (or unpins) when released.
final class CachedChunk: Sendable {
    let fd: Int32
    /// Where the chunk's byte 0 is in `fd`.
    let origin: Int
    /// Bytes at or beyond this are not in `fd` and read as zeros.
    let capacity: Int
    private let slab: ChunkSlab?
    private let slot: Int

    init(file fd: Int32) {
        self.fd = fd
        origin = 0
        capacity = .max
        slab = nil
        slot = -1
    }

    /// The caller has pinned `slot`.
    init(slab: ChunkSlab, pinned slot: Int) {
        fd = slab.fd
        origin = slab.offset(of: slot)
        capacity = ChunkSlab.slotSize
        self.slab = slab
        self.slot = slot
    }

    deinit {
        if let slab { slab.unpin(slot) } else { close(fd) }
    }

    /// Reads up to `count` bytes at chunk offset `offset`, stopping where
    /// the stored bytes end; returns how many (-1 on error).
    func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int) -> Int {
        preadFull(fd, buffer, min(count, max(0, capacity - offset)), origin + offset)
    }
}

/// The chunk a sequential read will reach next, to be read into the page
/// cache ahead of it (`posix_fadvise(WILLNEED)`) after the reply that
/// found it (the file's lock still held, so a dirty chunk's descriptor is
/// still open).
struct ReadAheadAdvice {
    let clean: CachedChunk?
    let dirty: DirtyChunk?

    func advise() {
        if let c = clean {
            _ = posix_fadvise(c.fd, off_t(c.origin), off_t(c.capacity == .max ? 0 : c.capacity), POSIX_FADV_WILLNEED)
        } else if let d = dirty {
            _ = posix_fadvise(d.fd, off_t(d.origin), off_t(d.slot == nil ? 0 : ChunkSlab.slotSize), POSIX_FADV_WILLNEED)
        }
    }
}
