import Foundation

/// glibc's heap settings for processes that move large buffers.
enum HeapTuning {
    /// Upload frames (1-4 MiB), pieces and segments (up to 64 MiB) are
    /// allocated and freed all the time. By default glibc serves such sizes
    /// with mmap (or trims them off the heap once freed), so every buffer
    /// faulted in fresh zeroed pages: about a tenth of a farmer's CPU under
    /// upload, and as much of a renter's. Keep blocks up to 64 MiB in the
    /// heap and up to 256 MiB of freed memory for reuse (the cost: a busy
    /// process's resident size stays near its peak).
    /// (mallopt is looked up at run time: Swift's Glibc module leaves malloc.h out.)
    static func keepFreedMemory() {
        typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
        let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
        let trimThreshold: Int32 = -1, mmapThreshold: Int32 = -3  // M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
        _ = mallopt(mmapThreshold, 64 << 20)
        _ = mallopt(trimThreshold, 256 << 20)
    }
}
