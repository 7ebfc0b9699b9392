import Foundation

extension GranaryStore {
    /// copy_file_range(2) inside the mount (coreutils' `cp` asks for it
    /// first). Whole chunks of uploaded content are shared: the copy names
    /// the same sealed chunk, so nothing is read, fetched, written or
    /// uploaded again, and a copy of a file that is no longer cached does
    /// not wait for the network. Holes stay holes.
    ///
    /// Returns the bytes copied, possibly fewer than asked (the caller
    /// asks again for the rest), or nil when the kernel should copy the
    /// bytes itself (its splice fallback): offsets not on chunk
    /// boundaries, a source chunk still dirty, a source open for writing
    /// (a shared mmap's bytes may not have reached the mount yet), or a
    /// last partial chunk over bytes that must not be shared or lost.
    public func copyRange(from src: UInt64, at inOffset: UInt64, to dst: UInt64, at outOffset: UInt64,
                          length: UInt64) throws(FSError) -> UInt64? {
        guard let s = fileData(src), let d = fileData(dst) else { throw .invalid }
        let size = UInt64(chunkSize)
        guard inOffset % size == 0, outOffset % size == 0 else { return nil }
        // One lock when it is one file; otherwise the lower inode first, so
        // two copies in opposite directions cannot wait on each other.
        let (first, second) = src <= dst ? (s, d) : (d, s)
        first.lock.lock()
        if second !== first { second.lock.lock() }
        defer {
            if second !== first { second.lock.unlock() }
            first.lock.unlock()
        }
        if s.freed || d.freed { throw .notFound }
        metaLock.lock()
        let srcSize = inodes[src]?.attr.size ?? 0, dstSize = inodes[dst]?.attr.size ?? 0
        let srcWritten = inodes[src]?.isOpenForWriting ?? false
        let dstPrivileged = inodes[dst].map(holdsPrivilegesLocked) ?? false
        metaLock.unlock()
        // A copy into a setuid file must clear the bit, as any write does.
        // The kernel here sends a SETATTR for that before the copy; where it
        // does not, only its own copy's writes (FUSE_WRITE_KILL_SUIDGID) do,
        // so such a file is left to that copy.
        if srcWritten || dstPrivileged { return nil }
        guard inOffset < srcSize, length > 0 else { return 0 }
        let total = min(length, srcSize - inOffset)
        if outOffset + total > UInt64(Int64.max) { throw FSError(EFBIG) }

        var copied: UInt64 = 0
        var dropped: [(Int, DirtyChunk)] = []
        while copied < total {
            let span = min(size, total - copied)
            let idxIn = Int((inOffset + copied) / size), idxOut = Int((outOffset + copied) / size)
            let state = s.chunks[idxIn]
            if case .dirty? = state { break }
            // A partial chunk is the copy's last. Shared, it ends the
            // destination's chunk too, so the destination must keep nothing
            // after it there, and the source must hold nothing after the
            // range in it (a file that grows later would show those bytes).
            if span < size {
                if dstSize > outOffset + total { break }
                if case let .clean(_, stored)? = state, UInt64(stored) > span { break }
            }
            dropChunk(d, idxOut, into: &dropped)
            d.chunks[idxOut] = state  // .clean shares the sealed chunk; nil stays a hole
            copied += span
        }
        guard copied > 0 else { return nil }
        metaLock.lock()
        if let rec = inodes[dst] { contentChangedLocked(rec, end: outOffset + copied) }
        metaLock.unlock()
        // Under the file's lock, as truncate does: a write after it may
        // make a new cache file at the same path, which a late discard
        // would delete.
        persistThenDiscard(d, dropped)
        return copied
    }
}
