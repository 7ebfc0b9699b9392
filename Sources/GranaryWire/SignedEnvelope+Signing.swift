import Foundation
import GranaryCore
import SwiftProtobuf

/// What a signed envelope carries. Part of the signed bytes: a signature made
/// for one kind never verifies as another. Never renumber.
public enum EnvelopeKind: UInt32, Sendable {
    case datagram = 1        // a DHT datagram
    case record = 2          // a DHT signed record
    case offer = 3           // a contract offer (pub/sub)
    case bid = 4             // a farmer's bid
    case contract = 5        // a storage contract
    case voucher = 6         // a payment voucher
    case handshake = 7       // a transfer-session handshake
    case metadataPointer = 8 // a renter's snapshot pointer
}

/// Why an envelope was refused.
public enum EnvelopeError: Error, Equatable, CustomStringConvertible {
    case unsupportedVersion(UInt32)
    case wrongKind(expected: UInt32, actual: UInt32)
    case badPublicKey
    case badSignature
    case identity(IdentityError)
    case malformed(String)

    public var description: String {
        switch self {
        case let .unsupportedVersion(v): return "unsupported wire version \(v)"
        case let .wrongKind(e, a): return "envelope kind \(a), expected \(e)"
        case .badPublicKey: return "envelope public key is not 32 bytes"
        case .badSignature: return "envelope signature does not verify"
        case let .identity(e): return e.description
        case let .malformed(why): return "malformed message: \(why)"
        }
    }
}

extension Granary_SignedEnvelope {
    public static let currentVersion: UInt32 = 1
    private static let context = Array("granary-v1".utf8)

    static func signedBytes(kind: UInt32, body: Data) -> [UInt8] {
        var bytes = context
        withUnsafeBytes(of: kind.littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: body)
        return bytes
    }

    /// Signs the exact serialized bytes of `body`.
    public init(kind: EnvelopeKind, body: Data, signer: NodeIdentity) {
        self.init()
        version = Self.currentVersion
        self.kind = kind.rawValue
        self.body = body
        publicKey = Data(signer.publicKey.bytes)
        signature = Data(signer.sign(Self.signedBytes(kind: kind.rawValue, body: body)))
    }

    /// Serializes `message` and signs the result.
    public init<M: SwiftProtobuf.Message>(kind: EnvelopeKind, message: M, signer: NodeIdentity) throws {
        self.init(kind: kind, body: try message.serializedData(), signer: signer)
    }

    /// Checks version, kind, key, proof of work and signature over the
    /// bytes as they arrived; returns the signer. Decode `body` only after.
    public func verify(kind expected: EnvelopeKind, difficulty: Int) throws(EnvelopeError) -> NodePublicKey {
        guard version == Self.currentVersion else { throw .unsupportedVersion(version) }
        guard kind == expected.rawValue else { throw .wrongKind(expected: expected.rawValue, actual: kind) }
        guard let key = NodePublicKey(bytes: [UInt8](publicKey)) else { throw .badPublicKey }
        do { try key.validate(difficulty: difficulty) } catch { throw .identity(error) }
        guard key.verify(signature: [UInt8](signature), over: Self.signedBytes(kind: kind, body: body)) else {
            throw .badSignature
        }
        return key
    }

    /// Verifies, then decodes the body as `M`.
    public func open<M: SwiftProtobuf.Message>(_ type: M.Type, kind: EnvelopeKind, difficulty: Int) throws(EnvelopeError) -> (signer: NodePublicKey, message: M) {
        let signer = try verify(kind: kind, difficulty: difficulty)
        do { return (signer, try M(serializedBytes: body)) } catch { throw .malformed("\(M.self): \(error)") }
    }
}
