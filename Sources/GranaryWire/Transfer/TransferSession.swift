import GranaryCore
import NIOCore
import SwiftProtobuf

/// One authenticated session over one TCP connection, after the handshake:
/// sealed control messages in, sealed control messages out, and unsealed
/// DATA frames of piece bytes. Used by exactly one task at a time (the
/// client actor, or the farmer's per-connection task), so it holds its
/// mutable state (cipher counters, inbound iterator) without a lock; its
/// methods run on the caller's isolation (`nonisolated(nonsending)`).
public final class TransferSession {
    /// The authenticated peer: node ID = BLAKE2b(key), proof of work checked.
    public let peer: NodePublicKey
    public let maxFrameLength: Int
    private var cipher: SessionCipher
    private var inbound: NIOAsyncChannelInboundStream<Frame>.AsyncIterator
    private let outbound: NIOAsyncChannelOutboundWriter<Frame>
    private let allocator = ByteBufferAllocator()
    /// Set once the session broke; every later call fails.
    public private(set) var failure: SessionError?

    init(peer: NodePublicKey, cipher: SessionCipher, inbound: NIOAsyncChannelInboundStream<Frame>.AsyncIterator,
         outbound: NIOAsyncChannelOutboundWriter<Frame>, maxFrameLength: Int) {
        self.peer = peer; self.cipher = cipher; self.inbound = inbound; self.outbound = outbound
        self.maxFrameLength = maxFrameLength
    }

    /// Seals and sends one control message. Works after an inbound failure
    /// too, so a farmer can say why it ends the session.
    nonisolated(nonsending) public func send<M: SwiftProtobuf.Message>(_ message: M) async throws {
        let bytes: [UInt8] = try message.serializedBytes()
        guard bytes.count + 17 <= maxFrameLength else {
            throw SessionError.unexpectedFrame("control message of \(bytes.count) bytes exceeds the frame maximum")
        }
        try await outbound.write(cipher.seal(bytes, allocator: allocator))
    }

    /// Sends piece bytes as DATA frames of at most `FrameLimits.dataChunk`.
    nonisolated(nonsending) public func sendData(_ bytes: ByteBuffer) async throws {
        if let failure { throw failure }
        var rest = bytes
        var frames: [Frame] = []
        frames.reserveCapacity(rest.readableBytes / FrameLimits.dataChunk + 1)
        while rest.readableBytes > 0 {
            frames.append(Frame(type: .data, payload: rest.readSlice(length: min(FrameLimits.dataChunk, rest.readableBytes))!))
        }
        try await outbound.write(contentsOf: frames)
    }

    /// The next frame, or nil when the peer closed cleanly between frames.
    nonisolated(nonsending) func nextFrame() async throws(SessionError) -> Frame? {
        if let failure { throw failure }
        do {
            // The iterator is Sendable; iterate a local copy and store it back
            // (one task uses a session at a time).
            var iterator = inbound
            defer { inbound = iterator }
            return try await iterator.next(isolation: #isolation)
        } catch let error as FrameError {
            return try fail(.frame(error))
        } catch {
            return try fail(.closed("\(error)"))
        }
    }

    private func fail<T>(_ error: SessionError) throws(SessionError) -> T {
        failure = error
        throw error
    }

    /// The next control message, or nil at a clean end of the connection.
    /// A DATA frame here, or a frame that does not open, ends the session.
    nonisolated(nonsending) public func receive<M: SwiftProtobuf.Message>(_ type: M.Type) async throws(SessionError) -> M? {
        guard let frame = try await nextFrame() else { return nil }
        guard frame.type == .sealed else {
            return try fail(.unexpectedFrame("\(frame.type) frame where a sealed control frame was expected"))
        }
        let plain: [UInt8]
        do { plain = try cipher.open(frame.payload) } catch { return try fail(error) }
        do { return try M(serializedBytes: plain) } catch {
            return try fail(.unexpectedFrame("sealed frame does not hold a \(M.self)"))
        }
    }

    /// The next DATA frame's bytes; anything else ends the session.
    nonisolated(nonsending) public func receiveData() async throws(SessionError) -> ByteBuffer {
        guard let frame = try await nextFrame() else { return try fail(.closed("peer closed while sending piece bytes")) }
        guard frame.type == .data else {
            return try fail(.unexpectedFrame("\(frame.type) frame where piece bytes were expected"))
        }
        return frame.payload
    }

    /// Ends the outbound side (the connection closes when the owner returns).
    public func finish() { outbound.finish() }
}

extension FrameType: CustomStringConvertible {
    public var description: String {
        switch self {
        case .hello: return "HELLO"
        case .sealed: return "SEALED"
        case .data: return "DATA"
        case .refusal: return "REFUSAL"
        }
    }
}

/// Pipeline setup shared by client and server.
enum TransferPipeline {
    static func configure(_ channel: Channel, maxFrameLength: Int, received: ByteCounter? = nil) throws -> NIOAsyncChannel<Frame, Frame> {
        let ops = channel.pipeline.syncOperations
        // Reads of up to 256 KiB (NIO's default stops at 64 KiB): a 1 MiB
        // DATA frame takes four read calls, not sixteen. The read buffer
        // is reused, since FrameReader copies out of it.
        try channel.syncOptions?.setOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 16 * 1024, maximum: 256 * 1024))
        if let received { try ops.addHandler(ReceivedBytesCounter(received)) }
        try ops.addHandler(FrameReader(maxFrameLength: maxFrameLength))
        try ops.addHandler(FrameEncoder())
        return try NIOAsyncChannel<Frame, Frame>(
            wrappingChannelSynchronously: channel,
            configuration: .init(backPressureStrategy: .init(lowWatermark: 2, highWatermark: 8)))
    }
}
