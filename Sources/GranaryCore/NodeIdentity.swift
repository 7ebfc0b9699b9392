import CSodium
import Foundation

/// Why an identity could not be made, loaded or trusted.
public enum IdentityError: Error, Equatable, CustomStringConvertible {
    case insufficientProofOfWork(have: Int, need: Int)
    case idDoesNotMatchKey
    case badKeyFile(path: String, reason: String)
    case keyFileReadableByOthers(path: String, mode: UInt16)
    case io(path: String, errno: Int32)

    public var description: String {
        switch self {
        case let .insufficientProofOfWork(have, need):
            return "node proof of work too short: \(have) leading zero bits, \(need) required"
        case .idDoesNotMatchKey:
            return "node ID is not BLAKE2b-256 of its public key"
        case let .badKeyFile(path, reason):
            return "key file \(path) is not valid: \(reason)"
        case let .keyFileReadableByOthers(path, mode):
            return "key file \(path) has mode \(String(mode, radix: 8)); refusing a key others can read (chmod 600 \(path))"
        case let .io(path, err):
            return "\(path): \(String(cString: strerror(err)))"
        }
    }
}

/// The public half of a node: its Ed25519 key and the ID derived from it.
public struct NodePublicKey: Hashable, Sendable {
    public let bytes: [UInt8]   // 32 bytes
    public let id: Hash256      // BLAKE2b-256(bytes)

    /// Accepts a key only if it is 32 bytes; the ID is computed, never trusted.
    public init?(bytes: [UInt8]) {
        guard bytes.count == Int(crypto_sign_publickeybytes()) else { return nil }
        self.bytes = bytes
        self.id = Blake2b.hash256(bytes)
    }

    /// S/Kademlia static puzzle: leading zero bits of H(H(pubkey)) = H(id).
    public var proofOfWorkBits: Int { Blake2b.hash256(id.bytes).leadingZeroBitCount }

    /// Checks a claimed ID against this key and the required proof of work.
    public func validate(claimedID: Hash256? = nil, difficulty: Int) throws(IdentityError) {
        if let claimedID, claimedID != id { throw .idDoesNotMatchKey }
        let bits = proofOfWorkBits
        if bits < difficulty { throw .insufficientProofOfWork(have: bits, need: difficulty) }
    }

    /// Verifies a detached Ed25519 signature over exactly `message`.
    public func verify(signature: [UInt8], over message: UnsafeRawBufferPointer) -> Bool {
        _ = Sodium.ready
        guard signature.count == Int(crypto_sign_bytes()) else { return false }
        return signature.withUnsafeBufferPointer { sig in
            bytes.withUnsafeBufferPointer { pk in
                crypto_sign_verify_detached(sig.baseAddress!, message.baseAddress?.assumingMemoryBound(to: UInt8.self),
                                            UInt64(message.count), pk.baseAddress!) == 0
            }
        }
    }

    public func verify(signature: [UInt8], over message: [UInt8]) -> Bool {
        message.withUnsafeBytes { verify(signature: signature, over: $0) }
    }
}

/// A node's Ed25519 key pair. The node ID is BLAKE2b-256 of the public key,
/// and a key is only usable once it carries an S/Kademlia static proof of
/// work (H(H(pubkey)) has at least `difficulty` leading zero bits), which
/// makes minting many IDs near a target expensive.
public struct NodeIdentity: Sendable {
    /// Production proof of work; tests and the embedded network use less.
    public static let defaultDifficulty = 16

    /// The proof of work this process requires of every node, its own
    /// included: GRANARY_POW_BITS when set (tests set it low), else 16.
    /// Every node of one network must agree on it.
    public static var configuredDifficulty: Int {
        if let text = ProcessInfo.processInfo.environment["GRANARY_POW_BITS"], let bits = Int(text), (0...64).contains(bits) {
            return bits
        }
        return defaultDifficulty
    }

    public let publicKey: NodePublicKey
    private let secretKey: [UInt8]  // 64 bytes: seed || public key

    public var id: Hash256 { publicKey.id }

    private init(publicKey: [UInt8], secretKey: [UInt8]) {
        self.publicKey = NodePublicKey(bytes: publicKey)!
        self.secretKey = secretKey
    }

    /// A key pair from a 32-byte seed (deterministic).
    public init(seed: [UInt8]) {
        precondition(seed.count == 32, "Ed25519 seed must be 32 bytes")
        _ = Sodium.ready
        var pk = [UInt8](repeating: 0, count: 32)
        var sk = [UInt8](repeating: 0, count: 64)
        _ = crypto_sign_seed_keypair(&pk, &sk, seed)
        self.init(publicKey: pk, secretKey: sk)
    }

    /// Generates key pairs until one meets the proof of work.
    public static func generate(difficulty: Int = defaultDifficulty) -> NodeIdentity {
        while true {
            let candidate = NodeIdentity(seed: Sodium.randomBytes(32))
            if candidate.publicKey.proofOfWorkBits >= difficulty { return candidate }
        }
    }

