import NIOCore

/// The kinds of frame on a transfer connection (Protos/transfer.proto, FRAMES).
public enum FrameType: UInt8, Sendable {
    /// A signed handshake envelope; the first frame in each direction.
    case hello = 1
    /// A Request or Response sealed with the session keys.
    case sealed = 2
    /// Raw piece bytes, bound by the piece's Merkle root rather than sealed.
    case data = 3
    /// Plaintext reason for refusing a peer before the handshake completed.
    case refusal = 4
}

/// One frame: `length (u32 BE) || type (u8) || payload`, where `length`
/// counts the type byte and the payload.
public struct Frame: Sendable {
    public var type: FrameType
    public var payload: ByteBuffer

    public init(type: FrameType, payload: ByteBuffer) {
        self.type = type; self.payload = payload
    }

    /// Bytes before the payload: 4 of length, 1 of type.
    public static let headerLength = 5

    /// The frame header as it goes on the wire (also the associated data of a
    /// sealed frame).
    public static func header(type: FrameType, payloadLength: Int) -> [UInt8] {
        let length = UInt32(payloadLength + 1)
        return [UInt8(length >> 24), UInt8((length >> 16) & 0xff), UInt8((length >> 8) & 0xff), UInt8(length & 0xff), type.rawValue]
    }
}

/// Size limits of the transfer protocol.
public enum FrameLimits {
    /// Largest payload of a DATA frame a sender produces (1 MiB keeps
    /// latency and buffers small; receivers accept up to `maxDataPayload`).
    public static let dataChunk = 1 << 20
    /// Largest piece bytes one DATA frame may carry.
    public static let maxDataPayload = 4 << 20
    /// Default largest frame length (type + payload): 4 MiB of data plus room
    /// for a header.
    public static let defaultMaxFrameLength = maxDataPayload + 64 * 1024
}

/// Why a byte stream is not a valid sequence of frames. Any of these ends the
/// session.
public enum FrameError: Error, Equatable, Sendable, CustomStringConvertible {
    case tooLong(length: Int, maximum: Int)
    case empty
    case unknownType(UInt8)
    case truncated(have: Int, need: Int)

    public var description: String {
        switch self {
        case let .tooLong(length, maximum): return "frame of \(length) bytes exceeds the maximum of \(maximum) bytes"
        case .empty: return "zero-length frame"
        case let .unknownType(t): return "unknown frame type \(t)"
        case let .truncated(have, need): return "connection ended inside a frame (\(have) of \(need) bytes)"
        }
    }
}

/// Splits a byte stream into frames. The length is checked against the
/// maximum before a single payload byte is buffered or allocated, so a
/// peer cannot make the receiver reserve memory it never sends.
public struct FrameParser: Sendable {
    public let maxFrameLength: Int

    public init(maxFrameLength: Int = FrameLimits.defaultMaxFrameLength) {
        self.maxFrameLength = maxFrameLength
    }

    /// The next complete frame at the start of `buffer` (consumed), nil when
    /// more bytes are needed, or an error for an invalid frame.
    public func next(from buffer: inout ByteBuffer) throws(FrameError) -> Frame? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        let n = Int(length)
        guard n > 0 else { throw .empty }
        guard n <= maxFrameLength else { throw .tooLong(length: n, maximum: maxFrameLength) }
        guard let typeByte = buffer.getInteger(at: buffer.readerIndex + 4, as: UInt8.self) else { return nil }
        guard let type = FrameType(rawValue: typeByte) else { throw .unknownType(typeByte) }
        guard buffer.readableBytes >= 4 + n else { return nil }
        buffer.moveReaderIndex(forwardBy: Frame.headerLength)
        let payload = buffer.readSlice(length: n - 1)!
        return Frame(type: type, payload: payload)
    }

    /// Bytes a partial frame at the start of `buffer` still needs (for the
    /// truncation error at end of stream).
    public func expectedLength(of buffer: ByteBuffer) -> Int {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return 4 }
        return 4 + Int(length)
    }
}

/// NIO decoder: bytes -> `Frame`, checked by `FrameParser`.
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = Frame
    let parser: FrameParser

    public init(maxFrameLength: Int = FrameLimits.defaultMaxFrameLength) {
        parser = FrameParser(maxFrameLength: maxFrameLength)
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try parser.next(from: &buffer) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        if buffer.readableBytes > 0 {
            let have = buffer.readableBytes
            let need = parser.expectedLength(of: buffer)
            buffer.moveReaderIndex(forwardBy: have)
            throw FrameError.truncated(have: have, need: need)
        }
        return .needMoreData
    }
}

/// NIO encoder: `Frame` -> header bytes + the payload buffer as is (no
/// copy of piece bytes; NIO gathers both into one writev).
public final class FrameEncoder: ChannelOutboundHandler {
    public typealias OutboundIn = Frame
    public typealias OutboundOut = ByteBuffer

    public init() {}

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = unwrapOutboundIn(data)
        var header = context.channel.allocator.buffer(capacity: Frame.headerLength)
        header.writeInteger(UInt32(frame.payload.readableBytes + 1))
        header.writeInteger(frame.type.rawValue)
        context.write(wrapOutboundOut(header), promise: nil)
        context.write(wrapOutboundOut(frame.payload), promise: promise)
    }
}
