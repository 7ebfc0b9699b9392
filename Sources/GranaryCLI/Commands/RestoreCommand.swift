import ArgumentParser
import Foundation
import GranaryCore
import GranaryRenter

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore", abstract: "Rebuild a folder on a new machine from the key alone.",
        discussion: """
            Joins the network through --bootstrap, finds the renter's signed metadata pointer in the DHT \
            (under a key derived from the master key), fetches the newest snapshot that verifies from the \
            farmers, and rebuilds the state folder: meta.db, network/network.db and the key file. \
            Then `granary mount MOUNTPOINT --bootstrap ... --state DIR` shows the files as of that snapshot. \
            A snapshot that is altered, truncated or unreadable is refused and the previous one is used.
            """)

    @Option(help: "A network node to join, HOST:PORT (a seed or any node; repeatable).") var bootstrap: [String] = []
    @Option(help: "The renter's key file (master.key, or one written by `granary key export --to`).") var key: String
    @Option(name: .customLong("passphrase-file"), help: "Read the key file's passphrase from this file (else GRANARY_PASSPHRASE, else a prompt on a terminal).")
    var passphraseFile: String?
    @Option(help: "State folder to rebuild (must not hold a meta.db yet).") var state: String = MountCommand.defaultState

    func run() async throws {
        guard !bootstrap.isEmpty else { throw ValidationError("say which network to restore from: --bootstrap HOST:PORT") }
        let fm = FileManager.default
        let stateDirectory = URL(fileURLWithPath: state).standardizedFileURL.path
        if fm.fileExists(atPath: stateDirectory + "/meta.db") {
            throw ValidationError("\(stateDirectory) already holds a meta.db: restore into an empty folder, or move that one away first")
        }
        let (keys, keyFileBytes) = try RestoreCommand.loadKey(key, passphrase: PassphraseSource(file: passphraseFile))

        print("granary restore: joining the network through \(bootstrap.joined(separator: ", "))")
        fflush(nil)
        // The folder first, so the identity search is cached for the mount.
        try fm.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true)
        chmod(stateDirectory, 0o700)
        let restorer = try await MetadataRestorer.connect(keys: keys, bootstrap: bootstrap,
                                                          nonceCache: stateDirectory + "/identity.nonce")
        let restored: RestoredSnapshot
        do {
            restored = try await restorer.restoreNewest()
            await restorer.close()
        } catch {
            await restorer.close()
            throw RestoreFailure(description: "\(error)")
        }
        for r in restored.refused {
            print("granary restore: snapshot \(r.sequence) (\(Self.format(sequence: r.sequence))) refused: \(r.reason)")
        }

        for file in restored.archive.files {
            let path = stateDirectory + "/" + file.name
            try fm.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try? fm.removeItem(atPath: path)
            try? fm.removeItem(atPath: path + "-wal")
            try? fm.removeItem(atPath: path + "-shm")
            try SecretFile.write(file.bytes, to: path)  // 0600, fsynced, renamed into place
        }
        // network.db's copy predates the snapshot's own segments: record them.
        let networkPath = stateDirectory + "/network/network.db"
        if fm.fileExists(atPath: networkPath) {
            let db = try NetworkDatabase(path: networkPath)
            try db.adoptSnapshot(restored.manifest, sealedManifest: restored.sealedManifest)
        }
        // The key file exactly as given (whatever its format), private.
        try SecretFile.write(keyFileBytes, to: stateDirectory + "/master.key")

        let m = restored.manifest
        print("granary restore: restored snapshot \(m.sequence) taken \(Self.format(sequence: m.sequence)) "
              + "(\(m.sealedLength) bytes from \(m.farmers.count) farmers) into \(stateDirectory)")
        print("  next: granary mount MOUNTPOINT --bootstrap \(bootstrap.joined(separator: " --bootstrap ")) --state \(stateDirectory)")
    }

    /// The key, opened as a mount opens master.key (sealed or plain), and
    /// the file's bytes: the state folder gets the file exactly as given.
    static func loadKey(_ path: String, passphrase: PassphraseSource) throws -> (RenterKeys, [UInt8]) {
        // Read once: the bytes that are opened are the bytes copied into the state folder.
        let bytes: [UInt8]
        do { bytes = try SecretFile.read(path) } catch { throw ValidationError("cannot read the key file: \(error)") }
        let keys = try RenterKeyFile.unlock(KeyFile(parsing: bytes, path: path), with: passphrase).keys
        return (keys, bytes)
    }

    static func format(sequence: UInt64) -> String {
        let f = ISO8601DateFormatter()
        return f.string(from: Date(timeIntervalSince1970: Double(sequence) / 1000))
    }
}

/// A restore that found nothing usable, with why.
struct RestoreFailure: Error, CustomStringConvertible {
    let description: String
}
