import CSodium

/// Why a sealed chunk could not be opened. Opening never returns bytes that
/// were altered, truncated, or sealed under another key.
public enum SealError: Error, Equatable, CustomStringConvertible {
    case truncated(length: Int)
    case unknownAlgorithm(UInt8)
    case algorithmUnavailable(String)
    case authenticationFailed
    case outputTooSmall(need: Int, have: Int)

    public var description: String {
        switch self {
        case let .truncated(n): return "sealed chunk truncated (\(n) bytes)"
        case let .unknownAlgorithm(a): return "sealed chunk names unknown algorithm \(a)"
        case let .algorithmUnavailable(a): return "\(a) is not available on this CPU"
        case .authenticationFailed: return "sealed chunk failed authentication: altered, truncated, or another key"
        case let .outputTooSmall(need, have): return "output buffer too small: need \(need), have \(have)"
        }
    }
}

/// The AEAD a sealed chunk names in its first byte.
public enum SealAlgorithm: UInt8, Sendable, CaseIterable {
    case aes256gcm = 1
    case xchacha20poly1305 = 2

    /// AES-256-GCM where the CPU has AES-NI and PCLMUL (about twice as fast
    /// here), XChaCha20-Poly1305 otherwise.
    public static var preferred: SealAlgorithm {
        _ = Sodium.ready
        return crypto_aead_aes256gcm_is_available() == 1 ? .aes256gcm : .xchacha20poly1305
    }

    public var isAvailable: Bool {
        _ = Sodium.ready
        return self == .xchacha20poly1305 || crypto_aead_aes256gcm_is_available() == 1
    }

    public var nonceByteCount: Int { self == .aes256gcm ? 12 : 24 }
    public static let tagByteCount = 16
}

/// Content-addressed chunk encryption.
///
/// chunkID = BLAKE3 keyed with the renter's dedupe key over the plaintext
/// (BLAKE2b-256 before wire version 2; IDs already recorded stay valid, they
/// only name chunks); the chunk's key = BLAKE2b-256 keyed with the chunk-key root over
/// the chunk ID. The sealed form is `algorithm(1) || nonce || ciphertext || tag`,
/// with the chunk ID as associated data, so a chunk cannot be swapped for
/// another under the same key. Stateless and `Sendable`: share one freely.
public struct ChunkSealer: Sendable {
    private let dedupeKey: Blake3.Key
    private let chunkKeyRoot: [UInt8]
    public let algorithm: SealAlgorithm

    public init(dedupeKey: [UInt8], chunkKeyRoot: [UInt8], algorithm: SealAlgorithm = .preferred) {
        _ = Sodium.ready
        // A 32-byte key is used as is (RenterKeys' is); others are hashed to 32.
        self.dedupeKey = Blake3.Key(dedupeKey) ?? Blake3.Key(Blake2b.hash256(dedupeKey).bytes)!
        self.chunkKeyRoot = chunkKeyRoot
        self.algorithm = algorithm
    }

    public static func sealedSize(plaintextCount: Int, algorithm: SealAlgorithm = .preferred) -> Int {
        1 + algorithm.nonceByteCount + plaintextCount + SealAlgorithm.tagByteCount
    }

    public static func plaintextSize(sealedCount: Int, algorithm: SealAlgorithm) -> Int {
        sealedCount - 1 - algorithm.nonceByteCount - SealAlgorithm.tagByteCount
    }

    public func chunkID(of plaintext: UnsafeRawBufferPointer) -> Hash256 {
        Blake3.hash256(plaintext, key: dedupeKey)
    }

    public func chunkID(of plaintext: [UInt8]) -> Hash256 { plaintext.withUnsafeBytes { chunkID(of: $0) } }

    private func chunkKey(_ id: Hash256) -> [UInt8] {
        let idBytes = id.bytes
        return chunkKeyRoot.withUnsafeBytes { root in idBytes.withUnsafeBytes { Blake2b.hash256($0, key: root) } }.bytes
    }

