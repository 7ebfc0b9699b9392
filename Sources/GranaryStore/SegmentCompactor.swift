import Foundation
import GRDB
import GranaryCore
import GranaryRenter
import Logging

/// Compaction and garbage collection of segments, in the background of a
/// mount (a thread of its own, beside the uploader) and on request.
///
/// A pass: (1) lists the segment store; (2) counts, per segment meta.db
/// knows, the sealed bytes of chunks some file still refers to (chunk rows,
/// clean or as the base of a dirty chunk, and the files' in-memory state),
/// recorded in `segment.live`; (3) forgets fully dead segments and deletes
/// them; (4) deletes orphans: segments the store lists that meta.db does
/// not know and no upload has in flight; (5) rewrites segments whose live
/// fraction is below the threshold: their live chunks, sealed bytes copied
/// verbatim and checked, are packed into new segments through the same
/// `SegmentStore.put`; only once a new segment is durable do the chunks'
/// locations switch, in one meta.db transaction that also forgets the old
/// segments; only after that commit is made durable are the old segments
/// deleted. A kill at any moment therefore loses no live chunk, and leaves
/// at worst orphans, which the next pass collects.
///
/// Dedupe: an upload pass may point a new file chunk at an existing chunk.
/// It does so under `referenceLock`, which the compactor holds while it
/// decides what is dead and while it commits, re-checking there that every
/// chunk still referred to in a segment it forgets was moved.
final class SegmentCompactor: @unchecked Sendable {
    private let store: GranaryStore
    let configuration: CompactionConfiguration
    private let log = Logger(label: "granary.compactor")

    /// Guards the fields below.
    private let cond = NSCondition()
    private var requested = 0
    private var started = 0
    private var finished = 0
    private var stopping = false
    private var stopped = false
    private var running = false
    private var lastReport: CompactionReport?
    private var usageCache: (at: UInt64, usage: SegmentUsage)?

    init(store: GranaryStore, configuration: CompactionConfiguration) {
        self.store = store
        self.configuration = configuration
    }

    func start() {
        let t = Thread { [self] in main() }
        t.name = "granary-compactor"
        t.start()
    }

    /// Runs a pass now (after the one running, if any) and returns its
    /// report, or nil when the store stops first or `deadline` passes.
    func compactNow(deadline: Date = .distantFuture) -> CompactionReport? {
        cond.lock(); defer { cond.unlock() }
        requested += 1
        // A pass that starts after this request; one already running may predate it.
        let target = started + 1
        cond.broadcast()
        while finished < target && !stopped && Date() < deadline { _ = cond.wait(until: min(deadline, Date().addingTimeInterval(0.5))) }
        return finished >= target ? lastReport : nil
    }

    /// Stops the background thread; a pass in progress ends at its next
    /// step (which is always safe, see the type's comment).
    func stop(deadline: Date) {
        cond.lock()
        stopping = true
        cond.broadcast()
        while running && Date() < deadline { _ = cond.wait(until: Date().addingTimeInterval(0.2)) }
        cond.unlock()
    }

    var isRunning: Bool { cond.lock(); defer { cond.unlock() }; return running }
    var report: CompactionReport? { cond.lock(); defer { cond.unlock() }; return lastReport }

    private var isStopping: Bool { cond.lock(); defer { cond.unlock() }; return stopping }

    private func main() {
        runInBackground()
        var next = Date().addingTimeInterval(configuration.firstPassDelay)
        while true {
            cond.lock()
            while !stopping && requested == 0 && (configuration.interval <= 0 || Date() < next) {
                _ = cond.wait(until: configuration.interval <= 0 ? Date().addingTimeInterval(60) : next)
            }
            if stopping { stopped = true; cond.broadcast(); cond.unlock(); return }
            requested = 0
            started += 1
            running = true
            cond.unlock()

            let report = runPass()

            cond.lock()
            running = false
            finished += 1
            lastReport = report
            usageCache = nil
            cond.broadcast()
            cond.unlock()
            next = Date().addingTimeInterval(configuration.interval)
        }
    }

    /// Waits `seconds` unless the store stops; returns false when it does.
    private func pause(_ seconds: Double) -> Bool {
        guard seconds > 0 else { return !isStopping }
        let until = Date().addingTimeInterval(seconds)
        cond.lock(); defer { cond.unlock() }
        while !stopping && Date() < until { _ = cond.wait(until: until) }
        return !stopping
    }

    // MARK: accounting

    /// One segment meta.db knows: its size and its chunks still referred to.
    struct Account {
        let id: Hash256
        let size: Int
        var live = 0
        var liveChunks: [(Hash256, BlobLocation)] = []
        var fraction: Double { size > 0 ? Double(live) / Double(size) : 0 }
    }

