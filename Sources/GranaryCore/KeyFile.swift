import CSodium

/// Why a renter key file could not be read or written.
public enum KeyFileError: Error, Equatable, CustomStringConvertible {
    /// The passphrase did not open the sealed key, or the file was altered.
    case wrongPassphrase(path: String)
    /// The key is sealed and no passphrase was given.
    case passphraseRequired(path: String)
    case malformed(path: String, reason: String)
    case unsupportedVersion(path: String, version: Int)
    /// The key derivation could not run (e.g. not enough memory for its limits).
    case keyDerivationFailed(String)
    /// Reading or writing the file, or its permissions (see `SecretFile`).
    case file(IdentityError)

    public var description: String {
        switch self {
        case let .wrongPassphrase(path):
            return "wrong passphrase or damaged key file: \(path) did not open with this passphrase"
        case let .passphraseRequired(path):
            return "\(path) is protected by a passphrase: set GRANARY_PASSPHRASE, pass --passphrase-file FILE, or run in a terminal to be asked"
        case let .malformed(path, reason):
            return "\(path) is not a Granary key file: \(reason)"
        case let .unsupportedVersion(path, version):
            return "\(path) is a version \(version) key file, newer than this granary reads (version \(KeyFile.version)): use a newer granary"
        case let .keyDerivationFailed(why):
            return "passphrase key derivation failed: \(why)"
        case let .file(error):
            return error.description
        }
    }
}

/// Argon2id work factors stored with a sealed key (libsodium `crypto_pwhash`).
public struct KeyDerivationLimits: Sendable, Hashable {
    public var opslimit: UInt64
    public var memlimit: UInt64

    public init(opslimit: UInt64, memlimit: UInt64) { self.opslimit = opslimit; self.memlimit = memlimit }

    /// libsodium's "moderate": 3 passes over 256 MiB, about a second. The
    /// default: a key file is attacked offline, and is opened once per mount.
    public static var moderate: KeyDerivationLimits {
        KeyDerivationLimits(opslimit: UInt64(crypto_pwhash_opslimit_moderate()), memlimit: UInt64(crypto_pwhash_memlimit_moderate()))
    }

    /// libsodium's "interactive": 2 passes over 64 MiB. For tests.
    public static var interactive: KeyDerivationLimits {
        KeyDerivationLimits(opslimit: UInt64(crypto_pwhash_opslimit_interactive()), memlimit: UInt64(crypto_pwhash_memlimit_interactive()))
    }

    /// Bounds a file may ask for: at least libsodium's minimum, and at most
    /// "sensitive" plus headroom, so a crafted file cannot make us allocate
    /// or spin without limit.
    var isAcceptable: Bool {
        opslimit >= UInt64(crypto_pwhash_opslimit_min()) && opslimit <= 64 &&
            memlimit >= UInt64(crypto_pwhash_memlimit_min()) && memlimit <= 4 << 30
    }
}

/// The renter's key file (`master.key` in the state folder), versioned:
///
///     "GRNRYKEY" | version u8 (1) | kind u8
///     kind 0, plain:      master (32)
///     kind 1, passphrase: alg u8 (2: Argon2id v1.3) | opslimit u64 LE | memlimit u64 LE
///                         | salt (16) | nonce (24) | XChaCha20-Poly1305(master) (48)
///
/// The sealed form's key is `crypto_pwhash(passphrase, salt, limits)`; every
/// header byte before the ciphertext is the AEAD's associated data, so the
/// limits and salt cannot be altered without the open failing. A file of
/// exactly 32 bytes is the original format (the raw master secret) and is
/// still read as a plain key.
public struct KeyFile: Sendable, Equatable {
    public static let version = 1
    static let magic = Array("GRNRYKEY".utf8)
    static let argon2id13: UInt8 = 2
    static let saltBytes = 16   // crypto_pwhash_SALTBYTES
    static let nonceBytes = 24  // XChaCha20-Poly1305
    static let plainKind: UInt8 = 0, sealedKind: UInt8 = 1

    public enum Format: Sendable, Equatable {
        /// The raw 32 bytes written by granary before key files had a header.
        case legacyPlain
        case plain
        case passphrase(KeyDerivationLimits)
    }

    public let format: Format
    /// Plain formats: the master secret. Sealed: salt, nonce, ciphertext.
    private let body: [UInt8]
    private let header: [UInt8]
    /// Where it came from, for messages.
    public let path: String

    public var isProtected: Bool { if case .passphrase = format { return true } else { return false } }

    // MARK: reading

    /// Reads and parses the file at `path`, refusing one others can read.
    public static func read(_ path: String) throws(KeyFileError) -> KeyFile {
        let bytes: [UInt8]
        do { bytes = try SecretFile.read(path) } catch { throw .file(error) }
        return try KeyFile(parsing: bytes, path: path)
    }

