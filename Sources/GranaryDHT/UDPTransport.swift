import Foundation
import Logging
import NIOCore
import NIOPosix

/// Real UDP over SwiftNIO's DatagramBootstrap.
public final class UDPTransport: DHTTransport, @unchecked Sendable {
    // @unchecked: `channel` and `localAddress` are set once in `bind` before
    // the object is shared; the resolved-address cache is guarded by `lock`.
    private let channel: Channel
    public let localAddress: DHTAddress
    private let slot: ReceiverSlot
    private let lock = NSLock()
    private var resolved: [DHTAddress: SocketAddress] = [:]
    private let logger = Logger(label: "granary.dht.udp")

    /// Receive buffer per datagram: larger than any datagram we accept, so
    /// the kernel never truncates silently and the size check sees the truth.
    static let receiveBufferBytes = 65_536

    private init(channel: Channel, localAddress: DHTAddress, slot: ReceiverSlot) {
        self.channel = channel
        self.localAddress = localAddress
        self.slot = slot
    }

    /// Binds a UDP socket on `host:port` (port 0 picks a free one).
    public static func bind(host: String, port: Int,
                            group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> UDPTransport {
        let slot = ReceiverSlot()
        let bootstrap = DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: receiveBufferBytes))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(DatagramInboundHandler(slot: slot))
                }
            }
        let channel: Channel
        do {
            channel = try await bootstrap.bind(host: host, port: port).get()
        } catch {
            throw DHTError.transport("cannot bind UDP \(host):\(port): \(error)")
        }
        // A larger kernel buffer absorbs bursts when many nodes share a host.
        _ = try? await channel.setOption(.socketOption(.so_rcvbuf), value: 1 << 21).get()
        guard let bound = channel.localAddress, let boundPort = bound.port else {
            throw DHTError.transport("socket has no local address after bind")
        }
        return UDPTransport(channel: channel, localAddress: DHTAddress(host: host, port: boundPort), slot: slot)
    }

    public func setReceiver(_ receiver: @escaping DatagramReceiver) { slot.set(receiver) }

    public func send(_ bytes: [UInt8], to address: DHTAddress) {
        let remote: SocketAddress
        lock.lock()
        let cached = resolved[address]
        lock.unlock()
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
        let buffer = channel.allocator.buffer(bytes: bytes)
        let envelope = AddressedEnvelope(remoteAddress: remote, data: buffer)
        channel.writeAndFlush(envelope, promise: nil)
    }

    public func close() async {
        slot.clear()
        try? await channel.close().get()
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
