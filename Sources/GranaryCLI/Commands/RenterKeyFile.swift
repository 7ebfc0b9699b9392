import ArgumentParser
import Foundation
import GranaryCore

/// The renter's key file in a state folder (`master.key`, mode 0600) as the
/// commands use it: opened with a passphrase when it is sealed, created
/// sealed unless asked for a plain one. See `KeyFile` for the format.
enum RenterKeyFile {
    static func path(state: String) -> String { state + "/master.key" }

    /// Argon2id limits for new sealed files: libsodium's "moderate";
    /// GRANARY_KDF=interactive (tests) makes them cheaper.
    static var limits: KeyDerivationLimits {
        ProcessInfo.processInfo.environment["GRANARY_KDF"] == "interactive" ? .interactive : .moderate
    }

    /// An opened key file, with the passphrase that opened it (if sealed).
    struct Unlocked {
        var keys: RenterKeys
        var file: KeyFile
        var passphrase: [UInt8]?
    }

    static func unlock(_ path: String, with source: PassphraseSource) throws -> Unlocked {
        try unlock(KeyFile.read(path), with: source)
    }

    /// Opens an already read key file, asking `source` for its passphrase if sealed.
    static func unlock(_ file: KeyFile, with source: PassphraseSource) throws -> Unlocked {
        var used: [UInt8]?
        let keys = try file.unlock {
            used = try source.forUnlocking(file.path)
            return used
        }
        return Unlocked(keys: keys, file: file, passphrase: used)
    }

    /// Writes `keys` to a new file at `path` (never over an existing one
    /// unless `replace`), sealed under `passphrase` or plain when nil.
    static func create(_ keys: RenterKeys, at path: String, passphrase: [UInt8]?, replace: Bool = false) throws {
        if !replace && FileManager.default.fileExists(atPath: path) {
            throw ValidationError("\(path) already exists; refusing to overwrite a key (move it away first)")
        }
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        try KeyFile.write(keys, to: path, passphrase: passphrase, limits: limits)
    }

    static func describe(_ passphrase: [UInt8]?) -> String {
        passphrase == nil ? "WITHOUT a passphrase (plain; anyone who reads it has your data)" : "sealed with a passphrase (Argon2id)"
    }

    /// The passphrase for a file written from an opened key: given through
    /// `--new-passphrase-file` or GRANARY_NEW_PASSPHRASE, else the one that
    /// opened the source, else the usual passphrase (`--passphrase-file`,
    /// GRANARY_PASSPHRASE), else asked on a terminal; nil with `plain`.
    static func newPassphrase(plain: Bool, newFile: String?, reuse: [UInt8]?, primary: PassphraseSource,
                              what: String) throws -> [UInt8]? {
        if plain { return nil }
        let explicit = PassphraseSource(file: newFile, environmentName: "GRANARY_NEW_PASSPHRASE")
        if explicit.isGivenNonInteractively { return try explicit.forNewKey(what) }
        if let reuse { return reuse }
        if primary.isGivenNonInteractively { return try primary.forNewKey(what) }
        if let asked = try explicit.forNewKey(what) { return asked }
        throw ValidationError("""
            say how to protect \(what): --new-passphrase-file FILE or GRANARY_NEW_PASSPHRASE (or GRANARY_PASSPHRASE / \
            --passphrase-file), run in a terminal to be asked, or --plain for a file without a passphrase
            """)
    }
}
