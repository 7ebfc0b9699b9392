import Foundation
import GranaryCore
import Logging
import Synchronization

/// The `SegmentStore` over farmers: a segment is erasure coded into n
/// pieces (k/r/s/n, systematic), placed on n distinct farmers, durable once
/// s are confirmed; reads fetch piece ranges verified against their roots
/// and decode only when a data piece is missing.
public final class NetworkSegmentStore: SegmentStore {
    let db: NetworkDatabase
    let book: FarmerBook
    let link: FarmerLink
    let config: RenterConfiguration
    let random: RandomSource
    public let progress = UploadProgress()
    let joinGate = JoinGate()
    /// Seconds spent per stage (erasure coding, hashing, transfers, decoding).
    public let timings = StageTimings()
    private let log = Logger(label: "granary.renter")

    init(db: NetworkDatabase, book: FarmerBook, link: FarmerLink, config: RenterConfiguration, random: RandomSource) {
        self.db = db; self.book = book; self.link = link; self.config = config; self.random = random
    }

    /// Whole-transfer deadline for `bytes` to or from `farmer`: base plus
    /// size at the minimum rate, times the farmer's slow-link factor. A
    /// stalled transfer fails sooner, in the link (no byte moved for the base).
    func transferTimeout(bytes: Int, farmer: Hash256) -> Double {
        baseTransferTimeout(bytes: bytes) * slowLinks.withLock { $0[farmer] ?? 1 }
    }

    func baseTransferTimeout(bytes: Int) -> Double {
        config.transferTimeoutBase + Double(bytes) / config.minimumTransferRate
    }

    /// Farmers whose transfers ran past their whole deadline (moving, but
    /// below the minimum rate) get twice as long next time, up to 8 times;
    /// one transfer done within half the base deadline clears that. With
    /// only seven farmers beside a slow one, each upload of a segment
    /// would otherwise fail the same way, forever.
    private let slowLinks = Mutex<[Hash256: Double]>([:])

    func noteTransfer(_ farmer: Hash256, seconds: Double, bytes: Int, timedOut: Bool) {
        slowLinks.withLock { factors in
            if timedOut {
                factors[farmer] = min(8, (factors[farmer] ?? 1) * 2)
            } else if seconds < baseTransferTimeout(bytes: bytes) / 2 {
                factors[farmer] = nil
            }
        }
    }

    /// Throughput of recent piece reads of 256 KiB or more, in bytes per
    /// second (a moving average; smaller reads measure round trips). A read
    /// widens only after twice the time a read at that rate takes: on a
    /// slow downlink every read ran past the fixed hedge delay and widened
    /// to k pieces, k times the bytes over the same slow link (a cold read
    /// of 32 MB with farmers sending at 1 Mbit/s took 162 s).
    private let readRate = Mutex<Double?>(nil)
    /// Piece reads running, across all reads: they share the downlink.
    private let readsInFlight = Atomic<Int>(0)

    /// A first estimate before any read finished: the bytes the link
    /// received while a read waited, shared among the reads running.
    func seedReadRate(received: UInt64, seconds: Double) {
        guard received > 0, seconds > 0 else { return }
        let rate = Double(received) / seconds / Double(max(1, readsInFlight.load(ordering: .relaxed)))
        readRate.withLock { if $0 == nil { $0 = rate } }
    }

    func noteRead(bytes: Int, seconds: Double) {
        guard bytes >= 256 << 10, seconds > 0 else { return }
        let rate = Double(bytes) / seconds
        readRate.withLock { $0 = $0.map { 0.7 * $0 + 0.3 * rate } ?? rate }
    }

    /// How long a read of `bytes` waits for the pieces it asked before it
    /// widens: the configured base and rate, or twice a read at the recent
    /// rate when that is slower.
    func readHedgeDelay(bytes: Int) -> Double {
        let recent = readRate.withLock { $0 } ?? .infinity
        return config.readHedgeBase + Double(bytes) / min(config.readHedgeRate, recent / 2)
    }

    public var bytesReceived: UInt64 { link.bytesReceived }

