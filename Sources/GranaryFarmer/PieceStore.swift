import Foundation
import GRDB
import GranaryCore
import GranaryWire
import Logging
import NIOCore
import NIOPosix

/// A piece as the index knows it.
public struct PieceRecord: Sendable, Equatable {
    public let id: Hash256
    public let contractID: Hash256
    public let size: Int
    public let root: Hash256
    public let storedAt: UInt64
}

/// What the startup check found.
public struct StartupReport: Sendable, CustomStringConvertible {
    public var checked = 0
    /// Indexed pieces whose file is gone (dropped from the index).
    public var missing: [Hash256] = []
    /// Indexed pieces whose file has the wrong size or hashes to another root
    /// (file and index entry removed).
    public var corrupt: [Hash256] = []
    /// Files no index entry names (left by a crash between rename and
    /// commit, or a delete between commit and unlink): removed.
    public var orphansRemoved = 0
    /// Half-written uploads from before a crash: removed.
    public var temporaryFilesRemoved = 0

    public var description: String {
        "checked \(checked) pieces: \(missing.count) missing, \(corrupt.count) corrupt, \(orphansRemoved) orphan files and \(temporaryFilesRemoved) partial uploads removed"
    }
}

/// Pieces on disk plus their index.
///
/// Layout under the storage folder: `pieces/ab/cd/<64 hex>` (fanned out by
/// the first two bytes of the ID), `tmp/` for uploads in progress,
/// `farmer.db` for the index. A piece is written to `tmp/`, hashed as it
/// arrives, checked against the declared root, fsynced, renamed into place,
/// the directory fsynced, and only then indexed: the index never names a
/// file that is not complete and durable, and after a crash `tmp/` and
/// unindexed files are swept away.
///
/// Space is accounted in memory (used + reserved, globally and per contract)
/// under a lock, so an upload is refused before a byte is taken when it
/// would pass the farmer's capacity or the contract's allowance.
public final class PieceStore: @unchecked Sendable {
    // Counters are guarded by `lock`; the database pool and the file system
    // are safe to use from any thread.
    public let root: String
    public let capacity: UInt64
    let db: DatabasePool
    private let logger: Logger
    private let lock = NSLock()
    private var used: UInt64 = 0
    private var reserved: UInt64 = 0
    private var usedByContract: [Hash256: UInt64] = [:]
    private var reservedByContract: [Hash256: UInt64] = [:]
    private var uploading: Set<Hash256> = []
    private var pieceCountCache = 0
    /// Recently used Merkle trees (64 bytes per 4 KiB in memory).
    private var treeCache: [Hash256: MerkleTree] = [:]
    private var treeCacheOrder: [Hash256] = []
    private static let treeCacheLimit = 64

    /// Largest piece accepted (1 GiB; segments are at most 64 MiB).
    public static let maxPieceSize = Granary_MerkleProof.maxTreeLeafCount * MerkleTree.leafSize

    var piecesDir: String { root + "/pieces" }
    var tmpDir: String { root + "/tmp" }

