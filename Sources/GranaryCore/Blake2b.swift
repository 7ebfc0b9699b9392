import CSodium

/// BLAKE2b (libsodium's `crypto_generichash`): node IDs, chunk keys and
/// small records. Bulk data (chunk IDs, Merkle trees) hashes with `Blake3`.
public enum Blake2b {
    /// 256-bit digest of `data`, optionally keyed (keys of 16...64 bytes).
    public static func hash256(_ data: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer? = nil) -> Hash256 {
        _ = Sodium.ready
        var out = Hash256.zero
        var digest = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &digest) { d in
            let rc = crypto_generichash(
                d.baseAddress!.assumingMemoryBound(to: UInt8.self), 32,
                data.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(data.count),
                key?.baseAddress?.assumingMemoryBound(to: UInt8.self), key?.count ?? 0)
            precondition(rc == 0, "crypto_generichash failed")
            out = Hash256(unsafeBytes: d.baseAddress!)
        }
        return out
    }

    public static func hash256(_ data: [UInt8], key: [UInt8]? = nil) -> Hash256 {
        data.withUnsafeBytes { d in
            if let key {
                return key.withUnsafeBytes { k in hash256(d, key: k) }
            }
            return hash256(d, key: nil)
        }
    }
}

/// Incremental BLAKE2b-256 for data that arrives in parts. Not thread-safe:
/// it owns its state, one hasher per stream.
public final class Blake2bHasher {
    // crypto_generichash_state must be 64-byte aligned; Swift sees it as opaque.
    private let state: UnsafeMutableRawPointer

    public init(key: [UInt8]? = nil) {
        _ = Sodium.ready
        state = UnsafeMutableRawPointer.allocate(byteCount: crypto_generichash_statebytes(), alignment: 64)
        let rc: Int32
        if let key {
            rc = key.withUnsafeBufferPointer {
                crypto_generichash_init(OpaquePointer(state), $0.baseAddress, $0.count, 32)
            }
        } else {
            rc = crypto_generichash_init(OpaquePointer(state), nil, 0, 32)
        }
        precondition(rc == 0, "crypto_generichash_init failed")
    }

    deinit { state.deallocate() }

    public func update(_ data: UnsafeRawBufferPointer) {
        guard data.count > 0 else { return }
        crypto_generichash_update(OpaquePointer(state), data.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(data.count))
    }

    public func update(_ data: [UInt8]) { data.withUnsafeBytes { update($0) } }

    public func finalize() -> Hash256 {
        var digest = [UInt8](repeating: 0, count: 32)
        digest.withUnsafeMutableBufferPointer { d in
            _ = crypto_generichash_final(OpaquePointer(state), d.baseAddress!, 32)
        }
        return Hash256(bytes: digest)!
    }
}
