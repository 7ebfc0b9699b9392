import Foundation
import GranaryCore
import NIOCore
import NIOPosix

/// What an upload in progress will become: the piece as announced and the
/// temporary file its bytes go to.
struct IncomingPiece: Sendable {
    let piece: Hash256
    let contract: Hash256
    let size: UInt64
    let root: Hash256
    let tmpPath: String
}

/// The temporary file's descriptor, closed when the last user lets go: the
/// upload, or a write still running on the disk pool after the upload was
/// dropped (closing under a running pwrite could let the number be reused
/// by another open and the write land in the wrong file).
final class UploadFile: Sendable {
    let fd: Int32
    init(fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}

/// One piece upload in progress. Owned by one session task. If it is
/// dropped without `finish`, its temporary file is removed and its
/// reservation released.
///
/// Each byte is hashed exactly once, on the session's task, as its frame
/// arrives. The frames themselves (no copy) go to the disk pool in writes
/// of at least `writeBatch` bytes, handed over before they are hashed: the
/// pool copies them into the page cache while this task hashes the same
/// bytes, so both read memory that is still in cache (writing a batch
/// after hashing it made that copy twice as costly), and the next frames
/// keep arriving meanwhile. At most one write is in flight, so writes stay
/// in order and an upload holds at most two batches.
final class PieceUpload {
    let incoming: IncomingPiece
    private let store: PieceStore
    private var file: UploadFile?
    private var builder: MerkleTreeBuilder
    private(set) var received: UInt64 = 0
    /// Frames hashed but not yet handed to a write, and their byte count.
    private var batch: [ByteBuffer] = []
    private var batchBytes = 0
    /// Where the next write starts.
    private var written: UInt64 = 0
    /// Start of the bytes written but not yet handed to writeback.
    private var writebackStart: UInt64 = 0
    private var inFlight: Task<Void, any Error>?
    private var done = false

    /// Bytes per write: one frame as renters send them (1 MiB), several
    /// smaller ones in one pwritev.
    static let writeBatch = 1 << 20
    static let maxBatchFrames = 64
    static let writebackStride: UInt64 = 1 << 20

    init(store: PieceStore, incoming: IncomingPiece, file: UploadFile) {
        self.store = store; self.incoming = incoming; self.file = file
        builder = MerkleTreeBuilder(expectedByteCount: Int(incoming.size))
        batch.reserveCapacity(8)
    }

    var size: UInt64 { incoming.size }
    var remaining: UInt64 { size - received }

    /// Queues the next bytes for writing and hashes them; never more than announced.
    func append(_ chunk: ByteBuffer) async throws(FarmerError) {
        guard UInt64(chunk.readableBytes) <= remaining else {
            throw FarmerError(.protocolViolation, "more bytes than the \(size) announced for piece \(incoming.piece.short)")
        }
        guard chunk.readableBytes > 0 else { return }
        received += UInt64(chunk.readableBytes)
        batch.append(chunk)
        batchBytes += chunk.readableBytes
        // Also bounded in frames: a peer sending tiny frames must not pile up buffers.
        if batchBytes >= Self.writeBatch || batch.count >= Self.maxBatchFrames || remaining == 0 { try await startWrite() }
        chunk.withUnsafeReadableBytes { builder.append($0) }
    }

    /// Waits for the write in flight, then hands the batch to the disk pool.
    private func startWrite() async throws(FarmerError) {
        try await waitForWrite()
        guard let file, batchBytes > 0 else { return }
        let chunks = batch, offset = written
        batch = []; batch.reserveCapacity(8)
        written += UInt64(batchBytes)
        batchBytes = 0
        // Start writing back what came since the last time (every write
        // for pieces as renters send them), so the disk works while bytes
        // arrive and the final fsync waits for the tail only.
        var writeback: (offset: UInt64, length: UInt64)?
        if written - writebackStart >= Self.writebackStride || remaining == 0 {
            writeback = (writebackStart, written - writebackStart)
            writebackStart = written
        }
        inFlight = Task { [writeback] in
            try await DiskPool.shared.runIfActive {
                try pwriteAll(file.fd, chunks, at: offset)
                if let writeback { FileSync.startWriteback(file.fd, offset: Int(writeback.offset), length: Int(writeback.length)) }
            }
        }
    }

    private func waitForWrite() async throws(FarmerError) {
        guard let write = inFlight else { return }
        inFlight = nil
        do { try await write.value } catch let e as FarmerError { throw e } catch { throw .internal("writing piece", error) }
    }

    /// Checks the root, then on the disk pool: fsync, move into place,
    /// index. On a root mismatch nothing is kept.
    func finish(now: UInt64) async throws(FarmerError) {
        defer { abort() }
        precondition(remaining == 0)
        try await startWrite()
        try await waitForWrite()
        let tree = builder.finish()
        guard tree.root == incoming.root else {
            throw FarmerError(.rootMismatch, "piece \(incoming.piece.short): bytes hash to \(tree.root.short), not the declared root \(incoming.root.short); nothing kept")
        }
        guard let file else { throw FarmerError(.internal, "upload of piece \(incoming.piece.short) was already dropped") }
        let store = self.store, incoming = self.incoming
        do {
            try await DiskPool.shared.runIfActive {
                guard fsync(file.fd) == 0 else { throw FarmerError(.internal, "fsync of piece failed: \(String(cString: strerror(errno)))") }
                try store.commit(incoming, tree: tree, now: now)
            }
        } catch let e as FarmerError { throw e } catch { throw .internal("storing piece", error) }
        done = true
    }

    /// Drops the upload: removes the temporary file, releases the space. A
    /// write still in flight finishes into the unlinked file, which then closes.
    func abort() {
        file = nil
        if !done { done = true; store.abandon(incoming) }
    }

    deinit { abort() }
}

/// Writes `chunks` back to back at `offset` (runs on the disk pool): one
/// pwritev for the lot, looping over partial writes.
private func pwriteAll(_ fd: Int32, _ chunks: [ByteBuffer], at offset: UInt64) throws {
    var index = 0, skip = 0, position = off_t(offset)
    while index < chunks.count {
        let n: Int = withIOVecs(chunks, from: index, skipping: skip) { iov in
            pwritev(fd, iov.baseAddress, Int32(iov.count), position)
        }
        if n < 0 {
            if errno == EINTR { continue }
            throw FarmerError(.internal, "writing piece: \(String(cString: strerror(errno)))")
        }
        guard n > 0 else { throw FarmerError(.internal, "writing piece: the disk took no bytes") }
        position += off_t(n)
        var left = n
        while left > 0 {
            let rest = chunks[index].readableBytes - skip
            if left >= rest { left -= rest; index += 1; skip = 0 } else { skip += left; left = 0 }
        }
        while index < chunks.count, chunks[index].readableBytes == skip { index += 1; skip = 0 }
    }
}

/// Calls `body` with iovecs over `chunks[index...]`, the first advanced by `skip` bytes.
private func withIOVecs<R>(_ chunks: [ByteBuffer], from index: Int, skipping skip: Int, _ body: (UnsafeBufferPointer<iovec>) -> R) -> R {
    let slice = Array(chunks[index...].prefix(PieceUpload.maxBatchFrames))
    var vecs: [iovec] = []
    vecs.reserveCapacity(slice.count)
    func collect(_ i: Int) -> R {
        if i == slice.count { return vecs.withUnsafeBufferPointer(body) }
        return slice[i].withUnsafeReadableBytes { bytes in
            let start = i == 0 ? skip : 0
            vecs.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress! + start), iov_len: bytes.count - start))
            return collect(i + 1)
        }
    }
    return collect(0)
}