    public init(parsing bytes: [UInt8], path: String) throws(KeyFileError) {
        self.path = path
        if bytes.count == RenterKeys.masterByteCount && Array(bytes.prefix(Self.magic.count)) != Self.magic {
            format = .legacyPlain; body = bytes; header = []; return
        }
        guard bytes.count >= Self.magic.count + 2, Array(bytes.prefix(Self.magic.count)) == Self.magic else {
            throw .malformed(path: path, reason: "no GRNRYKEY header and not a 32-byte raw key (\(bytes.count) bytes)")
        }
        let version = Int(bytes[8]), kind = bytes[9]
        guard version == Self.version else { throw .unsupportedVersion(path: path, version: version) }
        switch kind {
        case Self.plainKind:
            guard bytes.count == 10 + RenterKeys.masterByteCount else {
                throw .malformed(path: path, reason: "a plain key file holds 42 bytes, this one \(bytes.count)")
            }
            format = .plain; header = Array(bytes.prefix(10)); body = Array(bytes.suffix(RenterKeys.masterByteCount))
        case Self.sealedKind:
            let headerCount = 10 + 1 + 8 + 8 + Self.saltBytes + Self.nonceBytes
            guard bytes.count == headerCount + RenterKeys.masterByteCount + SealAlgorithm.tagByteCount else {
                throw .malformed(path: path, reason: "a passphrase key file holds \(headerCount + 48) bytes, this one \(bytes.count)")
            }
            guard bytes[10] == Self.argon2id13 else {
                throw .malformed(path: path, reason: "unknown key derivation algorithm \(bytes[10])")
            }
            let limits = KeyDerivationLimits(opslimit: Self.readUInt64(bytes, at: 11), memlimit: Self.readUInt64(bytes, at: 19))
            guard limits.isAcceptable else {
                throw .malformed(path: path, reason: "key derivation limits out of range (ops \(limits.opslimit), memory \(limits.memlimit))")
            }
            format = .passphrase(limits); header = Array(bytes.prefix(headerCount)); body = Array(bytes.suffix(from: 27))
        default:
            throw .malformed(path: path, reason: "unknown key file kind \(kind)")
        }
    }

    /// The keys, opening a sealed file with `passphrase` (asked for only
    /// when the file is sealed; nil means none could be had).
    public func unlock(passphrase: () throws -> [UInt8]?) throws -> RenterKeys {
        switch format {
        case .legacyPlain, .plain:
            return RenterKeys(master: body)
        case let .passphrase(limits):
            guard var secret = try passphrase() else { throw KeyFileError.passphraseRequired(path: path) }
            defer { secureZero(&secret) }
            return try open(with: secret, limits: limits)
        }
    }

    private func open(with passphrase: [UInt8], limits: KeyDerivationLimits) throws(KeyFileError) -> RenterKeys {
        let salt = Array(body.prefix(Self.saltBytes))
        let nonce = Array(body[Self.saltBytes..<(Self.saltBytes + Self.nonceBytes)])
        let sealed = Array(body.suffix(from: Self.saltBytes + Self.nonceBytes))
        var key = try Self.deriveKey(passphrase: passphrase, salt: salt, limits: limits)
        defer { secureZero(&key) }
        do {
            let master = try AEAD.decrypt(.xchacha20poly1305, key: key, nonce: nonce, associatedData: header, sealed: sealed)
            return RenterKeys(master: master)
        } catch {
            throw .wrongPassphrase(path: path)
        }
    }

    // MARK: writing

    /// The bytes of a key file for `keys`: sealed under `passphrase` when
    /// one is given, plain otherwise.
    public static func encode(_ keys: RenterKeys, passphrase: [UInt8]?,
                              limits: KeyDerivationLimits = .moderate) throws(KeyFileError) -> [UInt8] {
        guard let passphrase else { return magic + [UInt8(version), plainKind] + keys.master }
        precondition(limits.isAcceptable, "key derivation limits out of range")
        let salt = SecureRandom.bytes(saltBytes), nonce = SecureRandom.bytes(nonceBytes)
        var header = magic + [UInt8(version), sealedKind, argon2id13]
        appendUInt64(limits.opslimit, to: &header)
        appendUInt64(limits.memlimit, to: &header)
        header += salt + nonce
        var key = try deriveKey(passphrase: passphrase, salt: salt, limits: limits)
        defer { secureZero(&key) }
        let sealed: [UInt8]
        do { sealed = try AEAD.encrypt(.xchacha20poly1305, key: key, nonce: nonce, associatedData: header, plaintext: keys.master) } catch {
            throw .keyDerivationFailed("sealing failed: \(error)")
        }
        return header + sealed
    }

    /// Writes a key file at `path` (mode 0600, temporary file, fsync, rename).
    public static func write(_ keys: RenterKeys, to path: String, passphrase: [UInt8]?,
                             limits: KeyDerivationLimits = .moderate) throws(KeyFileError) {
        let bytes = try encode(keys, passphrase: passphrase, limits: limits)
        do { try SecretFile.write(bytes, to: path) } catch { throw .file(error) }
    }

    // MARK: helpers

    static func deriveKey(passphrase: [UInt8], salt: [UInt8], limits: KeyDerivationLimits) throws(KeyFileError) -> [UInt8] {
        _ = Sodium.ready
        // An empty passphrase would protect nothing; callers refuse it first.
        let secret = passphrase.isEmpty ? [0] : passphrase
        var key = [UInt8](repeating: 0, count: AEAD.keyByteCount)
        let rc = secret.withUnsafeBufferPointer { p in
            p.withMemoryRebound(to: CChar.self) { c in
                crypto_pwhash(&key, UInt64(key.count), c.baseAddress!, UInt64(passphrase.count), salt,
                              limits.opslimit, Int(limits.memlimit), crypto_pwhash_alg_argon2id13())
            }
        }
        guard rc == 0 else { throw .keyDerivationFailed("Argon2id could not allocate \(limits.memlimit >> 20) MiB") }
        return key
    }

    static func appendUInt64(_ v: UInt64, to out: inout [UInt8]) {
        withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
    }

    static func readUInt64(_ bytes: [UInt8], at i: Int) -> UInt64 {
        var v: UInt64 = 0
        for j in 0..<8 { v |= UInt64(bytes[i + j]) << (8 * j) }
        return v
    }

    public static func == (a: KeyFile, b: KeyFile) -> Bool { a.header == b.header && a.body == b.body && a.format == b.format }
}
