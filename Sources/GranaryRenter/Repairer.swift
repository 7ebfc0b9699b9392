import Foundation
import GranaryCore
import Logging

/// What one repair pass did.
public struct RepairReport: Sendable, Hashable, Codable {
    public var segmentsChecked = 0
    public var segmentsRepaired = 0
    public var piecesRebuilt = 0
    public var bytesMoved: Int64 = 0
    /// Segments that needed repair but could not get it this pass (no k
    /// readable pieces, or no free farmer); retried next pass.
    public var failures: [String] = []
    public init() {}
}

/// Finds segments whose healthy pieces fell below the repair threshold and
/// rebuilds pieces onto new farmers from any k healthy ones, until the
/// segment has s healthy pieces again; then releases the pieces that no
/// longer count. A piece is healthy when its farmer is neither
/// disqualified nor offline for longer than the grace, and its contract
/// is active and not past its end.
///
/// Trigger: fewer than r healthy pieces, as in Storj; and also fewer than
/// s when some piece sits on a disqualified farmer or a dead contract,
/// since such a piece never comes back (an offline farmer may, so only the
/// r threshold waits for it). One segment at a time, and no faster than
/// `repairBytesPerSecond`, so repair never starves user traffic.
public final class Repairer: Sendable {
    let db: NetworkDatabase
    let book: FarmerBook
    let store: NetworkSegmentStore
    let config: RenterConfiguration
    private let log = Logger(label: "granary.renter")
    private let running = RepairLock()

    init(db: NetworkDatabase, book: FarmerBook, store: NetworkSegmentStore, config: RenterConfiguration) {
        self.db = db; self.book = book; self.store = store; self.config = config
    }

    /// Contracts whose pieces still count: active and not past their end
    /// (a farmer drops an expired contract's pieces).
    func liveContracts() -> Set<Hash256> {
        let now = Date()
        return Set(((try? db.contracts()) ?? []).filter { $0.record.end > now }.map(\.record.id))
    }

    /// A piece counts toward its segment's health when it is stored, its
    /// farmer is neither disqualified nor long offline, and its contract lives.
    func isHealthy(_ p: PieceRow, live: Set<Hash256>) -> Bool {
        p.state == .stored && book.isHealthy(p.farmer) && live.contains(p.contract)
    }

    /// Whether a segment needs repair, and how many healthy pieces it has.
    func needsRepair(_ seg: SegmentRow, pieces: [PieceRow], live: Set<Hash256>) -> (needs: Bool, healthy: Set<Int>) {
        let stored = pieces.filter { $0.state == .stored }
        let healthy = Set(stored.filter { isHealthy($0, live: live) }.map(\.index))
        let onDisqualified = stored.contains { book.isDisqualified($0.farmer) || !live.contains($0.contract) }
        let needs = healthy.count < seg.scheme.r || (onDisqualified && healthy.count < seg.scheme.s)
        return (needs, healthy)
    }

    /// One pass over every durable segment.
    public func runPass() async -> RepairReport {
        guard await running.begin() else { return RepairReport() }
        let report = await pass()
        await running.end()
        return report
    }

    private func pass() async -> RepairReport {
        var report = RepairReport()
        guard let segments = try? db.segments(state: .durable) else { return report }
        let live = liveContracts()
        let started = Date()
        for seg in segments {
            report.segmentsChecked += 1
            guard let pieces = try? db.pieces(of: seg.id) else { continue }
            let (needs, healthy) = needsRepair(seg, pieces: pieces, live: live)
            guard needs else { continue }
            do {
                let (rebuilt, moved) = try await repair(seg, pieces: pieces, healthy: healthy)
                report.segmentsRepaired += 1
                report.piecesRebuilt += rebuilt
                report.bytesMoved += moved
            } catch {
                log.warning("repair of segment \(seg.id.short) failed: \(error)")
                report.failures.append("\(seg.id.short): \(error)")
            }
            // Rate limit: never faster than repairBytesPerSecond on average.
            let minimum = Double(report.bytesMoved) / config.repairBytesPerSecond
            let elapsed = Date().timeIntervalSince(started)
            if minimum > elapsed { try? await Task.sleep(nanoseconds: UInt64((minimum - elapsed) * 1e9)) }
        }
        return report
    }

    func repair(_ seg: SegmentRow, pieces: [PieceRow], healthy: Set<Int>) async throws -> (Int, Int64) {
        let scheme = seg.scheme
        let pieceSize = scheme.pieceSize(segmentLength: seg.length)
        let missing = (0..<scheme.n).filter { !healthy.contains($0) }
        let targets = Array(missing.prefix(max(0, scheme.s - healthy.count)))
        guard !targets.isEmpty else { return (0, 0) }
        log.info("repairing segment \(seg.id.short): \(healthy.count) healthy pieces, rebuilding \(targets)")
        // Any k pieces, read in full and verified against their roots.
        let fetched = try await store.fetchRanges(segment: seg, range: 0..<pieceSize, pieceSize: pieceSize, needed: Set(0..<scheme.k))
        guard fetched.count >= scheme.k || (0..<scheme.k).allSatisfy({ fetched[$0] != nil }) else {
            throw SegmentStoreError.unavailable("only \(fetched.count) pieces readable")
        }
        let coder = ErasureCoder(scheme: scheme)
        var rebuilt = [[UInt8]](repeating: [], count: scheme.n)
        for t in targets {
            rebuilt[t] = try coder.rebuildPiece(t, from: fetched, pieceSize: pieceSize)
        }
        var roots = [Hash256](repeating: .zero, count: scheme.n)
        let knownRoots = Dictionary(pieces.map { ($0.index, $0.root) }, uniquingKeysWith: { a, _ in a })
        for t in targets {
            roots[t] = MerkleTree(data: rebuilt[t]).root
            if let known = knownRoots[t], known != roots[t] {
                throw SegmentStoreError.corrupt(seg.id, "rebuilt piece \(t) does not match its recorded root")
            }
        }
        // New farmers: none that holds (or held) a piece of this segment.
        let exclude = Set(pieces.map(\.farmer))
        let candidates = try store.placements(pieceSize: pieceSize, excluding: exclude)
        guard !candidates.isEmpty else { throw SegmentStoreError.unavailable("no farmer free to take a rebuilt piece") }
        let coded = NetworkSegmentStore.Coded(pieces: rebuilt, roots: roots)
        var stored = 0
        do {
            stored = try await store.uploadPieces(segment: seg.id, coded: coded, pieceSize: pieceSize, indexes: targets,
                                                  needed: targets.count, candidates: candidates).count
        } catch {
            // Pieces that did land are recorded as stored; the next pass finishes the job.
            log.info("repair of segment \(seg.id.short) incomplete: \(error)")
        }
        // Release pieces that no longer count (disqualified or offline farmers).
        let nowPieces = try db.pieces(of: seg.id)
        let live = liveContracts()
        let keep = Set(nowPieces.filter { isHealthy($0, live: live) }.map(\.pieceID))
        if keep.count >= scheme.s || Set(nowPieces.filter { keep.contains($0.pieceID) }.map(\.index)).count >= scheme.s {
            try db.releasePieces(of: seg.id, keeping: keep)
        }
        await store.releasePendingPieces(segment: seg.id)
        return (stored, Int64(pieceSize) * Int64(fetched.count + stored))
    }
}

/// One repair pass at a time.
actor RepairLock {
    private var busy = false
    func begin() -> Bool { if busy { return false }; busy = true; return true }
    func end() { busy = false }
}