    public init(root: String, capacity: UInt64, logger: Logger = Logger(label: "granary.farmer")) throws {
        self.root = root
        self.capacity = capacity
        self.logger = logger
        for dir in [root, root + "/pieces", root + "/tmp"] {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        db = try FarmerDatabase.open(at: root + "/farmer.db")
        try reloadCounters()
    }

    func reloadCounters() throws {
        let rows = try db.read { db in
            try Row.fetchAll(db, sql: "SELECT contract_id, SUM(size) AS bytes, COUNT(*) AS n FROM pieces GROUP BY contract_id")
        }
        lock.withLock {
            used = 0; pieceCountCache = 0; usedByContract = [:]
            for row in rows {
                let id = Hash256(bytes: row["contract_id"] as Data)!
                let bytes = UInt64(row["bytes"] as Int64)
                usedByContract[id] = bytes
                used += bytes
                pieceCountCache += row["n"] as Int
            }
        }
    }

    static func path(for id: Hash256, under dir: String) -> String {
        let hex = id.hex
        return "\(dir)/\(hex.prefix(2))/\(hex.dropFirst(2).prefix(2))/\(hex)"
    }

    func path(for id: Hash256) -> String { Self.path(for: id, under: piecesDir) }

    // MARK: accounting

    /// Bytes stored plus bytes reserved by uploads in progress.
    public var usedBytes: UInt64 { lock.withLock { used } }
    public var freeBytes: UInt64 { lock.withLock { capacity > used + reserved ? capacity - used - reserved : 0 } }
    public var pieceCount: Int { lock.withLock { pieceCountCache } }
    public func bytesUsed(byContract id: Hash256) -> UInt64 { lock.withLock { usedByContract[id] ?? 0 } }

    /// Reserves room for an upload or says why not.
    func reserve(piece: Hash256, contract: Hash256, size: UInt64, allowance: UInt64) throws(FarmerError) {
        lock.lock()
        defer { lock.unlock() }
        do {
            guard !uploading.contains(piece) else { throw FarmerError(.alreadyExists, "piece \(piece.short) is being uploaded on another session") }
            guard used + reserved + size <= capacity else {
                throw FarmerError(.noCapacity, "piece of \(size) bytes does not fit: \(capacity - min(capacity, used + reserved)) of \(capacity) bytes free")
            }
            let contractUsed = (usedByContract[contract] ?? 0) + (reservedByContract[contract] ?? 0)
            guard contractUsed + size <= allowance else {
                throw FarmerError(.allowanceExceeded, "piece of \(size) bytes would pass the contract's allowance: \(contractUsed) of \(allowance) bytes used")
            }
            reserved += size
            reservedByContract[contract, default: 0] += size
            uploading.insert(piece)
        }
    }

    private func release(piece: Hash256, contract: Hash256, size: UInt64, stored: Bool) {
        lock.withLock {
            reserved -= size
            reservedByContract[contract, default: 0] -= size
            if reservedByContract[contract] == 0 { reservedByContract[contract] = nil }
            uploading.remove(piece)
            if stored {
                used += size
                usedByContract[contract, default: 0] += size
                pieceCountCache += 1
            }
        }
    }

    // MARK: upload

    /// Starts an upload: checks the ID is new, reserves space, opens a
    /// temporary file. The caller feeds bytes, then `finish`es or `abort`s
    /// (abort also runs from deinit, so a dropped upload leaves nothing).
    func beginUpload(piece: Hash256, contract: Hash256, size: UInt64, root: Hash256, allowance: UInt64) throws(FarmerError) -> PieceUpload {
        guard size <= UInt64(Self.maxPieceSize) else {
            throw FarmerError(.outOfRange, "piece of \(size) bytes exceeds the maximum of \(Self.maxPieceSize)")
        }
        let exists: Bool
        do { exists = try db.read { try Bool.fetchOne($0, sql: "SELECT 1 FROM pieces WHERE id = ?", arguments: [Data(piece.bytes)]) ?? false } }
        catch { throw .internal("index lookup", error) }
        guard !exists else { throw FarmerError(.alreadyExists, "piece \(piece.short) is already stored") }
        try reserve(piece: piece, contract: contract, size: size, allowance: allowance)
        let tmp = "\(tmpDir)/\(piece.hex).\(Hex.encode(SecureRandom.bytes(4))).part"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            let err = errno
            release(piece: piece, contract: contract, size: size, stored: false)
            throw FarmerError(.internal, "cannot create \(tmp): \(String(cString: strerror(err)))")
        }
        // Direct I/O where the file system has it (StagingBuffer); else the page cache.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | FileSync.directIOFlag)
        let piece = IncomingPiece(piece: piece, contract: contract, size: size, root: root, tmpPath: tmp)
        return PieceUpload(store: self, incoming: piece, file: UploadFile(fd: fd))
    }

