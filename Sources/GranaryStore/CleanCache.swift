import Foundation
import GranaryCore

/// Clean chunks cached as plaintext files `cache/clean/<chunk id>`, evicted
/// least recently used beyond the budget. Dirty chunks are elsewhere and
/// never evicted. Thread-safe: one lock around the bookkeeping (the files
/// themselves are written before `insert` and only unlinked here).
final class CleanCache: @unchecked Sendable {
    let directory: String
    let budget: UInt64
    private let lock = NSLock()
    private var entries: [Hash256: (size: UInt64, tick: UInt64)] = [:]
    private var tick: UInt64 = 0
    private(set) var totalBytes: UInt64 = 0

    init(directory: String, budget: UInt64) {
        self.directory = directory
        self.budget = budget
        // Rebuild from what the folder holds; partial downloads are dropped.
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names {
            let path = directory + "/" + name
            guard let id = Hash256(hex: name) else { unlink(path); continue }
            var st = stat()
            guard stat(path, &st) == 0 else { continue }
            tick += 1
            entries[id] = (UInt64(st.st_size), tick)
            totalBytes += UInt64(st.st_size)
        }
    }

    func path(_ id: Hash256) -> String { directory + "/" + id.hex }

    func contains(_ id: Hash256) -> Bool {
        lock.lock(); defer { lock.unlock() }
        if entries[id] != nil { tick += 1; entries[id]!.tick = tick; return true }
        return false
    }

    /// Opens a cached chunk for reading, or nil when it is not cached.
    func open(_ id: Hash256) -> Int32? {
        guard contains(id) else { return nil }
        let fd = Glibc.open(path(id), O_RDONLY | O_CLOEXEC)
        if fd < 0 { forget(id); return nil }
        return fd
    }

    /// Registers a file already in place, then evicts beyond the budget.
    func insert(_ id: Hash256, size: UInt64) {
        lock.lock()
        tick += 1
        if let old = entries[id] { totalBytes -= old.size }
        entries[id] = (size, tick)
        totalBytes += size
        var victims: [Hash256] = []
        if totalBytes > budget {
            let sorted = entries.sorted { $0.value.tick < $1.value.tick }
            for (vid, v) in sorted where totalBytes > budget && vid != id {
                victims.append(vid)
                totalBytes -= v.size
                entries[vid] = nil
            }
        }
        lock.unlock()
        for v in victims { unlink(path(v)) }
    }

    func forget(_ id: Hash256) {
        lock.lock()
        if let old = entries.removeValue(forKey: id) { totalBytes -= old.size }
        lock.unlock()
    }

    /// Forgets a chunk and deletes its file (no file refers to it any more).
    func remove(_ id: Hash256) {
        forget(id)
        unlink(path(id))
    }

    /// Drops every clean chunk (to free disk space under pressure).
    func evictAll() {
        lock.lock()
        let all = Array(entries.keys)
        entries.removeAll()
        totalBytes = 0
        lock.unlock()
        for id in all { unlink(path(id)) }
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

    static func run<T: Sendable>(timeout: Double? = nil, _ body: @escaping @Sendable () async throws -> T) throws -> T {
        let sem = DispatchSemaphore(value: 0)
        let box = Box<T>()
        let task = Task {
            do { box.result = .success(try await body()) } catch { box.result = .failure(error) }
            sem.signal()
        }
        if let timeout {
            if sem.wait(timeout: .now() + timeout) == .timedOut {
                task.cancel()
                throw TimedOut(seconds: timeout)
            }
        } else {
            sem.wait()
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
        var description: String { "no answer from segment storage within \(Int(seconds)) s" }
    }
}
