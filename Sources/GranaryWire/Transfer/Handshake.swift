import CSodium
import Foundation
import GranaryCore
import NIOCore

/// The two halves of the transfer handshake (Protos/transfer.proto,
/// HANDSHAKE), as pure functions over frame payloads so they can be tested
/// and fuzzed without sockets.
///
/// Each side signs a fresh X25519 key with its Ed25519 identity inside a
/// SignedEnvelope (kind `.handshake`); the server's Hello also carries the
/// hash of the client's Hello body. Session keys come from `crypto_kx` over
/// the ephemeral keys only, so they are bound to both identities by the
/// signatures and die with the session (forward secrecy).
public enum Handshake {
    /// The transfer protocol's version, in each Hello. 2: pieces' Merkle
    /// trees hash with BLAKE3 (1 hashed with BLAKE2b), so peers of different
    /// versions would fail each other's proofs; they refuse to talk instead.
    public static let transferVersion: UInt32 = 2
    static let clientRole: UInt32 = 1
    static let serverRole: UInt32 = 2
    /// Largest handshake payload accepted (an envelope of a Hello is ~300 bytes).
    public static let maxHelloLength = 4096

    static func ephemeralKeyPair() -> (publicKey: [UInt8], secretKey: [UInt8]) {
        var pk = [UInt8](repeating: 0, count: Int(crypto_kx_PUBLICKEYBYTES))
        var sk = [UInt8](repeating: 0, count: Int(crypto_kx_SECRETKEYBYTES))
        _ = sodium_init()
        crypto_kx_keypair(&pk, &sk)
        return (pk, sk)
    }

    static func sign(_ hello: Granary_TransferHello, identity: NodeIdentity) -> ByteBuffer {
        let envelope = try! Granary_SignedEnvelope(kind: .handshake, message: hello, signer: identity)
        return ByteBuffer(bytes: try! envelope.serializedBytes() as [UInt8])
    }

    /// Verifies an incoming Hello envelope: size, signature, key, proof of
    /// work, version, role, ephemeral key length.
    static func open(_ payload: ByteBuffer, role: UInt32, difficulty: Int) throws(SessionError) -> (NodePublicKey, Granary_TransferHello, Data) {
        guard payload.readableBytes <= maxHelloLength else {
            throw .handshake("hello of \(payload.readableBytes) bytes exceeds \(maxHelloLength)")
        }
        let envelope: Granary_SignedEnvelope
        do { envelope = try Granary_SignedEnvelope(serializedBytes: Array(payload.readableBytesView)) } catch {
            throw .handshake("hello is not a signed envelope")
        }
        let signer: NodePublicKey
        let hello: Granary_TransferHello
        do { (signer, hello) = try envelope.open(Granary_TransferHello.self, kind: .handshake, difficulty: difficulty) } catch {
            throw .handshake(error.description)
        }
        guard hello.version == Handshake.transferVersion else {
            throw .handshake("peer speaks transfer protocol version \(hello.version), this granary speaks \(Handshake.transferVersion): run the same granary version on both ends")
        }
        guard hello.role == role else { throw .handshake("hello has role \(hello.role), expected \(role)") }
        guard hello.ephemeralKey.count == Int(crypto_kx_PUBLICKEYBYTES) else { throw .handshake("ephemeral key is not 32 bytes") }
        return (signer, hello, envelope.body)
    }

    static func nowMillis() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }
}

/// The client (renter) side: make `hello`, send it, then `finish` with the
/// server's answer.
public struct ClientHandshake: Sendable {
    public let identity: NodeIdentity
    public let expectedPeer: Hash256?
    public let difficulty: Int
    private let ephemeral: (publicKey: [UInt8], secretKey: [UInt8])
    private let helloBody: Data
    /// The HELLO frame payload to send first.
    public let hello: ByteBuffer