    /// Deterministic search from a secret: seed_i = BLAKE2b(secret, i) until
    /// the proof of work holds, so a renter's identity follows from its key.
    public static func derive(from secret: [UInt8], difficulty: Int) -> NodeIdentity {
        search(from: secret, difficulty: difficulty).identity
    }

    /// `derive`, also returning the counter i that was found (a cache of it
    /// saves the search next time: see `derived(from:counter:)`).
    public static func search(from secret: [UInt8], difficulty: Int, startingAt start: UInt64 = 0) -> (identity: NodeIdentity, counter: UInt64) {
        var counter = start
        while true {
            let candidate = derived(from: secret, counter: counter)
            if candidate.publicKey.proofOfWorkBits >= difficulty { return (candidate, counter) }
            counter += 1
        }
    }

    /// The candidate identity number `counter` of the search from `secret`.
    public static func derived(from secret: [UInt8], counter: UInt64) -> NodeIdentity {
        var msg = Array("granary-identity".utf8)
        withUnsafeBytes(of: counter.littleEndian) { msg.append(contentsOf: $0) }
        return NodeIdentity(seed: Blake2b.hash256(msg, key: secret).bytes)
    }

    public func sign(_ message: UnsafeRawBufferPointer) -> [UInt8] {
        var sig = [UInt8](repeating: 0, count: Int(crypto_sign_bytes()))
        secretKey.withUnsafeBufferPointer { sk in
            _ = crypto_sign_detached(&sig, nil, message.baseAddress?.assumingMemoryBound(to: UInt8.self),
                                     UInt64(message.count), sk.baseAddress!)
        }
        return sig
    }

    public func sign(_ message: [UInt8]) -> [UInt8] { message.withUnsafeBytes { sign($0) } }

    /// The X25519 secret key of this identity (for `crypto_kx` sessions).
    public func curve25519SecretKey() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        _ = crypto_sign_ed25519_sk_to_curve25519(&out, secretKey)
        return out
    }

    // MARK: key file

    private static let magic = Array("GRNRYID1".utf8)

    /// Writes the key to `path` with mode 0600 (temporary file, fsync, rename).
    public func save(to path: String) throws(IdentityError) {
        try SecretFile.write(Self.magic + secretKey, to: path)
    }

    /// Loads a key, refusing files others can read and keys whose proof of
    /// work is shorter than `difficulty`.
    public static func load(from path: String, difficulty: Int) throws(IdentityError) -> NodeIdentity {
        let data = try SecretFile.read(path)
        guard data.count == magic.count + 64, Array(data.prefix(magic.count)) == magic else {
            throw .badKeyFile(path: path, reason: "not a Granary identity (wrong size or header)")
        }
        let sk = Array(data.suffix(64))
        let identity = NodeIdentity(publicKey: Array(sk.suffix(32)), secretKey: sk)
        // The stored secret must reproduce the stored public key.
        guard NodeIdentity(seed: Array(sk.prefix(32))).publicKey == identity.publicKey else {
            throw .badKeyFile(path: path, reason: "public key does not match secret key")
        }
        try identity.publicKey.validate(difficulty: difficulty)
        return identity
    }

    /// Loads the key at `path`, or creates and saves one when there is none.
    public static func loadOrCreate(at path: String, difficulty: Int) throws(IdentityError) -> NodeIdentity {
        if FileManager.default.fileExists(atPath: path) { return try load(from: path, difficulty: difficulty) }
        let identity = generate(difficulty: difficulty)
        try identity.save(to: path)
        return identity
    }
}

/// Files holding secrets: written 0600 atomically, read only when private.
public enum SecretFile {
    public static func write(_ bytes: [UInt8], to path: String) throws(IdentityError) {
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .io(path: tmp, errno: errno) }
        defer { close(fd) }
        fchmod(fd, 0o600)
        // write(2) may take less than asked (large files, signals): loop.
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .io(path: tmp, errno: n == 0 ? EIO : errno) }
            done += n
        }
        guard fsync(fd) == 0 else { throw .io(path: tmp, errno: errno) }
        guard rename(tmp, path) == 0 else { throw .io(path: path, errno: errno) }
        FileSync.syncDirectory(containing: path)
    }

    public static func read(_ path: String) throws(IdentityError) -> [UInt8] {
        var st = stat()
        guard stat(path, &st) == 0 else { throw .io(path: path, errno: errno) }
        let mode = UInt16(st.st_mode & 0o777)
        if mode & 0o077 != 0 { throw .keyFileReadableByOthers(path: path, mode: mode) }
        guard let data = FileManager.default.contents(atPath: path) else { throw .io(path: path, errno: EIO) }
        return [UInt8](data)
    }
}
