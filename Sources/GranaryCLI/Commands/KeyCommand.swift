import ArgumentParser
import Foundation
import GranaryCore

/// Key custody: the renter's master key lives in `STATE/master.key`; these
/// commands create it, back it up (recovery phrase or key file), restore it
/// and change its passphrase.
struct KeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key", abstract: "Key custody: create, export, import and protect the renter's master key.",
        discussion: """
            The key file is STATE/master.key (mode 0600), sealed with a passphrase (Argon2id) unless created \
            with --plain. Passphrases come from --passphrase-file FILE, the GRANARY_PASSPHRASE environment variable, \
            or a prompt when stdin is a terminal. The key alone decrypts your files: back it up with \
            `granary key export` (a recovery phrase to write down, or a key file).
            """,
        subcommands: [Init.self, Export.self, Import.self, Passphrase.self])

    struct Location: ParsableArguments {
        @Option(help: "State folder holding master.key.") var state: String = MountCommand.defaultState
        @Option(name: .customLong("passphrase-file"), help: "Read the key file's passphrase from this file (first line).")
        var passphraseFile: String?

        var keyPath: String { RenterKeyFile.path(state: state) }
        var passphrase: PassphraseSource { PassphraseSource(file: passphraseFile) }
    }

    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a new renter key in the state folder.")
        @OptionGroup var location: Location
        @Flag(help: "Store the key without a passphrase.") var plain = false

        func run() async throws {
            let path = location.keyPath
            if FileManager.default.fileExists(atPath: path) {
                throw ValidationError("\(path) already exists; a state folder holds one key (back it up with `granary key export`)")
            }
            let passphrase = plain ? nil : try location.passphrase.forNewKey(path)
            if !plain && passphrase == nil {
                throw ValidationError("give the new key a passphrase (--passphrase-file FILE, GRANARY_PASSPHRASE, or run in a terminal) or say --plain")
            }
            let keys = RenterKeys.generate()
            try RenterKeyFile.create(keys, at: path, passphrase: passphrase)
            print("created \(path), \(RenterKeyFile.describe(passphrase)); key fingerprint \(keys.fingerprint)")
            print("back it up now: granary key export --state \(location.state)   (prints the recovery phrase)")
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the recovery phrase, or write a copy of the key file.",
            discussion: "Without --to, prints the key's recovery phrase (17 groups of 4 hex digits with a checksum) on stdout.")
        @OptionGroup var location: Location
        @Option(help: "Write a key file here instead of printing the phrase.") var to: String?
        @Flag(help: "With --to: write the copy without a passphrase.") var plain = false
        @Option(name: .customLong("new-passphrase-file"), help: "With --to: protect the copy with this passphrase instead of the key's own.")
        var newPassphraseFile: String?

        func run() async throws {
            let opened = try RenterKeyFile.unlock(location.keyPath, with: location.passphrase)
            guard let to else {
                FileHandle.standardError.write(Data("recovery phrase of \(location.keyPath) (fingerprint \(opened.keys.fingerprint)); anyone who has it has your data:\n".utf8))
                print(opened.keys.recoveryPhrase)
                return
            }
            let passphrase = try RenterKeyFile.newPassphrase(plain: plain, newFile: newPassphraseFile, reuse: opened.passphrase,
                                                             primary: location.passphrase, what: to)
            try RenterKeyFile.create(opened.keys, at: to, passphrase: passphrase)
            print("wrote \(to), \(RenterKeyFile.describe(passphrase)); key fingerprint \(opened.keys.fingerprint)")
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the state folder's key file from a recovery phrase or an exported key file.",
            discussion: """
                With neither --phrase nor --from, reads the recovery phrase from stdin. The new key file is sealed with \
                a passphrase (--passphrase-file, GRANARY_PASSPHRASE or a prompt; from a sealed --from file, its own \
                passphrase) unless --plain.
                """)
        @OptionGroup var location: Location
        @Option(help: "The recovery phrase (beware: command lines are visible to other users; stdin is safer).") var phrase: String?
        @Option(help: "An exported key file to import.") var from: String?
        @Flag(help: "Store the key without a passphrase.") var plain = false
        @Option(name: .customLong("new-passphrase-file"), help: "With --from: protect the imported key with this passphrase instead.")
        var newPassphraseFile: String?
        @Flag(help: "Replace a different key already in the state folder (its files become unreadable here).") var force = false

        func run() async throws {
            let keys: RenterKeys
            var reuse: [UInt8]?
            if let from {
                if phrase != nil { throw ValidationError("give --phrase or --from, not both") }
                let opened = try RenterKeyFile.unlock(from, with: location.passphrase)
                keys = opened.keys
                reuse = opened.passphrase
            } else {
                let text = phrase ?? (TerminalPrompt.isAvailable ? TerminalPrompt.line("Recovery phrase: ") : readLine(strippingNewline: true))
                guard let text, !text.isEmpty else { throw ValidationError("no recovery phrase given (--phrase, --from FILE, or on stdin)") }
                keys = try RenterKeys(recoveryPhrase: text)
            }
            let path = location.keyPath
            if FileManager.default.fileExists(atPath: path) {
                let existing = try? RenterKeyFile.unlock(path, with: location.passphrase)
                if let existing, existing.keys.master == keys.master {
                    print("\(path) already holds this key (fingerprint \(keys.fingerprint)); nothing to do")
                    return
                }
                if !force {
                    throw ValidationError("""
                        \(path) already holds \(existing.map { "another key (fingerprint \($0.keys.fingerprint))" } ?? "a key") \
                        and files encrypted under it; import into a new --state folder, or pass --force to replace it
                        """)
                }
            }
            let passphrase: [UInt8]?
            if from != nil {
                passphrase = try RenterKeyFile.newPassphrase(plain: plain, newFile: newPassphraseFile, reuse: reuse,
                                                             primary: location.passphrase, what: path)
            } else if plain {
                passphrase = nil
            } else {
                guard let p = try location.passphrase.forNewKey(path) else {
                    throw ValidationError("give the key file a passphrase (--passphrase-file FILE, GRANARY_PASSPHRASE, or run in a terminal) or say --plain")
                }
                passphrase = p
            }
            try FileManager.default.createDirectory(atPath: location.state, withIntermediateDirectories: true)
            chmod(location.state, 0o700)
            try RenterKeyFile.create(keys, at: path, passphrase: passphrase, replace: force)
            print("wrote \(path), \(RenterKeyFile.describe(passphrase)); key fingerprint \(keys.fingerprint)")
        }
    }

    struct Passphrase: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set, change or remove the passphrase of the state folder's key file.",
            discussion: "Opens the key with its current passphrase (if any) and rewrites it sealed with the new one (--new-passphrase-file, GRANARY_NEW_PASSPHRASE or a prompt), or plain with --plain.")
        @OptionGroup var location: Location
        @Flag(help: "Rewrite the key without a passphrase.") var plain = false
        @Option(name: .customLong("new-passphrase-file"), help: "Read the new passphrase from this file.") var newPassphraseFile: String?

        func run() async throws {
            let path = location.keyPath
            let opened = try RenterKeyFile.unlock(path, with: location.passphrase)
            let explicit = PassphraseSource(file: newPassphraseFile, environmentName: "GRANARY_NEW_PASSPHRASE")
            let passphrase: [UInt8]?
            if plain {
                passphrase = nil
            } else if let p = try explicit.forNewKey(path) {
                passphrase = p
            } else if !opened.file.isProtected, location.passphrase.isGivenNonInteractively {
                passphrase = try location.passphrase.forNewKey(path)  // sealing a plain key with GRANARY_PASSPHRASE
            } else {
                throw ValidationError("give the new passphrase (--new-passphrase-file FILE, GRANARY_NEW_PASSPHRASE, or run in a terminal) or say --plain")
            }
            try RenterKeyFile.create(opened.keys, at: path, passphrase: passphrase, replace: true)
            print("rewrote \(path), \(RenterKeyFile.describe(passphrase)); key fingerprint \(opened.keys.fingerprint)")
        }
    }
}
