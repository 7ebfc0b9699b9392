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
    private var pending: [(fd: Int32?, path: String?)] = []
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
            if let fd { Glibc.close(fd) }
            unlink(path)
            return
        }
        hand([(fd, gone)])
    }

    /// Closes `fds`, later. Closing chunk files just written costs the
    /// writer: a sequential 1 GiB write that closed its chunk files beyond
    /// the 32 it keeps open, under the file's lock, ran at 0.34-0.83 of
    /// local in six bench runs (0.68-0.95 before it closed any); handed
    /// off, 0.68-1.09 in four.
    func close(_ fds: [Int32]) {
        if !fds.isEmpty { hand(fds.map { ($0, nil) }) }
    }

    private func hand(_ items: [(fd: Int32?, path: String?)]) {
        cond.lock()
        pending.append(contentsOf: items)
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
            if let fd = next.fd { Glibc.close(fd) }
            if let path = next.path { unlink(path) }
            cond.lock()
        }
        running = false
        cond.broadcast()
        cond.unlock()
    }
}
