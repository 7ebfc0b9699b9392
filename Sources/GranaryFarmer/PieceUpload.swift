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
/// arrives, right after it is copied into a page-aligned staging buffer
/// (both read the frame while it is still in cache). A full buffer goes to
/// the disk pool as one direct write (`StagingBuffer`: no page-cache copy)
/// while the next frames fill the other buffer. At most one write is in
/// flight, so writes stay in order and an upload holds two buffers.
final class PieceUpload {
    let incoming: IncomingPiece
    private let store: PieceStore
    private var file: UploadFile?
    private var builder: MerkleTreeBuilder
    private(set) var received: UInt64 = 0
    /// The buffer being filled; its bytes go to the file at `written`.
    private var staging = StagingBuffer()
    private var written: UInt64 = 0
    /// The write in flight; it hands its emptied buffer back.
    private var inFlight: Task<StagingBuffer, any Error>?
    private var done = false

    init(store: PieceStore, incoming: IncomingPiece, file: UploadFile) {
        self.store = store; self.incoming = incoming; self.file = file
        builder = MerkleTreeBuilder(expectedByteCount: Int(incoming.size))
    }

    var size: UInt64 { incoming.size }
    var remaining: UInt64 { size - received }

    /// Stages the next bytes for writing and hashes them; never more than announced.
    func append(_ chunk: ByteBuffer) async throws(FarmerError) {
        guard UInt64(chunk.readableBytes) <= remaining else {
            throw FarmerError(.protocolViolation, "more bytes than the \(size) announced for piece \(incoming.piece.short)")
        }
        guard chunk.readableBytes > 0 else { return }
        received += UInt64(chunk.readableBytes)
        var taken = 0
        while taken < chunk.readableBytes {
            taken += chunk.withUnsafeReadableBytes { staging.fill(from: UnsafeRawBufferPointer(rebasing: $0[taken...])) }
            if staging.isFull { try await startWrite() }
        }
        chunk.withUnsafeReadableBytes { builder.append($0) }
        if remaining == 0 { try await startWrite() }
    }

    /// Waits for the write in flight, then hands the staged bytes to the disk pool.
    private func startWrite() async throws(FarmerError) {
        guard !staging.isEmpty else { return }
        let next = try await waitForWrite() ?? StagingBuffer()
        guard let file else { throw FarmerError(.internal, "upload of piece \(incoming.piece.short) was already dropped") }
        let buffer = staging, offset = written
        written += UInt64(buffer.count)
        staging = next
        inFlight = Task {
            try await DiskPool.shared.runIfActive {
                try buffer.write(to: file.fd, at: offset)
                return buffer
            }
        }
    }

    /// Waits for the write in flight; returns its emptied buffer.
    private func waitForWrite() async throws(FarmerError) -> StagingBuffer? {
        guard let write = inFlight else { return nil }
        inFlight = nil
        do { return try await write.value } catch let e as FarmerError { throw e } catch { throw .internal("writing piece", error) }
    }

    /// Checks the root, then on the disk pool: fsync, move into place,
    /// index. On a root mismatch nothing is kept.
    func finish(now: UInt64) async throws(FarmerError) {
        defer { abort() }
        precondition(remaining == 0)
        try await startWrite()
        _ = try await waitForWrite()
        let tree = builder.finish()
        guard tree.root == incoming.root else {
            throw FarmerError(.rootMismatch, "piece \(incoming.piece.short): bytes hash to \(tree.root.short), not the declared root \(incoming.root.short); nothing kept")
        }
        guard let file else { throw FarmerError(.internal, "upload of piece \(incoming.piece.short) was already dropped") }
        let store = self.store, incoming = self.incoming
        do {
            try await DiskPool.shared.runIfActive {
                // A direct write ends on a whole page: cut the padding off first.
                guard ftruncate(file.fd, off_t(incoming.size)) == 0, fsync(file.fd) == 0 else {
                    throw FarmerError(.internal, "truncating or fsyncing the piece failed: \(String(cString: strerror(errno)))")
                }
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
