import Foundation
import GranaryCore
import Testing

/// The renter's key file: sealed with a passphrase (Argon2id + AEAD),
/// plain, and the original raw 32-byte format.
struct KeyFileTests {
    static let passphrase = Array("correct horse battery staple".utf8)

    @Test func sealedKeyFileRoundTripsAndRefusesAWrongPassphrase() throws {
        let keys = RenterKeys.generate()
        let bytes = try KeyFile.encode(keys, passphrase: Self.passphrase, limits: .interactive)
        #expect(!bytes.contains(subsequence: keys.master), "the master secret is not stored in the clear")
        let file = try KeyFile(parsing: bytes, path: "k")
        #expect(file.format == .passphrase(.interactive))
        #expect(try file.unlock { Self.passphrase }.master == keys.master)

        #expect(throws: KeyFileError.wrongPassphrase(path: "k")) { try file.unlock { Array("wrong".utf8) } }
        let error = KeyFileError.wrongPassphrase(path: "k")
        #expect(error.description.contains("wrong passphrase or damaged key file"))
        #expect(throws: KeyFileError.passphraseRequired(path: "k")) { try file.unlock { nil } }
    }

    @Test func alteredHeaderOrCiphertextIsRefused() throws {
        let bytes = try KeyFile.encode(RenterKeys.generate(), passphrase: Self.passphrase, limits: .interactive)
        // Salt, nonce and ciphertext: every byte is authenticated.
        for i in [30, 50, 70, bytes.count - 1] {
            var altered = bytes
            altered[i] ^= 1
            #expect(throws: KeyFileError.wrongPassphrase(path: "k")) { try KeyFile(parsing: altered, path: "k").unlock { Self.passphrase } }
        }
        // Limits are authenticated too; absurd ones are refused before any work.
        var slower = bytes
        slower[11] += 1
        #expect(throws: KeyFileError.wrongPassphrase(path: "k")) { try KeyFile(parsing: slower, path: "k").unlock { Self.passphrase } }
        var huge = bytes
        huge[26] = 0xff
        #expect(throws: KeyFileError.self) { try KeyFile(parsing: huge, path: "k") }
    }

    @Test func plainAndOriginalFormatsStillOpen() throws {
        let keys = RenterKeys.generate()
        let plain = try KeyFile(parsing: try KeyFile.encode(keys, passphrase: nil), path: "p")
        #expect(plain.format == .plain && !plain.isProtected)
        #expect(try plain.unlock { Issue.record("no passphrase asked for a plain key"); return nil }.master == keys.master)
        let legacy = try KeyFile(parsing: keys.master, path: "old")
        #expect(legacy.format == .legacyPlain)
        #expect(try legacy.unlock { nil }.master == keys.master)
    }

    @Test func malformedFilesGetTypedErrors() throws {
        #expect(throws: KeyFileError.self) { try KeyFile(parsing: [1, 2, 3], path: "x") }
        var future = try KeyFile.encode(RenterKeys.generate(), passphrase: nil)
        future[8] = 9
        #expect(throws: KeyFileError.unsupportedVersion(path: "x", version: 9)) { try KeyFile(parsing: future, path: "x") }
        let truncated = Array(try KeyFile.encode(RenterKeys.generate(), passphrase: Self.passphrase, limits: .interactive).dropLast())
        #expect(throws: KeyFileError.self) { try KeyFile(parsing: truncated, path: "x") }
    }

    @Test func keyFilesOnDiskArePrivate() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("granary-keyfile-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/master.key"
        let keys = RenterKeys.generate()
        try KeyFile.write(keys, to: path, passphrase: Self.passphrase, limits: .interactive)
        let mode = (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? 0
        #expect(mode == 0o600)
        #expect(try KeyFile.read(path).unlock { Self.passphrase }.master == keys.master)
        chmod(path, 0o644)
        #expect(throws: KeyFileError.file(.keyFileReadableByOthers(path: path, mode: 0o644))) { try KeyFile.read(path) }
    }

    @Test func recoveryPhraseRestoresTheSameKeys() throws {
        let keys = RenterKeys.generate()
        let back = try RenterKeys(recoveryPhrase: keys.recoveryPhrase)
        #expect(back.master == keys.master)
        #expect(back.fingerprint == keys.fingerprint)
        #expect(back.leaseIdentity.id == keys.leaseIdentity.id)
        #expect(back.dedupeKey == keys.dedupeKey && back.metadataKey == keys.metadataKey)
        #expect(RenterKeys.generate().fingerprint != keys.fingerprint)
    }
}

extension Array where Element == UInt8 {
    func contains(subsequence s: [UInt8]) -> Bool {
        guard s.count <= count else { return false }
        for i in 0...(count - s.count) where Array(self[i..<(i + s.count)]) == s { return true }
        return false
    }
}
