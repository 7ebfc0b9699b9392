import NIOCore

/// NIO inbound handler: bytes -> `Frame`, copying every payload byte exactly
/// once, from the socket's read buffer into a buffer of the frame's size.
///
/// Replaces `ByteToMessageHandler(FrameDecoder)` on transfer connections:
/// that one appends reads to a cumulation buffer and hands out slices of
/// it, so while a 1 MiB DATA slice is still being hashed the next read
/// copies the cumulation again (copy on write) into freshly faulted pages;
/// profiling a farmer under upload put those copies and page faults at a
/// fifth of its CPU. The checks are `FrameParser`'s: the length is checked
/// against the maximum (and the type byte read) before the payload buffer
/// is allocated, so a peer cannot make the receiver reserve memory it
/// never sends; a broken stream fires one `FrameError` and nothing after.
final class FrameReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = Frame

    private let maxFrameLength: Int
    /// Header bytes of the next frame while fewer than 5 have arrived.
    private var header: [UInt8] = []
    /// The frame being filled: its type, the payload so far, the bytes still due.
    private var pending: (type: FrameType, payload: ByteBuffer, missing: Int)?
    private var failed = false

    init(maxFrameLength: Int) {
        self.maxFrameLength = maxFrameLength
        header.reserveCapacity(Frame.headerLength)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        var input = unwrapInboundIn(data)
        do {
            while input.readableBytes > 0 {
                if pending == nil { try readHeader(from: &input, context: context) }
                guard var frame = pending else { continue }
                pending = nil  // the payload buffer stays uniquely referenced while it is written
                let take = min(frame.missing, input.readableBytes)
                frame.payload.writeImmutableBuffer(input.readSlice(length: take)!)
                frame.missing -= take
                if frame.missing == 0 {
                    context.fireChannelRead(wrapInboundOut(Frame(type: frame.type, payload: frame.payload)))
                } else {
                    pending = frame
                }
            }
        } catch {
            failed = true
            pending = nil
            context.fireErrorCaught(error)
        }
    }

    /// Takes header bytes; once all 5 are here, checks them and opens the
    /// frame (a frame without payload is delivered at once).
    private func readHeader(from input: inout ByteBuffer, context: ChannelHandlerContext) throws(FrameError) {
        if header.isEmpty, input.readableBytes >= Frame.headerLength {
            header.append(contentsOf: input.readBytes(length: Frame.headerLength)!)
        } else {
            let take = min(Frame.headerLength - header.count, input.readableBytes)
            header.append(contentsOf: input.readBytes(length: take)!)
            // Too short to know the type, but a bad length is refused as soon as it is known.
            if header.count >= 4 { _ = try check(length: header) }
            guard header.count == Frame.headerLength else { return }
        }
        let n = try check(length: header)
        guard let type = FrameType(rawValue: header[4]) else { throw .unknownType(header[4]) }
        header.removeAll(keepingCapacity: true)
        let payload = context.channel.allocator.buffer(capacity: n - 1)
        if n == 1 {
            context.fireChannelRead(wrapInboundOut(Frame(type: type, payload: payload)))
        } else {
            pending = (type, payload, n - 1)
        }
    }

    private func check(length bytes: [UInt8]) throws(FrameError) -> Int {
        let n = Int(bytes[0]) << 24 | Int(bytes[1]) << 16 | Int(bytes[2]) << 8 | Int(bytes[3])
        guard n > 0 else { throw .empty }
        guard n <= maxFrameLength else { throw .tooLong(length: n, maximum: maxFrameLength) }
        return n
    }

    /// The peer closed inside a frame: say so before the end of the stream.
    func channelInactive(context: ChannelHandlerContext) {
        reportTruncation(context: context)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .inputClosed? = event as? ChannelEvent { reportTruncation(context: context) }
        context.fireUserInboundEventTriggered(event)
    }

    private func reportTruncation(context: ChannelHandlerContext) {
        guard !failed else { return }
        let have: Int, need: Int
        if let frame = pending {
            have = Frame.headerLength + frame.payload.readableBytes
            need = have + frame.missing
        } else if !header.isEmpty {
            have = header.count
            need = header.count >= 4 ? 4 + (Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])) : 4
        } else {
            return
        }
        failed = true
        pending = nil
        header.removeAll()
        context.fireErrorCaught(FrameError.truncated(have: have, need: need))
    }
}
