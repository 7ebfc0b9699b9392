import Foundation
import Logging
import NIOCore
import NIOPosix

/// Real UDP: SwiftNIO's DatagramChannel receives, and datagrams go out by
/// `sendto` on a duplicate of its socket.
///
/// Why not `channel.writeAndFlush`: NIO closes a datagram channel on any
/// send error but EMSGSIZE and EHOSTUNREACH. One EPERM (a firewall rule
/// dropping output), ENETUNREACH (a route gone with a link), EACCES (a peer
/// naming a broadcast address) or EAFNOSUPPORT (an IPv6 contact on an IPv4
/// socket) would leave the node running but deaf for good. Here a failed
/// send loses that datagram only, as UDP may, and is counted and logged.
public final class UDPTransport: DHTTransport, @unchecked Sendable {
    // @unchecked: `channel` and `localAddress` are set once before the object
    // is shared; `sendFD`, the address cache and the failure counts are
    // guarded by `lock`.
    private let channel: Channel
    public let localAddress: DHTAddress
    private let slot: ReceiverSlot
    private let lock = NSLock()
    /// The socket's duplicate that sends; -1 once closed. Sends hold `lock`
    /// so that `close` cannot free the number while one is in flight.
    private var sendFD: Int32
    private var resolved: [DHTAddress: SocketAddress] = [:]
    private var failures = SendFailures()
    private let logger = Logger(label: "granary.dht.udp")

    /// Receive buffer per datagram: larger than any datagram we accept, so
    /// the kernel never truncates silently and the size check sees the truth.
    static let receiveBufferBytes = 65_536

    private init(channel: Channel, localAddress: DHTAddress, slot: ReceiverSlot, sendFD: Int32) {
        self.channel = channel
        self.localAddress = localAddress
        self.slot = slot
        self.sendFD = sendFD
    }

    /// Binds a UDP socket on `host:port` (port 0 picks a free one).
    public static func bind(host: String, port: Int,
                            group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> UDPTransport {
        func failure(_ what: String) -> DHTError { .transport("cannot bind UDP \(host):\(port): \(what)") }
        let address: SocketAddress
        do { address = try SocketAddress.makeAddressResolvingHost(host, port: port) } catch { throw failure("\(error)") }
        // No SO_REUSEADDR: on Linux two UDP sockets that both set it can be
        // given the same ephemeral port, and datagrams go to either.
        let fd = socket(address.protocol.rawValue, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw failure(String(cString: strerror(errno))) }
        // Larger kernel buffers absorb bursts when many nodes share a host.
        var receiveBuffer: Int32 = 1 << 21, sendBuffer: Int32 = 1 << 20
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receiveBuffer, socklen_t(MemoryLayout<Int32>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sendBuffer, socklen_t(MemoryLayout<Int32>.size))
        let bound = address.withSockAddr { Glibc.bind(fd, $0, socklen_t($1)) }
        let sendFD = bound == 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1
        guard bound == 0, sendFD >= 0 else {
            let e = errno
            Glibc.close(fd)
            throw failure(String(cString: strerror(e)))
        }
        let slot = ReceiverSlot()
        let bootstrap = DatagramBootstrap(group: group)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: receiveBufferBytes))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(DatagramInboundHandler(slot: slot))
                }
            }
        // From here the channel owns `fd` (and closes it).
        let channel: Channel
        do {
            channel = try await bootstrap.withBoundSocket(fd).get()
        } catch {
            Glibc.close(sendFD)
            throw failure("\(error)")
        }
        guard let boundPort = channel.localAddress?.port else {
            Glibc.close(sendFD)
            try? await channel.close().get()
            throw failure("socket has no local address after bind")
        }
        return UDPTransport(channel: channel, localAddress: DHTAddress(host: host, port: boundPort), slot: slot, sendFD: sendFD)
    }

    public func setReceiver(_ receiver: @escaping DatagramReceiver) { slot.set(receiver) }

    public func send(_ bytes: [UInt8], to address: DHTAddress) {
        lock.lock()
        let cached = resolved[address]
        lock.unlock()
        let remote: SocketAddress
        if let cached {
            remote = cached
        } else {
            do {
                remote = try SocketAddress.makeAddressResolvingHost(address.host, port: address.port)
            } catch {
                logger.debug("cannot resolve \(address): \(error)")
                return
            }
            lock.lock()
            if resolved.count > 10_000 { resolved.removeAll() }
            resolved[address] = remote
            lock.unlock()
        }
        lock.lock()
        defer { lock.unlock() }
        guard sendFD >= 0 else { return }
        let sent = bytes.withUnsafeBytes { buffer in
            remote.withSockAddr { sockaddr, length in
                sendto(sendFD, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL), sockaddr, socklen_t(length))
            }
        }
        if sent < 0, let report = failures.record(errno: errno, to: address) { logger.notice("\(report)") }
    }

    /// Datagrams that could not be sent since the transport started.
    public var failedSends: Int {
        lock.lock(); defer { lock.unlock() }
        return failures.total
    }

    private func closeSender() {
        lock.lock()
        if sendFD >= 0 { Glibc.close(sendFD); sendFD = -1 }
        lock.unlock()
    }

    public func close() async {
        slot.clear()
        closeSender()
        try? await channel.close().get()
    }
}

/// Counts failed sends and says when one is worth a log line: the first,
/// then at most one a minute, naming how many failed meanwhile.
struct SendFailures {
    private(set) var total = 0
    private var sinceReport = 0
    private var lastReport: ContinuousClock.Instant?

    mutating func record(errno code: Int32, to address: DHTAddress, now: ContinuousClock.Instant = .now) -> String? {
        total += 1
        sinceReport += 1
        if let last = lastReport, now - last < .seconds(60) { return nil }
        lastReport = now
        defer { sinceReport = 0 }
        let others = sinceReport > 1 ? " (\(sinceReport - 1) other sends failed since the last report)" : ""
        return "UDP send to \(address) failed: \(String(cString: strerror(code))); the datagram is dropped and the node keeps serving\(others)"
    }
}

/// Hands each datagram's bytes and sender to the receiver slot. Runs on the
/// channel's event loop; the receiver does the checks and hops to the node.
private final class DatagramInboundHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    private let slot: ReceiverSlot

    init(slot: ReceiverSlot) { self.slot = slot }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let receiver = slot.get() else { return }
        var buffer = envelope.data
        let bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
        let from = DHTAddress(host: envelope.remoteAddress.ipAddress ?? "?", port: envelope.remoteAddress.port ?? 0)
        receiver(bytes, from)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // ICMP port unreachable and the like surface here on a connected
        // socket only; an unconnected UDP socket keeps serving.
    }
}