    /// Called by PieceUpload (on the disk pool) once the bytes are checked
    /// and fsynced: rename, directory fsync, index.
    func commit(_ upload: IncomingPiece, tree: MerkleTree, now: UInt64) throws(FarmerError) {
        let final = path(for: upload.piece)
        let dir = (final as NSString).deletingLastPathComponent
        do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
            throw .internal("cannot create \(dir)", error)
        }
        guard rename(upload.tmpPath, final) == 0 else {
            throw FarmerError(.internal, "cannot move piece into place: \(String(cString: strerror(errno)))")
        }
        // The new name must be durable before the index names it. The old
        // name in tmp/ need not be: startup clears tmp/ (removing a stale
        // name there leaves the renamed file intact).
        FileSync.syncDirectory(dir)
        do {
            try db.write { db in
                try db.execute(sql: "INSERT INTO pieces (id, contract_id, size, root, stored_at, tree) VALUES (?, ?, ?, ?, ?, ?)",
                               arguments: [Data(upload.piece.bytes), Data(upload.contract.bytes), Int64(upload.size),
                                           Data(upload.root.bytes), Int64(clamping: now), Data(tree.levels[0])])
            }
        } catch {
            unlink(final)
            throw .internal("cannot index piece", error)
        }
        release(piece: upload.piece, contract: upload.contract, size: upload.size, stored: true)
        cacheTree(tree, for: upload.piece)
    }

    func abandon(_ upload: IncomingPiece) {
        unlink(upload.tmpPath)
        release(piece: upload.piece, contract: upload.contract, size: upload.size, stored: false)
    }

    // MARK: reads

    public func record(of piece: Hash256) throws -> PieceRecord? {
        try db.read { db in
            try Row.fetchOne(db, sql: "SELECT id, contract_id, size, root, stored_at FROM pieces WHERE id = ?", arguments: [Data(piece.bytes)])
        }.map(Self.record)
    }

    static func record(_ row: Row) -> PieceRecord {
        PieceRecord(id: Hash256(bytes: row["id"] as Data)!, contractID: Hash256(bytes: row["contract_id"] as Data)!,
                    size: Int(row["size"] as Int64), root: Hash256(bytes: row["root"] as Data)!,
                    storedAt: UInt64(max(0, row["stored_at"] as Int64)))
    }

    /// All pieces of a contract.
    public func pieces(ofContract id: Hash256) throws -> [PieceRecord] {
        try db.read { db in
            try Row.fetchAll(db, sql: "SELECT id, contract_id, size, root, stored_at FROM pieces WHERE contract_id = ?", arguments: [Data(id.bytes)])
        }.map(Self.record)
    }

    private func cacheTree(_ tree: MerkleTree, for piece: Hash256) {
        lock.withLock {
            if treeCache[piece] == nil {
                treeCacheOrder.append(piece)
                if treeCacheOrder.count > Self.treeCacheLimit { treeCache[treeCacheOrder.removeFirst()] = nil }
            }
            treeCache[piece] = tree
        }
    }

    /// The piece's Merkle tree, from the cache or the index (never rehashed).
    func tree(of record: PieceRecord) throws(FarmerError) -> MerkleTree {
        if let cached = lock.withLock({ treeCache[record.id] }) { return cached }
        let blob: Data?
        do { blob = try db.read { try Data.fetchOne($0, sql: "SELECT tree FROM pieces WHERE id = ?", arguments: [Data(record.id.bytes)]) } }
        catch { throw .internal("index lookup", error) }
        let leafCount = MerkleTree.leafCount(byteCount: record.size)
        // Rows hold the leaf hashes (the inner levels are rebuilt here, a
        // millisecond for a 16 MiB piece, instead of doubling every commit's
        // and checkpoint's bytes); rows from before that hold every level.
        let tree: MerkleTree? = switch blob?.count {
        case leafCount * 32: blob.map { MerkleTree(leafHashes: [UInt8]($0)) }
        case .some: MerkleTree(serialized: [UInt8](blob!), leafCount: leafCount)
        case nil: nil
        }
        guard let tree, tree.root == record.root else {
            throw FarmerError(.internal, "Merkle tree of piece \(record.id.short) is missing or damaged in the index")
        }
        cacheTree(tree, for: record.id)
        return tree
    }

    /// Reads `count` bytes at `offset` of a piece into a buffer.
    func readBytes(of piece: Hash256, offset: Int, count: Int, allocator: ByteBufferAllocator) throws(FarmerError) -> ByteBuffer {
        let p = path(for: piece)
        let fd = open(p, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FarmerError(.internal, "piece \(piece.short) is indexed but its file cannot be opened: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var buffer = allocator.buffer(capacity: count)
        var failure: Int32 = 0
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { dst in
            var done = 0
            while done < count {
                let n = pread(fd, dst.baseAddress! + done, count - done, off_t(offset + done))
                if n < 0 { if errno == EINTR { continue }; failure = errno; break }
                if n == 0 { failure = EIO; break }
                done += n
            }
            return done
        }
        guard failure == 0, buffer.readableBytes == count else {
            throw FarmerError(.internal, "piece \(piece.short) is shorter on disk than indexed (\(String(cString: strerror(failure))))")
        }
        return buffer
    }

    // MARK: deletes

    /// Removes a piece from the index, then its file. Returns whether it existed.
    @discardableResult
    public func delete(piece: Hash256) throws -> Bool {
        let removed: PieceRecord? = try db.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT id, contract_id, size, root, stored_at FROM pieces WHERE id = ?", arguments: [Data(piece.bytes)]) else { return nil }
            try db.execute(sql: "DELETE FROM pieces WHERE id = ?", arguments: [Data(piece.bytes)])
            return Self.record(row)
        }
        guard let removed else { return false }
        unlink(path(for: piece))
        lock.withLock {
            used -= UInt64(removed.size)
            usedByContract[removed.contractID, default: 0] -= UInt64(removed.size)
            if usedByContract[removed.contractID] == 0 { usedByContract[removed.contractID] = nil }
            pieceCountCache -= 1
            treeCache[piece] = nil
        }
        return true
    }

    /// Drops every piece of a contract (tit for tat, expiry). Returns the
    /// number of pieces and bytes dropped. Other contracts are untouched.
    public func dropPieces(ofContract id: Hash256) throws -> (pieces: Int, bytes: UInt64) {
        var count = 0, bytes: UInt64 = 0
        for record in try pieces(ofContract: id) where try delete(piece: record.id) {
            count += 1; bytes += UInt64(record.size)
        }
        return (count, bytes)
    }

    // MARK: startup check

    /// Clears half-written uploads and unindexed files, then checks every
    /// indexed piece: its file must exist with the indexed size and, when
    /// `verifyContents`, hash to the indexed root. Bad entries are removed
    /// from the index (and disk) and reported.
    public func checkOnStartup(verifyContents: Bool = true) throws -> StartupReport {
        var report = StartupReport()
        let fm = FileManager.default
        for name in (try? fm.contentsOfDirectory(atPath: tmpDir)) ?? [] {
            unlink("\(tmpDir)/\(name)"); report.temporaryFilesRemoved += 1
        }
        let rows = try db.read { db in
            try Row.fetchAll(db, sql: "SELECT id, contract_id, size, root, stored_at FROM pieces")
        }.map(Self.record)
        let indexed = Set(rows.map(\.id))
        // Unindexed files.
        if let walker = fm.enumerator(atPath: piecesDir) {
            while let rel = walker.nextObject() as? String {
                let name = (rel as NSString).lastPathComponent
                guard name.count == 64 else { continue }
                if let id = Hash256(hex: name), indexed.contains(id) { continue }
                unlink("\(piecesDir)/\(rel)"); report.orphansRemoved += 1
            }
        }
        for record in rows {
            report.checked += 1
            let p = path(for: record.id)
            var st = stat()
            guard stat(p, &st) == 0 else {
                report.missing.append(record.id)
                try forget(record.id)
                continue
            }
            var good = Int(st.st_size) == record.size
            if good && verifyContents {
                good = (try? hashFile(p, size: record.size)) == record.root
            }
            if !good {
                report.corrupt.append(record.id)
                try forget(record.id)
                unlink(p)
            }
        }
        try reloadCounters()
        return report
    }

    private func forget(_ id: Hash256) throws {
        _ = try db.write { try $0.execute(sql: "DELETE FROM pieces WHERE id = ?", arguments: [Data(id.bytes)]) }
    }

    private func hashFile(_ path: String, size: Int) throws -> Hash256 {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FarmerError(.internal, "cannot open \(path)") }
        defer { close(fd) }
        var builder = MerkleTreeBuilder(expectedByteCount: size)
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 { if errno == EINTR { continue }; throw FarmerError(.internal, "read \(path)") }
            if n == 0 { break }
            buf.withUnsafeBytes { builder.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        return builder.finish().root
    }
}
