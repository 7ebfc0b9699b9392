import CSodium

/// One-time libsodium initialisation. Every Core type that calls libsodium
/// touches `Sodium.ready` first; `sodium_init` is idempotent and thread-safe,
/// and a Swift global is initialised exactly once.
enum Sodium {
    static let ready: Bool = {
        precondition(sodium_init() >= 0, "libsodium failed to initialise")
        return true
    }()

    /// Fills a buffer with cryptographically secure random bytes.
    static func randomBytes(_ count: Int) -> [UInt8] {
        _ = ready
        var out = [UInt8](repeating: 0, count: count)
        if count > 0 { out.withUnsafeMutableBytes { randombytes_buf($0.baseAddress!, $0.count) } }
        return out
    }
}

/// Cryptographically secure randomness, for callers above Core.
public enum SecureRandom {
    public static func bytes(_ count: Int) -> [UInt8] { Sodium.randomBytes(count) }

    /// A uniform integer in `0..<upperBound` (libsodium's unbiased sampler).
    public static func uniform(_ upperBound: UInt32) -> UInt32 {
        _ = Sodium.ready
        return randombytes_uniform(upperBound)
    }
}

/// Wipes secret bytes so they do not linger in freed memory.
@inline(__always)
func secureZero(_ bytes: inout [UInt8]) {
    guard !bytes.isEmpty else { return }
    bytes.withUnsafeMutableBytes { sodium_memzero($0.baseAddress!, $0.count) }
}
