import NIOCore
import Synchronization

/// A running total of bytes, shared across transfers and threads. The
/// mount's reads watch the bytes received from farmers: while the total
/// grows they keep waiting (a slow link), and they give up once it stops.
public final class ByteCounter: Sendable {
    private let value = Atomic<UInt64>(0)

    public init() {}

    public func add(_ bytes: Int) {
        value.wrappingAdd(UInt64(max(0, bytes)), ordering: .relaxed)
    }

    public var total: UInt64 { value.load(ordering: .relaxed) }
}

/// Counts the bytes a connection receives as they arrive, before framing:
/// a 1 MiB frame over a slow link takes seconds, and a reader watching
/// for progress must see its bytes trickle in, not only once it is whole.
final class ReceivedBytesCounter: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let counter: ByteCounter

    init(_ counter: ByteCounter) { self.counter = counter }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        counter.add(unwrapInboundIn(data).readableBytes)
        context.fireChannelRead(data)
    }
}
