import CSodium
import NIOCore

/// Seals and opens the control frames of one session with ChaCha20-Poly1305
/// (IETF) under the two crypto_kx session keys, one per direction. Each
/// direction numbers its sealed frames from 0; the number is the nonce, so a
/// frame replayed, reordered, dropped or altered fails to open, and the
/// session ends. Not thread-safe: one per session, used by one task.
public struct SessionCipher: Sendable {
    private let sendKey: [UInt8]
    private let receiveKey: [UInt8]
    public private(set) var sentCount: UInt64 = 0
    public private(set) var receivedCount: UInt64 = 0

    static let keyBytes = 32
    static let tagBytes = 16

    public init(sendKey: [UInt8], receiveKey: [UInt8]) {
        precondition(sendKey.count == Self.keyBytes && receiveKey.count == Self.keyBytes)
        self.sendKey = sendKey; self.receiveKey = receiveKey
    }

    private static func nonce(_ counter: UInt64) -> [UInt8] {
        var n = [UInt8](repeating: 0, count: 12)
        withUnsafeBytes(of: counter.littleEndian) { for i in 0..<8 { n[i] = $0[i] } }
        return n
    }

    /// Seals `plaintext` as the next outgoing frame's payload.
    public mutating func seal(_ plaintext: [UInt8], allocator: ByteBufferAllocator = ByteBufferAllocator()) -> Frame {
        let header = Frame.header(type: .sealed, payloadLength: plaintext.count + Self.tagBytes)
        let nonce = Self.nonce(sentCount)
        sentCount += 1
        var out = allocator.buffer(capacity: plaintext.count + Self.tagBytes)
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: plaintext.count + Self.tagBytes) { dst in
            var written: UInt64 = 0
            _ = crypto_aead_chacha20poly1305_ietf_encrypt(
                dst.baseAddress!.assumingMemoryBound(to: UInt8.self), &written,
                plaintext, UInt64(plaintext.count), header, UInt64(header.count), nil, nonce, sendKey)
            return Int(written)
        }
        return Frame(type: .sealed, payload: out)
    }

    /// Opens the payload of the next incoming sealed frame; throws when it
    /// is not exactly the frame the peer sealed next.
    public mutating func open(_ payload: ByteBuffer) throws(SessionError) -> [UInt8] {
        let count = payload.readableBytes
        guard count >= Self.tagBytes else { throw .unsealFailed(frame: receivedCount) }
        let header = Frame.header(type: .sealed, payloadLength: count)
        let nonce = Self.nonce(receivedCount)
        var plain = [UInt8](repeating: 0, count: count - Self.tagBytes)
        let rc = payload.withUnsafeReadableBytes { src in
            plain.withUnsafeMutableBufferPointer { dst in
                var written: UInt64 = 0
                return crypto_aead_chacha20poly1305_ietf_decrypt(
                    dst.baseAddress, &written, nil,
                    src.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(count),
                    header, UInt64(header.count), nonce, receiveKey)
            }
        }
        guard rc == 0 else { throw .unsealFailed(frame: receivedCount) }
        receivedCount += 1
        return plain
    }
}

/// Why a session ended or a handshake failed.
public enum SessionError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A sealed frame did not open: altered, replayed, reordered or dropped.
    case unsealFailed(frame: UInt64)
    /// The peer's handshake was not acceptable.
    case handshake(String)
    /// The peer is not the node the client asked for.
    case wrongPeer(expected: String, actual: String)
    /// A frame that does not belong here (e.g. DATA without a request).
    case unexpectedFrame(String)
    case frame(FrameError)
    /// The peer closed the connection.
    case closed(String)

    public var description: String {
        switch self {
        case let .unsealFailed(n): return "sealed frame \(n) failed to open (altered, replayed or reordered); session ended"
        case let .handshake(why): return "handshake failed: \(why)"
        case let .wrongPeer(expected, actual): return "peer is \(actual), expected \(expected)"
        case let .unexpectedFrame(why): return "unexpected frame: \(why)"
        case let .frame(e): return e.description
        case let .closed(why): return "connection closed: \(why)"
        }
    }
}
