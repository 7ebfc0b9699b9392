import CSodium

/// The two AEADs Granary uses, over libsodium, on caller-provided memory.
/// Callers choose the nonce: ChunkSealer uses random ones, sessions counters.
public enum AEAD {
    public static let keyByteCount = 32

    /// Encrypts `plaintext` into `output` (plaintext.count + 16 bytes:
    /// ciphertext then tag).
    public static func encrypt(_ algorithm: SealAlgorithm, key: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer,
                               associatedData ad: UnsafeRawBufferPointer, plaintext: UnsafeRawBufferPointer,
                               into output: UnsafeMutableRawPointer) throws(SealError) {
        guard algorithm.isAvailable else { throw .algorithmUnavailable("AES-256-GCM") }
        precondition(key.count == keyByteCount && nonce.count == algorithm.nonceByteCount, "AEAD key or nonce size")
        let out = output.assumingMemoryBound(to: UInt8.self)
        let m = plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self)
        let a = ad.baseAddress?.assumingMemoryBound(to: UInt8.self)
        let n = nonce.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let k = key.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var clen: UInt64 = 0
        let rc: Int32
        switch algorithm {
        case .aes256gcm:
            rc = crypto_aead_aes256gcm_encrypt(out, &clen, m, UInt64(plaintext.count), a, UInt64(ad.count), nil, n, k)
        case .xchacha20poly1305:
            rc = crypto_aead_xchacha20poly1305_ietf_encrypt(out, &clen, m, UInt64(plaintext.count), a, UInt64(ad.count), nil, n, k)
        }
        precondition(rc == 0, "AEAD encrypt failed")
    }

    /// Decrypts and authenticates `sealed` (ciphertext || tag) into `output`
    /// (sealed.count − 16 bytes). Nothing is returned unless the tag verifies.
    public static func decrypt(_ algorithm: SealAlgorithm, key: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer,
                               associatedData ad: UnsafeRawBufferPointer, sealed: UnsafeRawBufferPointer,
                               into output: UnsafeMutableRawPointer?) throws(SealError) {
        guard algorithm.isAvailable else { throw .algorithmUnavailable("AES-256-GCM") }
        guard sealed.count >= SealAlgorithm.tagByteCount else { throw .truncated(length: sealed.count) }
        precondition(key.count == keyByteCount && nonce.count == algorithm.nonceByteCount, "AEAD key or nonce size")
        let out = output?.assumingMemoryBound(to: UInt8.self)
        let c = sealed.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let a = ad.baseAddress?.assumingMemoryBound(to: UInt8.self)
        let n = nonce.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let k = key.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var mlen: UInt64 = 0
        let rc: Int32
        switch algorithm {
        case .aes256gcm:
            rc = crypto_aead_aes256gcm_decrypt(out, &mlen, nil, c, UInt64(sealed.count), a, UInt64(ad.count), n, k)
        case .xchacha20poly1305:
            rc = crypto_aead_xchacha20poly1305_ietf_decrypt(out, &mlen, nil, c, UInt64(sealed.count), a, UInt64(ad.count), n, k)
        }
        guard rc == 0 else { throw .authenticationFailed }
    }

    /// Array convenience: ciphertext || tag.
    public static func encrypt(_ algorithm: SealAlgorithm, key: [UInt8], nonce: [UInt8], associatedData ad: [UInt8],
                               plaintext: [UInt8]) throws(SealError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: plaintext.count + SealAlgorithm.tagByteCount)
        let r: Result<Void, SealError> = out.withUnsafeMutableBytes { o in
            key.withUnsafeBytes { k in nonce.withUnsafeBytes { n in ad.withUnsafeBytes { a in plaintext.withUnsafeBytes { p in
                do throws(SealError) { try encrypt(algorithm, key: k, nonce: n, associatedData: a, plaintext: p, into: o.baseAddress!); return .success(()) }
                catch { return .failure(error) }
            } } } }
        }
        try r.get()
        return out
    }

    /// Array convenience: plaintext, or an error if anything was altered.
    public static func decrypt(_ algorithm: SealAlgorithm, key: [UInt8], nonce: [UInt8], associatedData ad: [UInt8],
                               sealed: [UInt8]) throws(SealError) -> [UInt8] {
        guard sealed.count >= SealAlgorithm.tagByteCount else { throw .truncated(length: sealed.count) }
        var out = [UInt8](repeating: 0, count: sealed.count - SealAlgorithm.tagByteCount)
        let r: Result<Void, SealError> = out.withUnsafeMutableBytes { o in
            key.withUnsafeBytes { k in nonce.withUnsafeBytes { n in ad.withUnsafeBytes { a in sealed.withUnsafeBytes { s in
                do throws(SealError) { try decrypt(algorithm, key: k, nonce: n, associatedData: a, sealed: s, into: o.baseAddress); return .success(()) }
                catch { return .failure(error) }
            } } } }
        }
        try r.get()
        return out
    }
}