    /// Chunks the files' in-memory state refers to (clean, or the base of a
    /// dirty chunk), a superset of what meta.db rows may lag behind.
    private func referencedInMemory() -> Set<Hash256> {
        store.metaLock.lock()
        let files = Array(store.files.values)
        store.metaLock.unlock()
        var out = Set<Hash256>()
        for f in files {
            f.lock.lock()
            for (_, state) in f.chunks {
                switch state {
                case let .clean(id, _): out.insert(id)
                case let .dirty(d): if let b = d.base { out.insert(b) }
                }
            }
            f.lock.unlock()
        }
        return out
    }

    private static let referencedSQL = """
        EXISTS (SELECT 1 FROM chunk c WHERE c.chunk_id = b.chunk_id)
        OR EXISTS (SELECT 1 FROM chunk c WHERE c.base_id = b.chunk_id)
        """

    /// Counts live bytes per segment and records them in meta.db.
    /// Call with `referenceLock` held (or accept a snapshot that may lag).
    private func account() throws -> [Hash256: Account] {
        let memory = referencedInMemory()
        return try store.metaTransaction { db in
            var accounts: [Hash256: Account] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT id, size FROM segment") {
                guard let id = Hash256(bytes: row["id"] as Data) else { continue }
                accounts[id] = Account(id: id, size: row["size"])
            }
            let sql = "SELECT b.chunk_id, b.segment, b.offset, b.sealed_length, b.plain_length, (\(Self.referencedSQL)) AS referenced FROM blob b"
            for row in try Row.fetchAll(db, sql: sql) {
                guard let id = Hash256(bytes: row["chunk_id"] as Data), let seg = Hash256(bytes: row["segment"] as Data) else { continue }
                guard (row["referenced"] as Bool) || memory.contains(id) else { continue }
                let loc = BlobLocation(segment: seg, offset: row["offset"], sealedLength: row["sealed_length"], plainLength: row["plain_length"])
                if accounts[seg] == nil {
                    // A chunk in a segment meta.db lost: never forget where it is.
                    accounts[seg] = Account(id: seg, size: loc.offset + loc.sealedLength)
                }
                accounts[seg]!.live += loc.sealedLength
                accounts[seg]!.liveChunks.append((id, loc))
            }
            for a in accounts.values {
                try db.execute(sql: "UPDATE segment SET live = ? WHERE id = ?", arguments: [a.live, Data(a.id.bytes)])
            }
            return accounts
        }
    }

    /// Drops the cached usage (a segment was recorded or a file released).
    func invalidateUsage() { cond.lock(); usageCache = nil; cond.unlock() }

    /// Segments, stored and live bytes (from meta.db's rows; cached briefly).
    func usage() -> SegmentUsage {
        let now = monotonicNanos()
        cond.lock()
        if let c = usageCache, now - c.at < 2_000_000_000 { cond.unlock(); return c.usage }
        cond.unlock()
        var u = SegmentUsage()
        do {
            try store.db.read { db in
                if let row = try Row.fetchOne(db, sql: "SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM segment") {
                    u.segments = row["n"]
                    u.storedBytes = UInt64(row["bytes"] as Int64)
                }
                let live = try Int64.fetchOne(db, sql: "SELECT COALESCE(SUM(b.sealed_length), 0) FROM blob b WHERE \(Self.referencedSQL)") ?? 0
                u.liveBytes = UInt64(live)
            }
        } catch {
            log.error("meta.db: cannot count segment usage: \(error)")
        }
        cond.lock(); usageCache = (now, u); cond.unlock()
        return u
    }

    // MARK: the pass

    private func runPass() -> CompactionReport {
        let t0 = monotonicNanos()
        var report = CompactionReport()
        pass(&report)
        report.seconds = Double(monotonicNanos() - t0) / 1e9
        return report
    }

    private func pass(_ report: inout CompactionReport) {
        let segments = store.segments
        let log = self.log
        func fail(_ text: String, _ report: inout CompactionReport) {
            log.error("\(text)")
            report.errors.append(text)
        }

        // Listed first: anything listed was put before now, so it is either
        // in meta.db by the time meta.db is read below, or in flight, or an orphan.
        var listed: [Hash256]?
        do { listed = try Blocking.run(timeout: 300) { try await segments.list() } } catch {
            fail("cannot list segments, orphans are collected next time: \(error)", &report)
        }

        // Account, and forget fully dead segments, under the reference lock.
        let accounts: [Hash256: Account]
        var dead: [Hash256] = []
        store.referenceLock.lock()
        do {
            accounts = try account()
            dead = accounts.values.filter { $0.live == 0 }.map(\.id)
            if !dead.isEmpty { try forget(dead, moved: [], newSegment: nil) }
        } catch {
            store.referenceLock.unlock()
            fail("meta.db: cannot account segments: \(error)", &report)
            return
        }
        store.referenceLock.unlock()
        report.segmentsBefore = accounts.count
        report.storedBytesBefore = accounts.values.reduce(0) { $0 + UInt64($1.size) }
        report.liveBytes = accounts.values.reduce(0) { $0 + UInt64($1.live) }
        for id in dead {
            if deleteFromStore(id, &report) { report.deadSegmentsDeleted += 1 }
        }

        // Orphans: in-flight set read before meta.db (an upload leaves the
        // set only after its commit).
        if let listed {
            let inFlight = store.inFlight.snapshot()
            let known: Set<Hash256>
            do {
                // A segment a chunk names is never an orphan, recorded or not.
                known = Set(try store.db.read { db in
                    try Data.fetchAll(db, sql: "SELECT id FROM segment UNION SELECT DISTINCT segment FROM blob")
                }.compactMap { Hash256(bytes: $0) })
            } catch {
                fail("meta.db: cannot read segments: \(error)", &report)
                return
            }
            let deadSet = Set(dead)
            for id in listed where !known.contains(id) && !inFlight.contains(id) && !deadSet.contains(id) {
                if isStopping { return }
                if deleteFromStore(id, &report) {
                    report.orphansDeleted += 1
                    log.notice("deleted orphan segment \(id.short) (stored, but unknown to meta.db)")
                }
            }
        }

        // Rewrites: lowest live fraction first, grouped so each group's
        // live chunks fill at most one new segment.
        let candidates = accounts.values
            .filter { $0.live > 0 && $0.fraction < configuration.threshold && !dead.contains($0.id) }
            .sorted { $0.fraction < $1.fraction }
        var groups: [[Account]] = []
        var current: [Account] = [], currentBytes = 0
        for a in candidates {
            if currentBytes + a.live > store.maxSegmentSize && !current.isEmpty {
                groups.append(current); current = []; currentBytes = 0
            }
            current.append(a); currentBytes += a.live
        }
        if !current.isEmpty { groups.append(current) }
        var limiter = ByteRateLimiter(bytesPerSecond: configuration.bytesPerSecond)
        for group in groups {
            if isStopping { break }
            rewrite(group, limiter: &limiter, report: &report)
        }

        if let after = try? store.db.read({ db in try Row.fetchOne(db, sql: "SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM segment") }) {
            report.segmentsAfter = after["n"]
            report.storedBytesAfter = UInt64(after["bytes"] as Int64)
        }
        if report.segmentsRewritten + report.deadSegmentsDeleted + report.orphansDeleted > 0 {
            log.notice("compaction: \(report.segmentsRewritten) segments rewritten into \(report.segmentsWritten), \(report.deadSegmentsDeleted) dead and \(report.orphansDeleted) orphan segments deleted, \(report.bytesCopied) bytes copied; \(report.storedBytesBefore) -> \(report.storedBytesAfter) bytes stored")
        }
    }

    /// Deletes a segment meta.db no longer names; returns whether it went.
    private func deleteFromStore(_ id: Hash256, _ report: inout CompactionReport) -> Bool {
        let segments = store.segments
        do {
            try Blocking.run(timeout: 300) { try await segments.delete(id) }
            return true
        } catch {
            let text = "cannot delete segment \(id.short), retried next pass: \(error)"
            log.error("\(text)")
            report.errors.append(text)
            return false
        }
    }

    /// Copies the live chunks of `group` into one new segment, switches
    /// their locations, then deletes the old segments.
    private func rewrite(_ group: [Account], limiter: inout ByteRateLimiter, report: inout CompactionReport) {
        let segments = store.segments
        let newID = Hash256.random()
        var bytes: [UInt8] = []
        bytes.reserveCapacity(group.reduce(0) { $0 + $1.live })
        var moved: [(id: Hash256, from: BlobLocation, to: BlobLocation)] = []
        for a in group {
            for (id, loc) in a.liveChunks.sorted(by: { $0.1.offset < $1.1.offset }) {
                guard pause(limiter.take(loc.sealedLength)) else { return }
                let sealed: [UInt8]
                do {
                    sealed = try Blocking.run(timeout: max(60, store.config.readTimeout), progress: { segments.bytesReceived }) {
                        try await segments.read(loc.segment, offset: loc.offset, length: loc.sealedLength)
                    }
                    // Never copy damage: the chunk must open with its key.
                    _ = try store.sealer.open(sealed, chunkID: id)
                } catch {
                    let text = "compaction skips segment \(a.id.short): chunk \(id.short) unreadable: \(error)"
                    log.error("\(text)")
                    report.errors.append(text)
                    return
                }
                moved.append((id, loc, BlobLocation(segment: newID, offset: bytes.count, sealedLength: sealed.count, plainLength: loc.plainLength)))
                bytes += sealed
            }
        }
        guard pause(limiter.take(bytes.count)) else { return }
        store.inFlight.insert(newID)
        defer { store.inFlight.remove(newID) }
        do {
            let payload = bytes
            try Blocking.run(timeout: 600) { try await segments.put(newID, bytes: payload) }
        } catch {
            // Whatever landed is an orphan the next pass collects.
            let text = "compaction: cannot store the rewritten segment, old segments kept: \(error)"
            log.error("\(text)")
            report.errors.append(text)
            return
        }

        // The new segment is durable: switch locations and forget the old
        // segments, unless a chunk in one of them came back to life (dedupe)
        // after the accounting and was not copied; that one waits.
        store.referenceLock.lock()
        let finished: [Hash256]
        do {
            let movedIDs = Set(moved.map(\.id))
            let memory = referencedInMemory()
            finished = try store.db.read { db in
                try group.map(\.id).filter { seg in
                    let sql = "SELECT b.chunk_id, (\(Self.referencedSQL)) AS referenced FROM blob b WHERE b.segment = ?"
                    return try Row.fetchAll(db, sql: sql, arguments: [Data(seg.bytes)]).allSatisfy { row in
                        guard let id = Hash256(bytes: row["chunk_id"] as Data) else { return true }
                        return movedIDs.contains(id) || !((row["referenced"] as Bool) || memory.contains(id))
                    }
                }
            }
            try forget(finished, moved: moved, newSegment: (newID, bytes.count))
        } catch {
            store.referenceLock.unlock()
            let text = "meta.db: cannot record the rewritten segment \(newID.short), old segments kept: \(error)"
            log.error("\(text)")
            report.errors.append(text)
            return
        }
        store.referenceLock.unlock()
        report.segmentsWritten += 1
        report.segmentsRewritten += finished.count
        report.bytesCopied += UInt64(bytes.count)
        for id in finished { _ = deleteFromStore(id, &report) }
    }

    /// In one transaction: records `newSegment`, moves chunks there, and
    /// forgets the segments `gone` with their remaining (dead) chunks; then
    /// mirrors that in memory and makes it durable. referenceLock held.
    private func forget(_ gone: [Hash256], moved: [(id: Hash256, from: BlobLocation, to: BlobLocation)], newSegment: (Hash256, Int)?) throws {
        var deadChunks: [Hash256] = []
        try store.metaTransaction { db in
            if let n = newSegment {
                try db.execute(sql: "INSERT INTO segment (id, size, created, live) VALUES (?, ?, ?, ?)",
                               arguments: [Data(n.0.bytes), n.1, wallClockNanos(), n.1])
            }
            for m in moved {
                try db.execute(sql: "UPDATE blob SET segment = ?, offset = ? WHERE chunk_id = ? AND segment = ?",
                               arguments: [Data(m.to.segment.bytes), m.to.offset, Data(m.id.bytes), Data(m.from.segment.bytes)])
            }
            for seg in gone {
                deadChunks += try Data.fetchAll(db, sql: "SELECT chunk_id FROM blob WHERE segment = ?", arguments: [Data(seg.bytes)]).compactMap { Hash256(bytes: $0) }
                try db.execute(sql: "DELETE FROM blob WHERE segment = ?", arguments: [Data(seg.bytes)])
                try db.execute(sql: "DELETE FROM segment WHERE id = ?", arguments: [Data(seg.bytes)])
            }
            let copied = newSegment.map { UInt64($0.1) } ?? 0
            try db.execute(sql: "INSERT INTO counter (name, value) VALUES ('compacted_bytes', ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                           arguments: [Int64(copied)])
            try db.execute(sql: "INSERT INTO counter (name, value) VALUES ('segments_deleted', ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                           arguments: [gone.count])
        }
        store.blobLock.lock()
        for m in moved where store.blobs[m.id]?.segment == m.from.segment { store.blobs[m.id] = m.to }
        for id in deadChunks { store.blobs[id] = nil }
        store.blobLock.unlock()
        // No file refers to these: their cached copies only take cache space.
        for id in deadChunks { store.cleanCache.remove(id) }
        invalidateUsage()
        // Durable before any old segment is deleted (power loss included).
        store.syncDatabase()
    }

    /// Totals over every pass this meta.db has seen.
    func totals() -> (compactedBytes: UInt64, segmentsDeleted: Int) {
        let rows = (try? store.db.read { db in
            try Row.fetchAll(db, sql: "SELECT name, value FROM counter WHERE name IN ('compacted_bytes', 'segments_deleted')")
        }) ?? []
        var bytes: UInt64 = 0, deleted = 0
        for r in rows {
            let v: Int64 = r["value"]
            if (r["name"] as String) == "compacted_bytes" { bytes = UInt64(max(0, v)) } else { deleted = Int(v) }
        }
        return (bytes, deleted)
    }
}
