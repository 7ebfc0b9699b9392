import Foundation
import GranaryCore
import NIOCore
import NIOPosix
import SwiftProtobuf

/// The renter's side of one transfer session with one farmer.
///
/// Concurrency: a session carries ONE request at a time; this actor queues
/// callers, so concurrent calls on one client run one after another. For
/// parallel transfers open several clients (one connection per stream), as
/// the renter engine does per farmer and as `granary bench transfer` does
/// with 8 streams. Every request has a time limit; when it passes, the
/// connection is closed and the call throws `.timedOut`.
///
/// A failed request that the farmer answered (`TransferError.refused`)
/// leaves the session usable; any other error ends it (`isUsable` false),
/// and the caller should connect again.
public actor TransferClient {
    public let peer: NodePublicKey
    public let requestTimeout: Duration
    private let session: TransferSession
    private let channel: Channel
    private let closeSignal: AsyncStream<Void>.Continuation
    private var nextRequestID: UInt64 = 1
    private var broken = false

    /// Whether the session can take another request: not failed, and not
    /// closed by the farmer (a restart) while it sat idle.
    public var isUsable: Bool { !broken && channel.isActive }

    private init(peer: NodePublicKey, session: TransferSession, channel: Channel,
                 closeSignal: AsyncStream<Void>.Continuation, requestTimeout: Duration) {
        self.peer = peer; self.session = session; self.channel = channel
        self.closeSignal = closeSignal; self.requestTimeout = requestTimeout
    }

    /// Connects, runs the handshake, and checks the farmer's identity: its
    /// node ID must match its key, carry `difficulty` bits of proof of work,
    /// and equal `expectedPeer` when given.
    public static func connect(to host: String, port: Int, identity: NodeIdentity, expectedPeer: Hash256?,
                               difficulty: Int = NodeIdentity.configuredDifficulty,
                               connectTimeout: Duration = .seconds(10), requestTimeout: Duration = .seconds(60),
                               maxFrameLength: Int = FrameLimits.defaultMaxFrameLength, received: ByteCounter? = nil,
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws(TransferError) -> TransferClient {
        let asyncChannel: NIOAsyncChannel<Frame, Frame>
        do {
            asyncChannel = try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(.nanoseconds(Int64(connectTimeout.components.seconds) * 1_000_000_000 + connectTimeout.components.attoseconds / 1_000_000_000))
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture { try TransferPipeline.configure(channel, maxFrameLength: maxFrameLength, received: received) }
                }
        } catch {
            throw .connect("\(host):\(port): \(error)")
        }
        let channel = asyncChannel.channel
        // The channel's inbound/outbound halves live inside executeThenClose
        // (NIO's scoped API) in a task that holds them until `close()`.
        let (closeStream, closeSignal) = AsyncStream<Void>.makeStream()
        let halves: (NIOAsyncChannelInboundStream<Frame>, NIOAsyncChannelOutboundWriter<Frame>) = await withCheckedContinuation { cont in
            Task {
                try? await asyncChannel.executeThenClose { inbound, outbound in
                    cont.resume(returning: (inbound, outbound))
                    for await _ in closeStream {}
                }
            }
        }
        var inbound = halves.0.makeAsyncIterator()
        let outbound = halves.1
        let timeout = Watchdog(channel: channel, after: connectTimeout)
        defer { timeout.cancel() }
        do {
            let handshake = ClientHandshake(identity: identity, expectedPeer: expectedPeer, difficulty: difficulty, maxFrameLength: maxFrameLength)
            try await outbound.write(Frame(type: .hello, payload: handshake.hello))
            guard let answer = try await inbound.next() else { throw SessionError.closed("farmer closed during the handshake") }
            switch answer.type {
            case .hello:
                let (peer, cipher) = try handshake.finish(serverHello: answer.payload)
                let session = TransferSession(peer: peer, cipher: cipher, inbound: inbound, outbound: outbound, maxFrameLength: maxFrameLength)
                return TransferClient(peer: peer, session: session, channel: channel, closeSignal: closeSignal, requestTimeout: requestTimeout)
            case .refusal:
                let reason = (try? Granary_TransferError(serializedBytes: Array(answer.payload.readableBytesView)))
                    ?? Granary_TransferError(.unauthenticated, "farmer refused the handshake")
                throw TransferError.refused(code: reason.code, message: reason.message)
            default:
                throw SessionError.unexpectedFrame("\(answer.type) frame during the handshake")
            }
        } catch {
            closeSignal.finish()
            if timeout.fired { throw .timedOut("handshake with \(host):\(port)") }
            if let e = error as? TransferError { throw e }
            if let e = error as? SessionError { throw .session(e) }
            if let e = error as? FrameError { throw .session(.frame(e)) }
            throw .session(.closed("\(error)"))
        }
    }

    /// Ends the session and closes the connection.
    public func close() {
        broken = true
        session.finish()
        closeSignal.finish()
    }

    deinit { closeSignal.finish() }

    // MARK: requests

    /// Runs one request under the time limit (or, given `stallTimeout`,
    /// until no byte has moved for that long); maps every failure to TransferError.
    private func perform<T>(_ what: String, stallTimeout: Duration? = nil,
                            _ body: nonisolated(nonsending) (TransferSession, UInt64) async throws -> T) async throws(TransferError) -> T {
        guard !broken else { throw .closed }
        let id = nextRequestID
        nextRequestID += 1
        let watchdog = stallTimeout.map { Watchdog(channel: channel, after: $0, resetByProgress: true) }
            ?? Watchdog(channel: channel, after: requestTimeout)
        defer { watchdog.cancel() }
        let why = stallTimeout.map { "no bytes moved for \($0)" } ?? "no answer within \(requestTimeout)"
        do {
            return try await body(session, id)
        } catch let error as TransferError {
            if !error.isFarmersAnswer { broken = true }
            if watchdog.fired { throw .timedOut("\(what) (\(why))") }
            throw error
        } catch {
            broken = true
            if watchdog.fired { throw .timedOut("\(what) (\(why))") }
            if let e = error as? SessionError { throw .session(e) }
            throw .session(.closed("\(error)"))
        }
    }

    /// Reads the response to request `id`; an error answer becomes `.refused`.
    nonisolated(nonsending) private static func response(_ session: TransferSession, _ id: UInt64) async throws -> Granary_Response.OneOf_Body {
        guard let response = try await session.receive(Granary_Response.self) else {
            throw TransferError.session(.closed("farmer closed the connection"))
        }
        guard response.requestID == id || response.requestID == 0 else {
            throw TransferError.protocolViolation("answer to request \(response.requestID), expected \(id)")
        }
        guard let body = response.body else { throw TransferError.protocolViolation("empty response") }
        if case let .error(e) = body {
            if e.code == .staleVoucher && e.hasLastVoucher {
                throw TransferError.staleVoucher(lastAccepted: VoucherReceipt(cumulativeAmount: e.lastVoucher.cumulativeAmount,
                                                                              sequence: e.lastVoucher.sequence), message: e.message)
            }
            throw TransferError.refused(code: e.code, message: e.message)
        }
        return body
    }

    private static func request(_ id: UInt64, _ body: Granary_Request.OneOf_Body) -> Granary_Request {
        var r = Granary_Request()
        r.requestID = id
        r.body = body
        return r
    }

    /// Asks the farmer to countersign a renter-signed contract envelope.
    /// Returns the farmer's SignedContract as received; GranaryContracts'
    /// `proposeContract(_:)` verifies it.
    public func proposeContract(envelope: Granary_SignedEnvelope) async throws(TransferError) -> Granary_SignedContract {
        try await perform("propose contract") { session, id in
            var m = Granary_ProposeContract(); m.contract = envelope
            try await session.send(Self.request(id, .proposeContract(m)))
            guard case let .contractAccepted(a) = try await Self.response(session, id) else {
                throw TransferError.protocolViolation("expected contract_accepted")
            }
            return a.contract
        }
    }

    /// Asks the farmer to countersign a renewal (same contract ID, higher
    /// revision). The contract's pieces stay.
    public func renewContract(envelope: Granary_SignedEnvelope) async throws(TransferError) -> Granary_SignedContract {
        try await perform("renew contract") { session, id in
            var m = Granary_RenewContract(); m.contract = envelope
            try await session.send(Self.request(id, .renewContract(m)))
            guard case let .contractRenewed(a) = try await Self.response(session, id) else {
                throw TransferError.protocolViolation("expected contract_renewed")
            }
            return a.contract
        }
    }

    /// Uploads a piece under a contract. The farmer reserves the space (or
    /// refuses, before any byte is sent), hashes the bytes, compares with
    /// `root`, fsyncs and indexes; returns once the piece is durable.
    ///
    /// With `stallTimeout` the upload takes as long as the link needs and
    /// fails only once no byte was acknowledged for that long (then the
    /// caller bounds the whole); without, `requestTimeout` bounds it.
    public func storePiece(contract: Hash256, pieceID: Hash256, root: Hash256, bytes: [UInt8],
                           stallTimeout: Duration? = nil) async throws(TransferError) -> StoredPiece {
        try await storePiece(contract: contract, pieceID: pieceID, root: root, buffer: ByteBuffer(bytes: bytes), stallTimeout: stallTimeout)
    }

    /// `storePiece` for bytes already in a ByteBuffer (no copy).
    public func storePiece(contract: Hash256, pieceID: Hash256, root: Hash256, buffer: ByteBuffer,
                           stallTimeout: Duration? = nil) async throws(TransferError) -> StoredPiece {
        try await perform("store piece \(pieceID.short)", stallTimeout: stallTimeout) { session, id in
            var m = Granary_StorePiece()
            m.contractID = Data(contract.bytes); m.pieceID = Data(pieceID.bytes)
            m.size = UInt64(buffer.readableBytes); m.merkleRoot = Data(root.bytes)
            try await session.send(Self.request(id, .storePiece(m)))
            guard case .storeReady = try await Self.response(session, id) else {
                throw TransferError.protocolViolation("expected store_ready")
            }
            try await session.sendData(buffer)
            guard case let .pieceStored(s) = try await Self.response(session, id) else {
                throw TransferError.protocolViolation("expected piece_stored")
            }
            return StoredPiece(pieceID: pieceID, size: Int(s.size), contractBytesUsed: s.contractBytesUsed)
        }
    }

    /// Bytes `range` of a piece, verified against the `root` the renter kept:
    /// the farmer sends the whole 4 KiB leaves covering the range with their
    /// Merkle range proof; any mismatch throws `.badProof`. `stallTimeout`
    /// as for `storePiece`: fails once no byte arrived for that long.
    public func readRange(pieceID: Hash256, root: Hash256, pieceSize: Int, range: Range<Int>,
                          stallTimeout: Duration? = nil) async throws(TransferError) -> [UInt8] {
        guard range.lowerBound >= 0, range.upperBound <= pieceSize, pieceSize <= Granary_MerkleProof.maxTreeLeafCount * MerkleTree.leafSize else {
            throw .protocolViolation("range \(range) is outside a piece of \(pieceSize) bytes")
        }
        if range.isEmpty { return [] }
        return try await perform("read piece \(pieceID.short) \(range)", stallTimeout: stallTimeout) { session, id in
            var m = Granary_ReadRange()
            m.pieceID = Data(pieceID.bytes); m.offset = UInt64(range.lowerBound); m.length = UInt64(range.count)
            try await session.send(Self.request(id, .readRange(m)))
            guard case let .rangeData(header) = try await Self.response(session, id) else {
                throw TransferError.protocolViolation("expected range_data")
            }
            let leaves = MerkleTree.leaves(covering: range)
            let leafCount = MerkleTree.leafCount(byteCount: pieceSize)
            guard let proof = header.proof.decoded(), proof.leaves == leaves, proof.leafCount == leafCount else {
                throw TransferError.badProof("proof does not describe leaves \(leaves) of \(leafCount)")
            }
            let start = leaves.lowerBound * MerkleTree.leafSize
            let expected = min(leaves.upperBound * MerkleTree.leafSize, pieceSize) - start
            guard header.dataLength == UInt64(expected), header.pieceSize == UInt64(pieceSize) else {
                throw TransferError.badProof("farmer announces \(header.dataLength) bytes of a \(header.pieceSize)-byte piece, expected \(expected) of \(pieceSize)")
            }
            var data = [UInt8](repeating: 0, count: expected)
            var filled = 0
            while filled < expected {
                let chunk = try await session.receiveData()
                guard chunk.readableBytes <= expected - filled else {
                    throw TransferError.protocolViolation("farmer sent more bytes than announced")
                }
                data.withUnsafeMutableBytes { dst in
                    chunk.withUnsafeReadableBytes { src in
                        (dst.baseAddress! + filled).copyMemory(from: src.baseAddress!, byteCount: src.count)
                    }
                }
                filled += chunk.readableBytes
            }
            guard MerkleTree.verify(proof, leafData: data, root: root) else {
                throw TransferError.badProof("bytes of piece \(pieceID.short) do not match its Merkle root")
            }
            let lo = range.lowerBound - start
            if lo == 0 && range.count == data.count { return data }  // leaf-aligned: no copy
            return Array(data[lo..<(lo + range.count)])
        }
    }

    /// Deletes a piece; returns whether the farmer had it.
    @discardableResult
    public func deletePiece(pieceID: Hash256) async throws(TransferError) -> Bool {
        try await perform("delete piece \(pieceID.short)") { session, id in
            var m = Granary_DeletePiece(); m.pieceID = Data(pieceID.bytes)
            try await session.send(Self.request(id, .deletePiece(m)))
            guard case let .pieceDeleted(d) = try await Self.response(session, id) else {
                throw TransferError.protocolViolation("expected piece_deleted")
            }
            return d.existed
        }
    }

    /// Audits leaf `leaf` of a piece: returns the leaf's bytes and its Merkle
    /// path, NOT yet checked; verify with
    /// `MerkleTree.verify(proof, leafData: leaf, root: root)` (and that
    /// `proof.leaves == leaf..<leaf+1`, `proof.leafCount` matches the piece).
    public func audit(pieceID: Hash256, leaf: Int) async throws(TransferError) -> (leaf: [UInt8], proof: MerkleProof) {
        try await perform("audit piece \(pieceID.short) leaf \(leaf)") { session, id in
            var m = Granary_Audit(); m.pieceID = Data(pieceID.bytes); m.leafIndex = UInt64(max(0, leaf))
            try await session.send(Self.request(id, .audit(m)))
            guard case let .auditProof(a) = try await Self.response(session, id) else {
                throw TransferError.protocolViolation("expected audit_proof")
            }
            guard let proof = a.proof.decoded(), a.leaf.count <= MerkleTree.leafSize else {
                throw TransferError.badProof("malformed audit proof")
            }
            return ([UInt8](a.leaf), proof)
        }
    }

    /// Sends a renter-signed voucher envelope (kind `.voucher`).
    public func sendVoucher(envelope: Granary_SignedEnvelope) async throws(TransferError) -> VoucherReceipt {
        try await perform("send voucher") { session, id in
            var m = Granary_PayVoucher(); m.voucher = envelope
            try await session.send(Self.request(id, .payVoucher(m)))
            guard case let .voucherAccepted(v) = try await Self.response(session, id) else {
                throw TransferError.protocolViolation("expected voucher_accepted")
            }
            return VoucherReceipt(cumulativeAmount: v.cumulativeAmount, sequence: v.sequence)
        }
    }
}