    public init(identity: NodeIdentity, expectedPeer: Hash256?, difficulty: Int, maxFrameLength: Int = FrameLimits.defaultMaxFrameLength) {
        self.identity = identity; self.expectedPeer = expectedPeer; self.difficulty = difficulty
        ephemeral = Handshake.ephemeralKeyPair()
        var h = Granary_TransferHello()
        h.version = Handshake.transferVersion
        h.role = Handshake.clientRole
        h.ephemeralKey = Data(ephemeral.publicKey)
        h.nonce = Data(SecureRandom.bytes(32))
        if let expectedPeer { h.expectedPeerID = Data(expectedPeer.bytes) }
        h.timestampMs = Handshake.nowMillis()
        h.maxFrameLength = UInt32(maxFrameLength)
        helloBody = try! h.serializedData()
        let envelope = Granary_SignedEnvelope(kind: .handshake, body: helloBody, signer: identity)
        hello = ByteBuffer(bytes: try! envelope.serializedBytes() as [UInt8])
    }

    /// Checks the server's HELLO and derives the session keys.
    public func finish(serverHello payload: ByteBuffer) throws(SessionError) -> (peer: NodePublicKey, cipher: SessionCipher) {
        let (server, hello, _) = try Handshake.open(payload, role: Handshake.serverRole, difficulty: difficulty)
        if let expectedPeer, server.id != expectedPeer {
            throw .wrongPeer(expected: expectedPeer.hex, actual: server.id.hex)
        }
        guard hello.peerHelloHash == Data(Blake2b.hash256([UInt8](helloBody)).bytes) else {
            throw .handshake("server hello does not answer this client's hello")
        }
        var rx = [UInt8](repeating: 0, count: 32), tx = [UInt8](repeating: 0, count: 32)
        let rc = crypto_kx_client_session_keys(&rx, &tx, ephemeral.publicKey, ephemeral.secretKey, [UInt8](hello.ephemeralKey))
        guard rc == 0 else { throw .handshake("server ephemeral key is not acceptable") }
        return (server, SessionCipher(sendKey: tx, receiveKey: rx))
    }
}

/// The server (farmer) side: `respond` to the client's HELLO.
public struct ServerHandshake: Sendable {
    public let identity: NodeIdentity
    public let difficulty: Int

    public init(identity: NodeIdentity, difficulty: Int) {
        self.identity = identity; self.difficulty = difficulty
    }

    /// Checks the client's HELLO; returns the answer to send, the client's
    /// identity and the session cipher.
    public func respond(to payload: ByteBuffer, maxFrameLength: Int = FrameLimits.defaultMaxFrameLength)
        throws(SessionError) -> (reply: ByteBuffer, peer: NodePublicKey, cipher: SessionCipher) {
        let (client, hello, body) = try Handshake.open(payload, role: Handshake.clientRole, difficulty: difficulty)
        if !hello.expectedPeerID.isEmpty, hello.expectedPeerID != Data(identity.id.bytes) {
            throw .wrongPeer(expected: Hex.encode(hello.expectedPeerID), actual: identity.id.hex)
        }
        let ephemeral = Handshake.ephemeralKeyPair()
        var rx = [UInt8](repeating: 0, count: 32), tx = [UInt8](repeating: 0, count: 32)
        let rc = crypto_kx_server_session_keys(&rx, &tx, ephemeral.publicKey, ephemeral.secretKey, [UInt8](hello.ephemeralKey))
        guard rc == 0 else { throw .handshake("client ephemeral key is not acceptable") }
        var h = Granary_TransferHello()
        h.version = Handshake.transferVersion
        h.role = Handshake.serverRole
        h.ephemeralKey = Data(ephemeral.publicKey)
        h.nonce = Data(SecureRandom.bytes(32))
        h.peerHelloHash = Data(Blake2b.hash256([UInt8](body)).bytes)
        h.timestampMs = Handshake.nowMillis()
        h.maxFrameLength = UInt32(maxFrameLength)
        return (Handshake.sign(h, identity: identity), client, SessionCipher(sendKey: tx, receiveKey: rx))
    }
}