    /// Seals into caller-provided memory (no allocation of the payload);
    /// returns the sealed length.
    public func seal(_ plaintext: UnsafeRawBufferPointer, chunkID id: Hash256,
                     into output: UnsafeMutableRawBufferPointer) throws(SealError) -> Int {
        let alg = algorithm
        let need = Self.sealedSize(plaintextCount: plaintext.count, algorithm: alg)
        guard output.count >= need else { throw .outputTooSmall(need: need, have: output.count) }
        guard alg.isAvailable else { throw .algorithmUnavailable("AES-256-GCM") }
        var key = chunkKey(id)
        defer { secureZero(&key) }
        let ad = id.bytes
        let out = output.baseAddress!
        out.storeBytes(of: alg.rawValue, as: UInt8.self)
        let nonce = UnsafeMutableRawBufferPointer(start: out + 1, count: alg.nonceByteCount)
        randombytes_buf(nonce.baseAddress!, nonce.count)
        let result: Result<Void, SealError> = key.withUnsafeBytes { k in
            ad.withUnsafeBytes { a in
                Result { () throws(SealError) in
                    try AEAD.encrypt(alg, key: k, nonce: UnsafeRawBufferPointer(nonce), associatedData: a,
                                     plaintext: plaintext, into: out + 1 + alg.nonceByteCount)
                }
            }
        }
        try result.get()
        return need
    }

    /// Seals a chunk: returns its ID and sealed bytes.
    public func seal(_ plaintext: [UInt8]) -> (id: Hash256, sealed: [UInt8]) {
        let id = chunkID(of: plaintext)
        var out = [UInt8](repeating: 0, count: Self.sealedSize(plaintextCount: plaintext.count, algorithm: algorithm))
        _ = try! plaintext.withUnsafeBytes { p in
            try out.withUnsafeMutableBytes { o in try seal(p, chunkID: id, into: o) }
        }
        return (id, out)
    }

    /// Opens into caller-provided memory; returns the plaintext length.
    public func open(_ sealed: UnsafeRawBufferPointer, chunkID id: Hash256,
                     into output: UnsafeMutableRawBufferPointer) throws(SealError) -> Int {
        guard sealed.count >= 1 else { throw .truncated(length: 0) }
        guard let alg = SealAlgorithm(rawValue: sealed[0]) else { throw .unknownAlgorithm(sealed[0]) }
        guard alg.isAvailable else { throw .algorithmUnavailable("AES-256-GCM") }
        let overhead = 1 + alg.nonceByteCount + SealAlgorithm.tagByteCount
        guard sealed.count >= overhead else { throw .truncated(length: sealed.count) }
        let plainCount = sealed.count - overhead
        guard output.count >= plainCount else { throw .outputTooSmall(need: plainCount, have: output.count) }
        var key = chunkKey(id)
        defer { secureZero(&key) }
        let ad = id.bytes
        let nonce = UnsafeRawBufferPointer(rebasing: sealed[1..<(1 + alg.nonceByteCount)])
        let body = UnsafeRawBufferPointer(rebasing: sealed[(1 + alg.nonceByteCount)...])
        let result: Result<Void, SealError> = key.withUnsafeBytes { k in
            ad.withUnsafeBytes { a in
                Result { () throws(SealError) in
                    try AEAD.decrypt(alg, key: k, nonce: nonce, associatedData: a, sealed: body, into: output.baseAddress)
                }
            }
        }
        try result.get()
        return plainCount
    }

    public func open(_ sealed: [UInt8], chunkID id: Hash256) throws(SealError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: max(0, sealed.count))
        let result: Result<Int, SealError> = sealed.withUnsafeBytes { s in
            out.withUnsafeMutableBytes { o in
                do throws(SealError) { return .success(try open(s, chunkID: id, into: o)) } catch { return .failure(error) }
            }
        }
        let n = try result.get()
        out.removeLast(out.count - n)
        return out
    }
}
