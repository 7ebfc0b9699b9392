import Foundation
import GranaryCore

/// A page-aligned buffer that a piece upload fills with arriving bytes and
/// the disk pool writes out with one pwrite.
///
/// Page alignment (of the address, the file offset and the padded length)
/// is what O_DIRECT asks for, so the bytes go from here to the disk without
/// a copy into the page cache. Profiling `bench network` put that copy
/// (copy_folio_from_iter_atomic, into freshly allocated page-cache pages)
/// at a quarter of the machine's CPU during an upload, more than the
/// farmers' hashing.
///
/// Owned by one party at a time: the upload fills it, hands it to one
/// write and gets it back when the write ends. Its memory returns to a
/// small process-wide pool, so buffers stay backed instead of faulting in
/// fresh pages for every piece.
final class StagingBuffer: @unchecked Sendable {
    static let capacity = 1 << 20
    static let pageSize = 4096
    private let base: UnsafeMutableRawPointer
    private(set) var count = 0

    init() { base = Self.pool.take() }
    deinit { Self.pool.give(base) }

    var isEmpty: Bool { count == 0 }
    var isFull: Bool { count == Self.capacity }

    /// Copies as much of `bytes` as fits; returns how many were taken.
    func fill(from bytes: UnsafeRawBufferPointer) -> Int {
        let n = min(bytes.count, Self.capacity - count)
        if n > 0 { (base + count).copyMemory(from: bytes.baseAddress!, byteCount: n) }
        count += n
        return n
    }

    /// Writes the bytes at `offset` (a multiple of the capacity) of `fd`,
    /// then empties the buffer. On a file opened for direct I/O the length
    /// is padded with zeros to whole pages (the caller truncates the file to
    /// its size); a file system that refuses the direct write gets it
    /// through the page cache instead, with writeback started at once.
    func write(to fd: Int32, at offset: UInt64) throws(FarmerError) {
        var flags = fcntl(fd, F_GETFL)
        var length = count
        if flags & FileSync.directIOFlag != 0 {
            length = (count + Self.pageSize - 1) / Self.pageSize * Self.pageSize
            (base + count).initializeMemory(as: UInt8.self, repeating: 0, count: length - count)
        }
        var done = 0
        while done < length {
            let n = pwrite(fd, base + done, length - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EINVAL, flags & FileSync.directIOFlag != 0 {
                    flags &= ~FileSync.directIOFlag
                    _ = fcntl(fd, F_SETFL, flags)
                    length = max(done, count)
                    continue
                }
                throw FarmerError(.internal, "writing piece: \(String(cString: strerror(errno)))")
            }
            guard n > 0 else { throw FarmerError(.internal, "writing piece: the disk took no bytes") }
            done += n
        }
        if flags & FileSync.directIOFlag == 0 { FileSync.startWriteback(fd, offset: Int(offset), length: length) }
        count = 0
    }

    /// Freed buffers kept for reuse (a farmer's concurrent uploads need two each).
    private static let pool = Pool(keep: 32)

    private final class Pool: @unchecked Sendable {
        // `free` is guarded by `lock`: uploads and disk-pool threads give and take.
        private let lock = NSLock()
        private var free: [UnsafeMutableRawPointer] = []
        private let keep: Int

        init(keep: Int) { self.keep = keep }

        func take() -> UnsafeMutableRawPointer {
            lock.withLock { free.popLast() }
                ?? UnsafeMutableRawPointer.allocate(byteCount: StagingBuffer.capacity, alignment: StagingBuffer.pageSize)
        }

        func give(_ p: UnsafeMutableRawPointer) {
            let kept = lock.withLock {
                guard free.count < keep else { return false }
                free.append(p)
                return true
            }
            if !kept { p.deallocate() }
        }
    }
}