    // MARK: placement

    /// A farmer and the contract a piece would be stored under.
    struct Placement: Sendable {
        var contract: ContractRecord
        var farmer: Hash256 { contract.farmer.id }
    }

    /// Farmers able to take a piece of `pieceSize` bytes, best first: healthy,
    /// live contract with free allowance, ranked by reputation × uptime ×
    /// latency × free fraction, with a random factor so load spreads.
    func placements(pieceSize: Int, excluding: Set<Hash256>) throws -> [Placement] {
        let now = Date()
        var best: [Hash256: (Placement, Double)] = [:]
        for c in try db.contracts() {
            let f = c.record.farmer.id
            guard !excluding.contains(f), c.record.end > now.addingTimeInterval(60), c.free >= Int64(pieceSize),
                  !book.isDisqualified(f), !book.isRecentlyFailed(f) else { continue }
            let freeFraction = c.record.allowance > 0 ? Double(c.free) / Double(c.record.allowance) : 0
            let weight = book.rank(f) * (0.5 + 0.5 * freeFraction) * (0.7 + 0.6 * random.unit())
            if let existing = best[f], existing.1 >= weight { continue }
            best[f] = (Placement(contract: c.record), weight)
        }
        return best.values.sorted { $0.1 > $1.1 }.map(\.0)
    }

    /// Why farmers under contract cannot take a piece, counted per farmer,
    /// for the error an upload waits on: a person needs to know whether
    /// the pool is still forming, farmers are down, or they are full.
    func shortfall(pieceSize: Int) throws -> String {
        let soon = Date().addingTimeInterval(60)
        var farmers: [Hash256: Unusable] = [:]  // the best reason each cannot take it
        for c in try db.contracts() {
            let f = c.record.farmer.id
            let reason: Unusable = book.isDisqualified(f) ? .disqualified
                : book.isRecentlyFailed(f) ? .unreachable
                : c.record.end <= soon ? .ending
                : c.free < Int64(pieceSize) ? .full : .usable
            if let seen = farmers[f], seen <= reason { continue }
            farmers[f] = reason
        }
        if farmers.isEmpty { return "no contracts yet: the pool is still forming (farmers answer offers published in the DHT)" }
        let counts = Dictionary(grouping: farmers.values, by: { $0 }).mapValues(\.count)
        let parts = [Unusable.unreachable, .full, .ending, .disqualified].compactMap { r in
            counts[r].map { "\($0) \(r.phrase)" }
        }
        return "of \(farmers.count) farmers under contract, " + (parts.isEmpty ? "all are usable" : parts.joined(separator: ", "))
    }

    /// Why a contracted farmer cannot take a piece, best first: a farmer
    /// with several contracts counts under its best one.
    enum Unusable: Int, Comparable {
        case usable, full, ending, unreachable, disqualified

        static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

        var phrase: String {
            switch self {
            case .usable: "are usable"
            case .full: "have no allowance left"
            case .ending: "have contracts ending"
            case .unreachable: "recently failed to answer"
            case .disqualified: "are disqualified by audits"
            }
        }
    }

    // MARK: put

