import Foundation

/// Deletes dropped cache files (dirty chunks cut off by a truncate or a
/// delete, clean chunks evicted) on a thread of its own. Freeing a
/// file's blocks is slow: the kernel waits for its pages under writeback
/// and, on a disk mounted with `discard`, for the device to discard its
/// blocks (300 ms for the 256 chunk files of a 1 GiB file here), which an
/// O_TRUNC, a truncate or an rm would otherwise wait for inside the FUSE
/// request or a read that evicts. A file is first renamed into the dirty
/// folder under a name of its own, which is cheap, so its path is free at
/// once for the next chunk of that index or id; names a crash leaves
/// behind are removed at start with the other cache files no row names.
/// Thread-safe.
final class CacheFileReaper: @unchecked Sendable {
    private let directory: String
    private let cond = NSCondition()
    private var pending: [(fd: Int32?, path: String)] = []
    /// A thread is deleting; it ends when nothing is left.
    private var running = false
    private var counter: UInt64 = 0

    init(directory: String) { self.directory = directory }

    /// Deletes the file at `path` and closes `fd`, later.
    func delete(_ path: String, closing fd: Int32? = nil) {
        cond.lock()
        counter += 1
        let gone = "\(directory)/.gone-\(getpid())-\(counter)"
        cond.unlock()
        guard rename(path, gone) == 0 else {
            if let fd { close(fd) }
            unlink(path)
            return
        }
        cond.lock()
        pending.append((fd, gone))
        let start = !running
        running = true
        cond.unlock()
        if start {
            let t = Thread { [self] in run() }
            t.name = "granary-reaper"
            t.start()
        }
    }

    /// Waits until every file handed over so far is deleted (the cache
    /// disk is short of space and the blocks they hold are wanted now).
    func drain() {
        cond.lock()
        while running { cond.wait() }
        cond.unlock()
    }

    private func run() {
        cond.lock()
        while let next = pending.popLast() {
            cond.unlock()
            if let fd = next.fd { close(fd) }
            unlink(next.path)
            cond.lock()
        }
        running = false
        cond.broadcast()
        cond.unlock()
    }
}
