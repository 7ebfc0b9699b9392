import Foundation
import GranaryCore
import Logging
import NIOCore
import NIOPosix

/// Accepts transfer connections, runs the server side of the handshake on
/// each, and hands every authenticated session to `handler` in its own task.
/// A peer that fails the handshake (bad envelope, node ID not matching its
/// key, short proof of work, wrong expected farmer, garbage) gets a REFUSAL
/// frame saying why, and is disconnected; other sessions are untouched.
public final class TransferServer: Sendable {
    public typealias Handler = @Sendable (TransferSession) async -> Void

    private let serverChannel: NIOAsyncChannel<NIOAsyncChannel<Frame, Frame>, Never>
    private let identity: NodeIdentity
    private let difficulty: Int
    private let maxFrameLength: Int
    private let handshakeTimeout: Duration
    private let logger: Logger
    private let handler: Handler
    private let connections = ConnectionRegistry()
    private let maxConnections: Int

    /// The address actually bound (port 0 becomes a real port).
    public let host: String
    public let port: Int

    /// Binds `host:port` (port 0: any free port). Call `run()` to serve.
    public init(host: String, port: Int, identity: NodeIdentity, difficulty: Int = NodeIdentity.configuredDifficulty,
                maxFrameLength: Int = FrameLimits.defaultMaxFrameLength, handshakeTimeout: Duration = .seconds(10),
                idleTimeout: TimeAmount = .minutes(5), maxConnections: Int = 512, logger: Logger = Logger(label: "granary.wire"),
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, handler: @escaping Handler) async throws {
        serverChannel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Idle means neither side moved a byte: a piece read by a renter on
                    // a slow link sends for minutes without receiving anything.
                    try channel.pipeline.syncOperations.addHandler(IdleStateHandler(allTimeout: idleTimeout))
                    try channel.pipeline.syncOperations.addHandler(CloseOnIdle())
                    return try TransferPipeline.configure(channel, maxFrameLength: maxFrameLength)
                }
            }
        self.identity = identity; self.difficulty = difficulty; self.maxFrameLength = maxFrameLength
        self.handshakeTimeout = handshakeTimeout; self.logger = logger; self.handler = handler
        self.maxConnections = maxConnections
        self.host = serverChannel.channel.localAddress?.ipAddress ?? host
        self.port = serverChannel.channel.localAddress?.port ?? port
    }

    /// Serves until `close()`; each connection runs in its own child task.
    public func run() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            try await serverChannel.executeThenClose { inbound in
                for try await connection in inbound {
                    group.addTask { await self.serve(connection) }
                }
            }
        }
    }

    /// Stops accepting and closes every open session; `run()` returns once
    /// their tasks have finished.
    public func close() async {
        try? await serverChannel.channel.close()
        for channel in connections.all() { try? await channel.close() }
    }

    private func serve(_ connection: NIOAsyncChannel<Frame, Frame>) async {
        let remote = connection.channel.remoteAddress?.description ?? "?"
        let (key, open) = connections.add(connection.channel)
        defer { connections.remove(key) }
        try? await connection.executeThenClose { inbound, outbound in
            guard open <= maxConnections else {
                logger.warning("refused transfer peer", metadata: ["remote": "\(remote)", "reason": "\(open - 1) connections open, limit \(maxConnections)"])
                if let bytes: [UInt8] = try? Granary_TransferError(.internal, "farmer is at its limit of \(maxConnections) connections; retry later").serializedBytes() {
                    try? await outbound.write(Frame(type: .refusal, payload: ByteBuffer(bytes: bytes)))
                }
                return
            }
            var iterator = inbound.makeAsyncIterator()
            let session: TransferSession
            let watchdog = Watchdog(channel: connection.channel, after: handshakeTimeout)
            do {
                guard let first = try await iterator.next() else { return }
                guard first.type == .hello else { throw SessionError.handshake("first frame is \(first.type), not HELLO") }
                let (reply, peer, cipher) = try ServerHandshake(identity: identity, difficulty: difficulty)
                    .respond(to: first.payload, maxFrameLength: maxFrameLength)
                try await outbound.write(Frame(type: .hello, payload: reply))
                watchdog.cancel()
                session = TransferSession(peer: peer, cipher: cipher, inbound: iterator, outbound: outbound, maxFrameLength: maxFrameLength)
            } catch {
                watchdog.cancel()
                let reason = watchdog.fired ? "no handshake within \(handshakeTimeout)" : Self.describe(error)
                logger.warning("refused transfer peer", metadata: ["remote": "\(remote)", "reason": "\(reason)"])
                let code: Granary_TransferError.Code
                switch error {
                case SessionError.wrongPeer: code = .wrongPeer
                case FrameError.tooLong: code = .frameTooLarge
                case is FrameError: code = .malformed
                default: code = .unauthenticated
                }
                if let bytes: [UInt8] = try? Granary_TransferError(code, reason).serializedBytes() {
                    try? await outbound.write(Frame(type: .refusal, payload: ByteBuffer(bytes: bytes)))
                }
                return
            }
            logger.debug("transfer session open", metadata: ["remote": "\(remote)", "peer": "\(session.peer.id.short)"])
            await handler(session)
        }
    }

    static func describe(_ error: any Error) -> String {
        String(describing: error)
    }
}

/// Closes a connection that moved nothing either way for the idle timeout.
final class CloseOnIdle: ChannelInboundHandler, Sendable {
    typealias InboundIn = NIOAny
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent { context.close(promise: nil) } else { context.fireUserInboundEventTriggered(event) }
    }
}

/// The open connections, so `close()` can end them. Guarded by a lock:
/// touched by every connection task.
final class ConnectionRegistry: @unchecked Sendable {
    private let lock = NSLock()
    private var channels: [Int: Channel] = [:]
    private var nextKey = 0

    /// Registers a connection; returns its key and how many are open now.
    func add(_ channel: Channel) -> (Int, Int) {
        lock.withLock { nextKey += 1; channels[nextKey] = channel; return (nextKey, channels.count) }
    }
    func remove(_ key: Int) { lock.withLock { _ = channels.removeValue(forKey: key) } }
    func all() -> [Channel] { lock.withLock { Array(channels.values) } }
}
