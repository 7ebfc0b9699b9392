import CGranaryShim
import NIOCore

/// The byte counters of a TCP connection as the kernel keeps them: bytes
/// the peer acknowledged (sent and arrived) and bytes received from it.
///
/// A transfer's progress is judged by these rather than by write calls:
/// a write finishes once its bytes are in the socket buffer, which on a
/// slow link holds megabytes that take minutes to leave.
struct SocketProgress: Equatable, Sendable {
    var acknowledged: UInt64
    var received: UInt64

    /// Room for Linux's struct tcp_info; getsockopt copies the smaller of
    /// the kernel's size and this one, into zeroed memory.
    private struct RawTCPInfo: Sendable {
        var words: InlineArray<64, UInt64> = .init(repeating: 0)
    }

    private static let layout: (acknowledged: Int, received: Int) = {
        var acked: UInt32 = 0, received: UInt32 = 0
        granary_tcp_info_layout(&acked, &received)
        return (Int(acked), Int(received))
    }()

    /// The counters of `channel`'s socket; nil when it has none (an
    /// embedded channel) or the kernel does not say (before Linux 4.1).
    static func of(_ channel: Channel) async -> SocketProgress? {
        guard let provider = channel as? SocketOptionProvider,
              layout.received + 8 <= MemoryLayout<RawTCPInfo>.size else { return nil }
        let future: EventLoopFuture<RawTCPInfo> = provider.unsafeGetSocketOption(level: .tcp, name: .tcp_info)
        guard let info = try? await future.get() else { return nil }
        return withUnsafeBytes(of: info.words) { raw in
            SocketProgress(acknowledged: raw.load(fromByteOffset: layout.acknowledged, as: UInt64.self),
                           received: raw.load(fromByteOffset: layout.received, as: UInt64.self))
        }
    }
}