/// What the farmer confirmed after storing a piece.
public struct StoredPiece: Sendable, Equatable {
    public let pieceID: Hash256
    public let size: Int
    /// Bytes the contract uses on this farmer after the upload.
    public let contractBytesUsed: UInt64

    public init(pieceID: Hash256, size: Int, contractBytesUsed: UInt64) {
        self.pieceID = pieceID; self.size = size; self.contractBytesUsed = contractBytesUsed
    }
}

/// The voucher the farmer now holds as the highest for its contract.
public struct VoucherReceipt: Sendable, Equatable {
    public let cumulativeAmount: UInt64
    public let sequence: UInt64

    public init(cumulativeAmount: UInt64, sequence: UInt64) {
        self.cumulativeAmount = cumulativeAmount; self.sequence = sequence
    }
}

/// Closes a channel when a deadline passes unless cancelled first.
///
/// With `resetByProgress` the deadline moves with the connection: it
/// passes only once the peer acknowledged no byte and sent none for
/// `limit` (read from the kernel's TCP counters about four times per
/// limit, at most once a second). A transfer over a slow link then takes
/// as long as it needs, and one that stopped moving still fails.
final class Watchdog: @unchecked Sendable {
    // `firedFlag` is written by the timer task and read by the owner: guarded by `lock`.
    private let lock = NSLock()
    private var firedFlag = false
    private var task: Task<Void, Never>?

    init(channel: Channel, after limit: Duration, resetByProgress: Bool = false) {
        task = Task { [weak self] in
            if resetByProgress {
                let clock = ContinuousClock()
                let poll = min(.seconds(1), limit / 4)
                var last = await SocketProgress.of(channel)
                var lastMove = clock.now
                while clock.now - lastMove < limit {
                    do { try await Task.sleep(for: poll) } catch { return }
                    let now = await SocketProgress.of(channel)
                    if now != last { last = now; lastMove = clock.now }
                }
            } else {
                do { try await Task.sleep(for: limit) } catch { return }
            }
            self?.lock.withLock { self?.firedFlag = true }
            channel.close(promise: nil)
        }
    }

    var fired: Bool { lock.withLock { firedFlag } }
    func cancel() { task?.cancel() }
}
