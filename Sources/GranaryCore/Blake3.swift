import CBlake3

/// BLAKE3 (vendored C, Sources/CBlake3), the hash of bulk data: chunk IDs
/// and Merkle trees. 2.5–3.6× BLAKE2b's speed here, and every uploaded byte
/// is hashed up to three times (chunk ID, the renter's Merkle root, the
/// farmer's check of it). Keys, identities and small records stay on
/// libsodium's BLAKE2b.
public enum Blake3 {
    /// A 32-byte key: keyed mode, BLAKE3's MAC and domain separation.
    public struct Key: Sendable {
        let bytes: [UInt8]

        /// `bytes` must be 32 bytes long.
        public init?(_ bytes: [UInt8]) {
            guard bytes.count == 32 else { return nil }
            self.bytes = bytes
        }

        /// A key for a fixed domain: BLAKE2b-256 of its name (computed once
        /// per use site, never per hash).
        public init(domain: String) {
            bytes = Blake2b.hash256(Array(domain.utf8)).bytes
        }
    }

    public static func hash256(_ data: UnsafeRawBufferPointer, key: Key? = nil) -> Hash256 {
        withUnsafeTemporaryAllocation(byteCount: 32, alignment: 8) { out in
            hash256(data.baseAddress, count: data.count, key: key, into: out.baseAddress!)
            return Hash256(unsafeBytes: UnsafeRawPointer(out.baseAddress!))
        }
    }

    public static func hash256(_ data: [UInt8], key: Key? = nil) -> Hash256 {
        data.withUnsafeBytes { hash256($0, key: key) }
    }

    /// Writes the digest of `count` bytes at `data` to the 32 bytes at `out`.
    @inline(__always)
    static func hash256(_ data: UnsafeRawPointer?, count: Int, key: Key?, into out: UnsafeMutableRawPointer) {
        let o = out.assumingMemoryBound(to: UInt8.self)
        if let key {
            key.bytes.withUnsafeBufferPointer { granary_blake3_256($0.baseAddress, data, count, o) }
        } else {
            granary_blake3_256(nil, data, count, o)
        }
    }

    /// Keyed digests of consecutive `leafSize`-byte leaves of `data` (the
    /// last possibly shorter; empty data is one empty leaf), 32 bytes each
    /// from `out`. Returns the number of leaves.
    @discardableResult
    static func leaves(_ data: UnsafeRawBufferPointer, leafSize: Int, key: Key, into out: UnsafeMutableRawPointer) -> Int {
        key.bytes.withUnsafeBufferPointer {
            granary_blake3_leaves($0.baseAddress, data.baseAddress, data.count, leafSize, out.assumingMemoryBound(to: UInt8.self))
        }
    }
}
