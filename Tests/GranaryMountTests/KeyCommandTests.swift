import Foundation
import GranaryTestSupport
import Testing

/// `granary key` and how `granary mount` opens its key, through the real
/// binary. Argon2id runs with libsodium's "interactive" limits here
/// (GRANARY_KDF=interactive) to keep the suite quick.
@Suite(.serialized) struct KeyCommandTests {
    static let kdf = "GRANARY_KDF=interactive"

    func granary(_ args: String, env: String = "", stdin: String? = nil) throws -> Shell.Result {
        let bin = try GranaryBinary.require()
        let command = "env \(Self.kdf) \(env) '\(bin)' \(args)"
        return Shell.run(stdin.map { "printf '%s\\n' '\($0)' | \(command)" } ?? "\(command) < /dev/null", timeout: 60)
    }

    static func phrase(in output: String) -> String? {
        output.split(separator: "\n").map(String.init).first { $0.split(separator: "-").count == 17 }
    }

    @Test(.timeLimit(.minutes(2)))
    func passphraseKeyFileExportImportRoundTrip() throws {
        let dir = TemporaryDirectory("granary-key")
        let a = dir.path + "/a", b = dir.path + "/b", c = dir.path + "/c"
        let pass = "GRANARY_PASSPHRASE='s3cret words'"

        let initialized = try granary("key init --state '\(a)'", env: pass)
        #expect(initialized.status == 0 && initialized.output.contains("sealed with a passphrase"), "\(initialized.output)")
        let raw = try Data(contentsOf: URL(fileURLWithPath: a + "/master.key"))
        #expect(raw.starts(with: Array("GRNRYKEY".utf8)) && raw.count > 42)
        #expect(try granary("key init --state '\(a)'", env: pass).status != 0, "init never overwrites a key")

        // Wrong and missing passphrases fail clearly, without a prompt (stdin is not a terminal).
        let wrong = try granary("key export --state '\(a)'", env: "GRANARY_PASSPHRASE=nope")
        #expect(wrong.status != 0 && wrong.output.contains("wrong passphrase or damaged key file"), "\(wrong.output)")
        let none = try granary("key export --state '\(a)'")
        #expect(none.status != 0 && none.output.contains("GRANARY_PASSPHRASE"), "\(none.output)")
        let passFile = dir.path + "/pass"
        try "s3cret words\n".write(toFile: passFile, atomically: true, encoding: .utf8)

        // Phrase out, phrase in (from stdin), same key.
        let exported = try granary("key export --state '\(a)' --passphrase-file '\(passFile)'")
        let phrase = try #require(Self.phrase(in: exported.output), "\(exported.output)")
        let imported = try granary("key import --state '\(b)' --plain", stdin: phrase)
        #expect(imported.status == 0 && imported.output.contains("WITHOUT a passphrase"), "\(imported.output)")
        #expect(Self.phrase(in: try granary("key export --state '\(b)'").output) == phrase)

        // Key file out (sealed with the same passphrase), key file in.
        let copy = dir.path + "/backup.key"
        #expect(try granary("key export --state '\(a)' --to '\(copy)'", env: pass).status == 0)
        let fromFile = try granary("key import --state '\(c)' --from '\(copy)'", env: pass)
        #expect(fromFile.status == 0 && fromFile.output.contains("sealed"), "\(fromFile.output)")
        #expect(Self.phrase(in: try granary("key export --state '\(c)'", env: pass).output) == phrase)

        // Importing a different key over an existing one is refused.
        let other = try granary("key init --state '\(dir.path)/d' --plain")
        #expect(other.status == 0)
        let clash = try granary("key import --state '\(b)' --from '\(dir.path)/d/master.key'")
        #expect(clash.status != 0 && clash.output.contains("already holds"), "\(clash.output)")

        // Changing the passphrase keeps the key.
        let changed = try granary("key passphrase --state '\(a)'", env: pass + " GRANARY_NEW_PASSPHRASE=other")
        #expect(changed.status == 0, "\(changed.output)")
        #expect(Self.phrase(in: try granary("key export --state '\(a)'", env: "GRANARY_PASSPHRASE=other").output) == phrase)
    }

    @Test(.timeLimit(.minutes(2)))
    func mountRefusesAKeyOthersCanReadAndAMissingKeyWithoutProtection() throws {
        let dir = TemporaryDirectory("granary-key-mount")
        let state = dir.path + "/state"
        // No key, no passphrase, no terminal, no --plain-key: refused, nothing created.
        let bare = try granary("mount '\(dir.path)/mnt' --state '\(state)' --local-segments '\(dir.path)/seg'")
        #expect(bare.status != 0 && bare.output.contains("--plain-key"), "\(bare.output)")
        #expect(!FileManager.default.fileExists(atPath: state + "/master.key"))

        // The original raw 32-byte format, readable by others: refused.
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: state + "/master.key", contents: Data((0..<32).map { UInt8($0) }))
        chmod(state + "/master.key", 0o644)
        let open = try granary("mount '\(dir.path)/mnt' --state '\(state)' --local-segments '\(dir.path)/seg'")
        #expect(open.status != 0 && open.output.contains("refusing a key others can read"), "\(open.output)")
        // Made private, the old format still opens (the phrase comes out).
        chmod(state + "/master.key", 0o600)
        let phrase = try granary("key export --state '\(state)'")
        #expect(phrase.status == 0 && Self.phrase(in: phrase.output)?.hasPrefix("0001-0203") == true, "\(phrase.output)")
    }
}
