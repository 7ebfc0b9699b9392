import CSodium

/// Why a recovery phrase or key could not be read.
public enum RenterKeyError: Error, Equatable, CustomStringConvertible {
    case malformedPhrase(String)
    case checksumMismatch

    public var description: String {
        switch self {
        case let .malformedPhrase(why): return "recovery phrase is malformed: \(why)"
        case .checksumMismatch: return "recovery phrase checksum does not match: a group was mistyped"
        }
    }
}

/// A renter's one master secret and the keys derived from it with
/// `crypto_kdf` (libsodium 1.0.18 has no HKDF; crypto_kdf takes a 64-bit
/// subkey id and an 8-byte context). Losing the master secret loses the data;
/// it alone restores everything.
public struct RenterKeys: Sendable {
    public static let masterByteCount = 32
    private static let context = Array("granary_".utf8)  // exactly crypto_kdf_CONTEXTBYTES

    /// Subkey ids. Never renumber: the ids are part of the on-network format.
    enum Subkey: UInt64 {
        case dedupe = 1, chunkKeyRoot = 2, metadata = 3, identity = 4, lease = 5
    }

    public let master: [UInt8]

    public init(master: [UInt8]) {
        precondition(master.count == Self.masterByteCount, "master secret must be 32 bytes")
        self.master = master
    }

    public static func generate() -> RenterKeys { RenterKeys(master: Sodium.randomBytes(masterByteCount)) }

    func derive(_ subkey: Subkey, length: Int = 32) -> [UInt8] {
        _ = Sodium.ready
        var out = [UInt8](repeating: 0, count: length)
        let rc = Self.context.withUnsafeBufferPointer { ctx in
            ctx.withMemoryRebound(to: CChar.self) { c in
                crypto_kdf_derive_from_key(&out, length, subkey.rawValue, c.baseAddress!, master)
            }
        }
        precondition(rc == 0, "crypto_kdf_derive_from_key failed")
        return out
    }

    /// Keys the chunk-ID hash (BLAKE3), so identical chunks dedupe per renter only.
    public var dedupeKey: [UInt8] { derive(.dedupe) }
    /// Root from which each chunk's sealing key is derived.
    public var chunkKeyRoot: [UInt8] { derive(.chunkKeyRoot) }
    /// Seals metadata snapshots.
    public var metadataKey: [UInt8] { derive(.metadata) }

    /// Signs the renter's metadata pointer in the DHT. Derived from the
    /// metadata subkey alone, with no proof of work, so that the key alone
    /// finds the pointer whatever difficulty the network requires.
    public var metadataSigningIdentity: NodeIdentity {
        NodeIdentity(seed: Blake2b.hash256(Array("granary-metadata-signing".utf8), key: metadataKey).bytes)
    }

    /// The renter's node identity, found deterministically from the master
    /// secret: the first of seed_0, seed_1, ... (see `NodeIdentity.derive`)
    /// whose key meets `identityDifficulty(configured:)` bits of proof of work.
    ///
    /// Farmers bind contracts and pieces to this identity, so it must not
    /// depend on the machine's configuration: the search always runs at
    /// least at the production difficulty (16 bits, which also passes any
    /// network that asks for less, such as the embedded network's 12 or a
    /// test's 4), so one key has one identity wherever it is used. A network
    /// that asks for more gets a stronger one (its nodes would refuse the
    /// production one anyway).
    ///
    /// The search takes ~65,000 key derivations (a second or two); with
    /// `nonceCache` (a file path, usually in the state folder) the counter
    /// found is kept there and reused, after checking that it belongs to
    /// this key and difficulty and still meets the proof of work. A cache
    /// that fails any check is ignored and rewritten after a new search.
    /// A cached identity found at a lower difficulty (see `keepingOlderIdentity`)
    /// is used while it meets the configured one.
    ///
    /// `keepingOlderIdentity`: a state folder from before the cache existed
    /// holds contracts made with the identity searched at the configured
    /// difficulty alone; searching that way (and caching it) keeps them valid.
    public func nodeIdentity(difficulty: Int, nonceCache: String? = nil, keepingOlderIdentity: Bool = false) -> NodeIdentity {
        let bits = keepingOlderIdentity ? difficulty : Self.identityDifficulty(configured: difficulty)
        let secret = derive(.identity)
        let tag = Hex.encode(Array(Blake2b.hash256(Array("granary-identity-nonce".utf8), key: secret).bytes.prefix(8)))
        // The cache's own difficulty is checked in full: the search's, or an
        // older identity's below it that still meets the configured one.
        if let nonceCache, let cached = IdentityNonceCache.read(nonceCache, tag: tag),
           (difficulty...bits).contains(cached.difficulty) {
            let candidate = NodeIdentity.derived(from: secret, counter: cached.counter)
            if candidate.publicKey.proofOfWorkBits >= cached.difficulty { return candidate }
        }
        let (identity, counter) = NodeIdentity.search(from: secret, difficulty: bits)
        if let nonceCache { IdentityNonceCache.write(nonceCache, tag: tag, difficulty: bits, counter: counter) }
        return identity
    }

    /// The proof of work a renter's identity is searched at: the
    /// configured network's, but never below production's.
    public static func identityDifficulty(configured: Int) -> Int { max(configured, NodeIdentity.defaultDifficulty) }

    /// Signs the renter's mount lease in the DHT (see the renter's
    /// `MountLease`): a bare Ed25519 key from the lease subkey, with no proof
    /// of work, so every machine holding the master key finds the same
    /// lease whatever difficulty its network requires.
    public var leaseIdentity: NodeIdentity { NodeIdentity(seed: derive(.lease)) }

    /// A short public name for the key (16 hex digits), to compare two key
    /// files or an export against a mount without showing any secret.
    public var fingerprint: String {
        Hex.encode(Array(Blake2b.hash256(Array("granary-key-fingerprint".utf8), key: master).bytes.prefix(8)))
    }

    public func chunkSealer() -> ChunkSealer { ChunkSealer(dedupeKey: dedupeKey, chunkKeyRoot: chunkKeyRoot) }

    // MARK: recovery phrase

    /// 32 secret bytes + 2 checksum bytes as 17 groups of 4 hex digits:
    /// unambiguous to read aloud and type, and a typo is caught by the checksum.
    public var recoveryPhrase: String {
        let sum = Blake2b.hash256(master).bytes.prefix(2)
        let hex = Hex.encode(master + sum)
        var groups: [Substring] = []
        var rest = Substring(hex)
        while !rest.isEmpty { groups.append(rest.prefix(4)); rest = rest.dropFirst(4) }
        return groups.joined(separator: "-")
    }

    public init(recoveryPhrase: String) throws(RenterKeyError) {
        let cleaned = recoveryPhrase.lowercased().filter { !$0.isWhitespace && $0 != "-" }
        guard cleaned.count == 68 else { throw .malformedPhrase("expected 68 hex digits, found \(cleaned.count)") }
        guard let bytes = Hex.decode(cleaned) else { throw .malformedPhrase("only 0-9 and a-f are allowed") }
        let master = Array(bytes.prefix(32))
        guard Array(Blake2b.hash256(master).bytes.prefix(2)) == Array(bytes.suffix(2)) else { throw .checksumMismatch }
        self.init(master: master)
    }
}