    public func put(_ id: SegmentID, bytes: [UInt8]) async throws {
        guard bytes.count <= Self.maxSegmentSize else { throw SegmentStoreError.tooLarge(size: bytes.count, limit: Self.maxSegmentSize) }
        try joinGate.check()
        let scheme = config.scheme
        if let existing = try db.segment(id), existing.state == .durable, existing.length == bytes.count { return }
        try db.beginUpload(id, length: bytes.count, scheme: scheme)
        let pieceSize = scheme.pieceSize(segmentLength: bytes.count)
        guard pieceSize > 0 else {
            try db.markDurable(id, required: 0)
            return
        }
        var durable = false
        progress.begin(id, total: Int64(scheme.s * pieceSize))
        defer { progress.end(id, durableBytes: durable ? Int64(bytes.count) : nil) }
        do {
            // Before coding: while the pool is still forming, fail cheaply (the uploader retries).
            let candidates = try placements(pieceSize: pieceSize, excluding: [])
            guard candidates.count >= scheme.s else {
                throw SegmentStoreError.unavailable("\(candidates.count) farmers can take a piece of \(pieceSize) bytes, \(scheme.s) are needed (scheme \(scheme)); \(try shortfall(pieceSize: pieceSize)); uploads wait and retry")
            }
            // Pieces are made by the tasks that upload them (slice or parity,
            // then Merkle root), so coding and hashing overlap the transfers.
            let source = PieceSource(segment: bytes, scheme: scheme, timings: timings)
            let t0 = DispatchTime.now().uptimeNanoseconds
            let stored = try await uploadPieces(segment: id, pieces: source.piece, pieceSize: pieceSize,
                                                indexes: Array(0..<scheme.n), needed: scheme.s, candidates: candidates)
            timings.add("upload_network_sum", Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
            try db.releasePieces(of: id, keeping: Set(stored.map(\.pieceID)))
            guard try db.markDurable(id, required: scheme.s) else {
                throw SegmentStoreError.unavailable("segment \(id.short) has fewer than \(scheme.s) confirmed pieces")
            }
            durable = true
            log.debug("segment \(id.short) durable: \(bytes.count) bytes on \(stored.map(\.farmer.short))")
        } catch {
            try? db.beginDelete(id)
            Task { await self.releasePendingPieces() }
            throw error
        }
        Task { await self.releasePendingPieces() }
    }

    struct Coded: Sendable {
        var pieces: [[UInt8]]
        var roots: [Hash256]
    }

    /// A piece and its Merkle root, made on demand by the task that uploads it.
    typealias PieceMaker = @Sendable (Int) async -> (bytes: ArraySlice<UInt8>, root: Hash256)

    func uploadPieces(segment: SegmentID, coded: Coded, pieceSize: Int, indexes: [Int], needed: Int,
                      candidates: [Placement]) async throws -> [PieceRow] {
        try await uploadPieces(segment: segment, pieces: { (coded.pieces[$0][...], coded.roots[$0]) }, pieceSize: pieceSize,
                               indexes: indexes, needed: needed, candidates: candidates)
    }

    /// Hands out spare farmers to piece uploads whose farmer failed.
    actor SparePool {
        private var spares: [Placement]
        init(_ spares: [Placement]) { self.spares = spares }
        func next() -> Placement? { spares.isEmpty ? nil : spares.removeFirst() }
    }

    enum PieceOutcome: Sendable {
        case stored(PieceRow)
        case failed(String)
    }

    /// Uploads the pieces `indexes`, one per distinct farmer, and returns
    /// once `needed` are confirmed, cancelling the rest (long tail). The
    /// first `needed` start at once; the others are held back and start
    /// only when the upload is slow (a hedge delay passes, as for reads) or
    /// a piece fails with no spare farmer left, so on a healthy network the
    /// n − s extra pieces cost neither bytes on the wire, nor farmers' disk
    /// and hashing, nor their Merkle roots here. A farmer that fails or times
    /// out is replaced by a spare.
    func uploadPieces(segment: SegmentID, pieces: @escaping PieceMaker, pieceSize: Int, indexes: [Int], needed: Int,
                      candidates: [Placement]) async throws -> [PieceRow] {
        let slots = Array(zip(indexes, candidates))
        let spares = SparePool(Array(candidates.dropFirst(slots.count)))
        let hedgeDelay = config.uploadHedgeBase + Double(pieceSize) / config.uploadHedgeRate
        var stored: [PieceRow] = []
        var failures: [String] = []
        enum Event: Sendable { case piece(PieceOutcome), hedge }
        await withTaskGroup(of: Event.self) { group in
            var launched = 0
            func launch(upTo count: Int) {
                while launched < min(count, slots.count) {
                    let (index, initial) = slots[launched]
                    launched += 1
                    group.addTask {
                        let (bytes, root) = await pieces(index)
                        return .piece(await self.uploadPiece(segment: segment, index: index, bytes: bytes, root: root,
                                                             first: initial, spares: spares))
                    }
                }
            }
            launch(upTo: needed)
            if launched < slots.count {
                group.addTask {
                    try? await Task.sleep(nanoseconds: UInt64(hedgeDelay * 1e9))
                    return .hedge
                }
            }
            while stored.count < needed, stored.count + failures.count < launched, let event = await group.next() {
                switch event {
                case .hedge:
                    if stored.count < needed { log.debug("segment \(segment.short): upload slow after \(hedgeDelay) s, starting the held-back pieces") }
                    launch(upTo: slots.count)
                case let .piece(.stored(row)):
                    stored.append(row)
                    progress.add(segment, Int64(pieceSize))
                case let .piece(.failed(why)):
                    failures.append(why)
                    launch(upTo: launched + 1)
                }
            }
            group.cancelAll()
        }
        guard stored.count >= needed else {
            throw SegmentStoreError.unavailable("only \(stored.count) of \(needed) pieces of segment \(segment.short) could be stored: \(failures.prefix(3).joined(separator: "; "))")
        }
        return Array(stored.prefix(needed))
    }

    func uploadPiece(segment: SegmentID, index: Int, bytes: ArraySlice<UInt8>, root: Hash256, first: Placement,
                     spares: SparePool) async -> PieceOutcome {
        var placement: Placement? = first
        var lastError = "no farmer left"
        while let p = placement {
            if Task.isCancelled { return .failed("cancelled") }
            let row = PieceRow(pieceID: .random(), segment: segment, index: index, farmer: p.farmer, contract: p.contract.id,
                               root: root, size: bytes.count, state: .uploading)
            do {
                try db.addPiece(row)
            } catch {
                return .failed("database: \(error)")
            }
            let started = DispatchTime.now().uptimeNanoseconds
            do {
                let link = self.link
                let contract = p.contract
                try await withDeadline(transferTimeout(bytes: bytes.count, farmer: p.farmer)) {
                    try await link.store(pieceID: row.pieceID, root: root, bytes: bytes, contract: contract)
                }
                let ms = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6
                noteTransfer(p.farmer, seconds: ms / 1000, bytes: bytes.count, timedOut: false)
                book.recordContact(p.farmer, reached: true, latencyMs: ms / max(1, Double(bytes.count) / Double(1 << 20)))
                var done = row
                done.state = .stored
                do { try db.setPieceState(row.pieceID, .stored) } catch { return .failed("database: \(error)") }
                return .stored(done)
            } catch {
                try? db.setPieceState(row.pieceID, .deleting)
                if error is CancellationError || Task.isCancelled { return .failed("cancelled") }
                lastError = "\(p.contract.farmer): \(error)"
                log.info("piece \(index) of segment \(segment.short) failed on \(p.contract.farmer): \(error); trying another farmer")
                book.recordContact(p.farmer, reached: !(error is DeadlineExceeded || error.isUnreachable))
                if error is DeadlineExceeded {
                    noteTransfer(p.farmer, seconds: 0, bytes: bytes.count, timedOut: true)
                    await link.reset(farmer: p.farmer)
                }
                placement = await spares.next()
            }
        }
        return .failed(lastError)
    }

    // MARK: read

    public func read(_ id: SegmentID, offset: Int, length: Int) async throws -> [UInt8] {
        guard let seg = try db.segment(id), seg.state == .durable else { throw SegmentStoreError.notFound(id) }
        guard offset >= 0, length >= 0, offset <= seg.length, length <= seg.length - offset else {
            throw SegmentStoreError.io("read of \(length) bytes at \(offset) is outside segment \(id.short) of \(seg.length) bytes")
        }
        if length == 0 { return [] }
        let pieceSize = seg.scheme.pieceSize(segmentLength: seg.length)
        let first = offset / pieceSize, last = (offset + length - 1) / pieceSize
        if first == last { return try await readWithinPiece(seg, offset: offset, length: length) }
        // A range across data pieces is read as one part per piece, each at
        // its own offsets: when the data pieces answer, that is exactly the
        // requested bytes (one range for all pieces would be a whole piece
        // width of each, for decoding); a part whose piece is missing or slow
        // decodes from k pieces of that part only.
        let parts = (first...last).map { d in
            let start = max(offset, d * pieceSize), end = min(offset + length, (d + 1) * pieceSize)
            return (start, end - start)
        }
        let bytes = try await withThrowingTaskGroup(of: (Int, [UInt8]).self) { group in
            for (i, part) in parts.enumerated() {
                group.addTask { (i, try await self.readWithinPiece(seg, offset: part.0, length: part.1)) }
            }
            var out = [[UInt8]](repeating: [], count: parts.count)
            for try await (i, b) in group { out[i] = b }
            return out
        }
        var out = [UInt8]()
        out.reserveCapacity(length)
        for b in bytes { out.append(contentsOf: b) }
        return out
    }

    /// Reads bytes that lie inside one data piece: from that piece alone
    /// when it answers, else decoded from the same range of k pieces.
    func readWithinPiece(_ seg: SegmentRow, offset: Int, length: Int) async throws -> [UInt8] {
        let scheme = seg.scheme
        let coder = ErasureCoder(scheme: scheme)
        let pieceSize = scheme.pieceSize(segmentLength: seg.length)
        let range = try coder.pieceRange(segmentLength: seg.length, offset: offset, length: length)
        let d = offset / pieceSize
        let t0 = DispatchTime.now().uptimeNanoseconds
        let fetched = try await fetchRanges(segment: seg, range: range, pieceSize: pieceSize, needed: [d])
        timings.add("download_network_sum", Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        // The data piece arrived: its range is the requested bytes, no decoding.
        if let bytes = fetched[d], bytes.count == length { return bytes }
        return try timings.measure("decode") {
            try coder.decodeRange(fetched, pieceRange: range, segmentLength: seg.length, offset: offset, length: length)
        }
    }

    /// Fetches `range` of enough pieces to serve a read. When every data
    /// piece the range covers sits on a healthy farmer, only those are asked
    /// (no decoding, no extra bandwidth); if they have not all arrived
    /// within a hedge delay, or one fails, the read widens to the k best
    /// pieces plus one spare request against the long tail, and decodes.
    /// When a covering data piece is unhealthy it starts with k + 1.
    /// A failed request is replaced by the next best piece. Done when every
    /// needed data piece, or any k pieces, arrived.
    func fetchRanges(segment seg: SegmentRow, range: Range<Int>, pieceSize: Int, needed: Set<Int>) async throws -> [Int: [UInt8]] {
        let k = seg.scheme.k
        var byIndex: [Int: PieceRow] = [:]
        for p in try db.pieces(of: seg.id) where p.state == .stored && !book.isDisqualified(p.farmer) {
            if let other = byIndex[p.index], book.rank(other.farmer) >= book.rank(p.farmer) { continue }
            byIndex[p.index] = p
        }
        guard byIndex.count >= k || needed.allSatisfy({ byIndex[$0] != nil }) else {
            throw SegmentStoreError.unavailable("segment \(seg.id.short) has \(byIndex.count) pieces on usable farmers, \(k) are needed")
        }
        // Going around a slow data piece pays only when k others are not
        // slow: when all are (a slow downlink), widening multiplies the
        // bytes over the same link and every read gets slower.
        let othersFaster = byIndex.values.filter { !book.isSlow($0.farmer) && !book.isFailing($0.farmer) }.count >= k
        let dataFirst = !needed.isEmpty && needed.allSatisfy {
            byIndex[$0].map { !book.isFailing($0.farmer) && !(othersFaster && book.isSlow($0.farmer)) } ?? false
        }
        var order = byIndex.values.sorted { a, b in
            let ra = book.rank(a.farmer), rb = book.rank(b.farmer)
            return ra != rb ? ra > rb : a.index < b.index
        }
        if dataFirst {
            order = order.filter { needed.contains($0.index) } + order.filter { !needed.contains($0.index) }
        }
        let contracts = Dictionary(try db.contracts(activeOnly: false).map { ($0.record.id, $0.record) }, uniquingKeysWith: { a, _ in a })
        var hedgeDelay = readHedgeDelay(bytes: range.count)
        let readStarted = DispatchTime.now().uptimeNanoseconds
        let receivedBefore = link.bytesReceived
        var results: [Int: [UInt8]] = [:]
        var errors: [String] = []
        var next = 0
        func done() -> Bool { (!needed.isEmpty && needed.allSatisfy { results[$0] != nil }) || results.count >= k }
        enum Event: Sendable { case piece(PieceRow, Result<[UInt8], Error>), hedge }
        /// Requests not yet answered: farmer and start time.
        var inFlight: [Hash256: (farmer: Hash256, started: UInt64)] = [:]
        await withTaskGroup(of: Event.self) { group in
            func launch() -> Bool {
                while next < order.count {
                    let p = order[next]; next += 1
                    guard let contract = contracts[p.contract] else { continue }
                    let link = self.link
                    inFlight[p.pieceID] = (p.farmer, DispatchTime.now().uptimeNanoseconds)
                    group.addTask {
                        let started = DispatchTime.now().uptimeNanoseconds
                        self.readsInFlight.add(1, ordering: .relaxed)
                        defer { self.readsInFlight.subtract(1, ordering: .relaxed) }
                        do {
                            let bytes = try await withDeadline(self.transferTimeout(bytes: range.count, farmer: p.farmer)) {
                                try await link.read(pieceID: p.pieceID, root: p.root, pieceSize: pieceSize, range: range, contract: contract)
                            }
                            guard bytes.count == range.count else { throw FarmerLinkError.badProof("\(bytes.count) bytes for a range of \(range.count)") }
                            let ms = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6
                            self.book.recordContact(p.farmer, reached: true, latencyMs: ms)
                            self.noteTransfer(p.farmer, seconds: ms / 1000, bytes: range.count, timedOut: false)
                            self.noteRead(bytes: range.count, seconds: ms / 1000)
                            return .piece(p, .success(bytes))
                        } catch {
                            return .piece(p, .failure(error))
                        }
                    }
                    return true
                }
                return false
            }
            var outstanding = 0
            var needK = !dataFirst
            var spares = 1
            /// Requests in flight cover what is still missing (plus the spares once widened).
            func topUp() {
                let want = needK ? k - results.count + spares : needed.filter { results[$0] == nil }.count
                while outstanding < want, launch() { outstanding += 1 }
            }
            func armHedge(after seconds: Double) {
                group.addTask {
                    try? await Task.sleep(nanoseconds: UInt64(max(0, seconds) * 1e9))
                    return .hedge
                }
            }
            topUp()
            armHedge(after: hedgeDelay)
            while outstanding > 0, let event = await group.next() {
                switch event {
                case .hedge:
                    // Before the first read finished, what arrived meanwhile
                    // tells the rate; a read still within twice its time at
                    // that rate is slow like every other, not stuck.
                    let waited = Double(DispatchTime.now().uptimeNanoseconds - readStarted) / 1e9
                    if !needK {
                        seedReadRate(received: link.bytesReceived &- receivedBefore, seconds: waited)
                        hedgeDelay = readHedgeDelay(bytes: range.count)
                        if waited < hedgeDelay {
                            armHedge(after: hedgeDelay - waited)
                            continue
                        }
                    }
                    // First widen to k pieces; then, at every further hedge
                    // delay, one more spare: with three of eight farmers on a
                    // 2 Mbit/s link, k + 1 requests often held two of them, and
                    // a cold read of 32 MB took 17 s waiting on their pieces.
                    if needK { spares += 1 } else { needK = true }
                    if next < order.count { armHedge(after: hedgeDelay) }
                case let .piece(p, .success(bytes)):
                    outstanding -= 1
                    inFlight[p.pieceID] = nil
                    results[p.index] = bytes
                case let .piece(p, .failure(error)):
                    outstanding -= 1
                    inFlight[p.pieceID] = nil
                    if !(error is CancellationError) {
                        errors.append("piece \(p.index) on \(p.farmer.short): \(error)")
                        log.info("read of piece \(p.index) of segment \(seg.id.short) failed on \(p.farmer.short): \(error)")
                        book.recordContact(p.farmer, reached: !(error is DeadlineExceeded || error.isUnreachable))
                        if error is DeadlineExceeded {
                            noteTransfer(p.farmer, seconds: 0, bytes: range.count, timedOut: true)
                            await link.reset(farmer: p.farmer)
                        }
                    }
                    needK = true
                }
                if done() { break }
                topUp()
            }
            group.cancelAll()
        }
        // Requests the read finished without, after waiting past the hedge
        // delay for them: their farmers are slow, and the next reads should
        // not wait for them again (cancelled requests record nothing).
        let now = DispatchTime.now().uptimeNanoseconds
        for (farmer, started) in inFlight.values {
            let waitedMs = Double(now - started) / 1e6
            if waitedMs >= hedgeDelay * 1000 { book.recordSlow(farmer, waitedMs: waitedMs) }
        }
        guard done() else {
            throw SegmentStoreError.unavailable("segment \(seg.id.short): only \(results.count) of \(k) pieces could be read: \(errors.prefix(4).joined(separator: "; "))")
        }
        return results
    }

    // MARK: delete and list

    public func delete(_ id: SegmentID) async throws {
        try joinGate.check()
        guard try db.segment(id) != nil else { return }
        try db.beginDelete(id)
        await releasePendingPieces(segment: id)
        try db.purgeDeletedSegments()
    }

    public func list() async throws -> [SegmentID] { try db.durableSegmentIDs() }

    /// The active contracts' allowance, in segment bytes: each segment
    /// costs n/k times its size in pieces. Nil while no contract exists,
    /// so statfs falls back to the cache disk rather than reporting zero.
    public func capacity() -> SegmentCapacity? {
        guard let rows = try? db.contracts(), !rows.isEmpty else { return nil }
        let scheme = config.scheme
        let allowance = rows.reduce(Int64(0)) { $0 + max(0, $1.record.allowance) }
        let used = rows.reduce(Int64(0)) { $0 + max(0, $1.used) }
        func data(_ pieceBytes: Int64) -> UInt64 { UInt64(pieceBytes) / UInt64(scheme.n) * UInt64(scheme.k) }
        return SegmentCapacity(total: data(allowance), used: data(used))
    }

    /// Deletes pieces marked for release on their farmers. A piece whose
    /// farmer is disqualified or whose contract is gone is simply forgotten
    /// (the farmer drops it at contract end); others are retried later.
    func releasePendingPieces(segment: SegmentID? = nil) async {
        guard var rows = try? db.pieces(state: .deleting) else { return }
        if let segment { rows = rows.filter { $0.segment == segment } }
        guard !rows.isEmpty, let contracts = try? db.contracts(activeOnly: false) else { return }
        let byID = Dictionary(contracts.map { ($0.record.id, $0) }, uniquingKeysWith: { a, _ in a })
        let timeout = config.requestTimeout
        await withTaskGroup(of: Void.self) { group in
            for row in rows {
                group.addTask {
                    guard let c = byID[row.contract], c.state == "active", !self.book.isDisqualified(row.farmer),
                          !self.book.isOffline(row.farmer) else {
                        try? self.db.removePiece(row.pieceID)
                        return
                    }
                    do {
                        let link = self.link
                        try await withDeadline(timeout) { try await link.delete(pieceID: row.pieceID, contract: c.record) }
                        try? self.db.removePiece(row.pieceID)
                    } catch FarmerLinkError.pieceNotFound {
                        try? self.db.removePiece(row.pieceID)
                    } catch {
                        self.log.debug("delete of piece \(row.pieceID.short) on \(row.farmer.short) failed: \(error); will retry")
                    }
                }
            }
        }
        try? db.purgeDeletedSegments()
    }
}

extension Error {
    /// Whether the error says the farmer could not be reached at all.
    var isUnreachable: Bool {
        if let e = self as? FarmerLinkError, case .unreachable = e { return true }
        return false
    }
}
