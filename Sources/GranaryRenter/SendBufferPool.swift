import Foundation
import NIOCore

/// Send buffers of finished piece uploads, kept for the next pieces.
///
/// A piece is copied into a ByteBuffer to go on the wire. A fresh buffer
/// per piece (16 MiB) faulted in new pages every time: glibc hands blocks
/// that size, freed from a thread's arena, back to the kernel. A buffer is
/// given back once its upload ended; if the connection still held a slice
/// of it, ByteBuffer's copy-on-write gives the next user fresh storage, so
/// reuse is never unsafe, only sometimes not a saving.
final class SendBufferPool: @unchecked Sendable {
    // `free` and `keptBytes` are guarded by `lock`: many uploads at once.
    private let lock = NSLock()
    private var free: [ByteBuffer] = []
    private var keptBytes = 0
    private let maxBytes: Int

    init(maxBytes: Int) { self.maxBytes = maxBytes }

    /// A buffer holding a copy of `bytes`.
    func buffer(with bytes: ArraySlice<UInt8>) -> ByteBuffer {
        var buffer = lock.withLock { () -> ByteBuffer? in
            guard let i = free.firstIndex(where: { $0.capacity >= bytes.count }) else { return nil }
            keptBytes -= free[i].capacity
            return free.remove(at: i)
        } ?? ByteBufferAllocator().buffer(capacity: bytes.count)
        buffer.clear()
        buffer.writeBytes(bytes)
        return buffer
    }

    /// Keeps `buffer` for reuse while the pool has room.
    func recycle(_ buffer: ByteBuffer) {
        lock.withLock {
            guard keptBytes + buffer.capacity <= maxBytes else { return }
            keptBytes += buffer.capacity
            free.append(buffer)
        }
    }
}
