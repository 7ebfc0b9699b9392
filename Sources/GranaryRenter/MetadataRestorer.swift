import Foundation
import GRDB
import GranaryCore
import GranaryDHT
import Logging

/// A snapshot fetched, opened and checked, ready to be written out.
public struct RestoredSnapshot: Sendable {
    public var manifest: SnapshotManifest
    /// The manifest as published, for network.db (`adoptSnapshot`).
    public var sealedManifest: [UInt8]
    public var archive: SnapshotArchive
    /// Newer snapshots the pointer listed that were refused, and why.
    public var refused: [(sequence: UInt64, reason: String)]
}

/// Finds a renter's metadata snapshots with nothing but its master key:
/// joins the DHT, reads and verifies the pointer, fetches a snapshot's
/// sealed manifest from the DHT and its segments' pieces from the farmers
/// (verified against their Merkle roots), decodes, opens and checks it.
public final class MetadataRestorer: Sendable {
    public let node: DHTNode
    let link: TransferFarmerLink
    let keys: RenterKeys
    let pieceTimeout: Double
    private let log = Logger(label: "granary.restore")

    init(node: DHTNode, link: TransferFarmerLink, keys: RenterKeys, pieceTimeout: Double) {
        self.node = node; self.link = link; self.keys = keys; self.pieceTimeout = pieceTimeout
    }

    /// Joins the network through `bootstrap` (HOST:PORT of a seed or any
    /// node) as the renter's own identity: farmers serve its pieces only to it.
    /// `nonceCache` keeps the identity search's result (see `RenterKeys.nodeIdentity`).
    public static func connect(keys: RenterKeys, bootstrap: [String], difficulty: Int = NodeIdentity.configuredDifficulty,
                               pieceTimeout: Double = 30, nonceCache: String? = nil) async throws -> MetadataRestorer {
        let seeds = try bootstrap.map { text -> DHTAddress in
            guard let a = DHTAddress(text) else { throw SegmentStoreError.unavailable("bootstrap address \(text) is not HOST:PORT") }
            return a
        }
        let loopback = seeds.allSatisfy { $0.host == "127.0.0.1" || $0.host == "localhost" || $0.host == "::1" }
        var dht = DHTConfiguration()
        dht.difficulty = difficulty
        let identity = keys.nodeIdentity(difficulty: difficulty, nonceCache: nonceCache)
        let node = try await DHTNode.start(identity: identity, listen: DHTAddress(host: loopback ? "127.0.0.1" : "0.0.0.0", port: 0),
                                           bootstrap: seeds, configuration: dht)
        // The snapshot names farmers where they were when it was taken.
        let link = TransferFarmerLink(identity: identity, difficulty: difficulty)
        let resolver = FarmerAddressResolver(node: node)
        await link.findMovedFarmers(resolve: { await resolver.currentAddress(of: $0) }, changed: { _ in })
        return MetadataRestorer(node: node, link: link, keys: keys, pieceTimeout: pieceTimeout)
    }

    public func close() async {
        await link.shutdown()
        await node.stop()
    }

    /// The newest pointer record under this key's metadata signing key, verified.
    public func pointer() async throws(MetadataRestoreError) -> MetadataPointer {
        let owner = keys.metadataSigningIdentity.id
        // Every holder is asked: one that missed the newest pointer must not
        // make a restore take an older snapshot.
        guard let record = await node.lookupRecord(owner: owner, key: MetadataPointer.recordKey) else {
            throw .noPointer("no DHT node holds a pointer signed by \(owner.short) (was `granary flush` ever run with this key on this network?)")
        }
        let pointer = try MetadataPointer.open(record, keys: keys)
        guard !pointer.entries.isEmpty else { throw .noPointer("the pointer lists no snapshot") }
        return pointer
    }

    /// A snapshot's manifest: its records from the DHT, checked against the
    /// pointer's digest, opened with the metadata key.
    public func manifest(_ entry: MetadataPointer.Entry) async throws -> (manifest: SnapshotManifest, sealed: [UInt8]) {
        let owner = keys.metadataSigningIdentity.id
        var sealed: [UInt8] = []
        for part in 0..<entry.parts {
            guard let r = await node.getRecord(owner: owner, key: MetadataPointer.manifestKey(sequence: entry.sequence, part: part)) else {
                throw MetadataRestoreError.snapshotRefused(sequence: entry.sequence, "part \(part + 1) of \(entry.parts) of its manifest is not in the DHT")
            }
            sealed += r.value
        }
        guard Blake2b.hash256(sealed) == entry.digest else {
            throw MetadataRestoreError.snapshotRefused(sequence: entry.sequence, "its manifest does not match the digest the pointer gives")
        }
        do {
            return (try SnapshotManifest.open(sealed, key: keys.metadataKey, sequence: entry.sequence), sealed)
        } catch {
            throw MetadataRestoreError.snapshotRefused(sequence: entry.sequence, "its manifest does not open with this key: \(error)")
        }
    }

    /// Fetches, decodes and opens a snapshot's archive; refuses one that
    /// is incomplete, altered, or holds a database that fails its check.
    public func fetch(_ manifest: SnapshotManifest) async throws -> SnapshotArchive {
        var sealed: [UInt8] = []
        sealed.reserveCapacity(manifest.sealedLength)
        for segment in manifest.segments {
            sealed += try await fetchSegment(segment, farmers: manifest.farmers, sequence: manifest.sequence)
        }
        let archive: SnapshotArchive
        do {
            archive = try SnapshotArchive.open(sealed, key: keys.metadataKey, nonce: manifest.nonce, sequence: manifest.sequence)
        } catch {
            throw MetadataRestoreError.snapshotRefused(sequence: manifest.sequence, "it does not open with this key (altered or truncated): \(error)")
        }
        for file in archive.files where file.name.hasSuffix(".db") {
            if let why = Self.databaseProblem(file.bytes) {
                throw MetadataRestoreError.snapshotRefused(sequence: manifest.sequence, "\(file.name) fails its check: \(why)")
            }
        }
        return archive
    }

    /// The newest snapshot the pointer lists that can be fetched and
    /// opened; a refused one is reported through `refused` and the next
    /// older one tried.
    public func restoreNewest() async throws -> RestoredSnapshot {
        let pointer = try await self.pointer()
        var refused: [(sequence: UInt64, reason: String)] = []
        for entry in pointer.entries {
            do {
                let (manifest, sealed) = try await self.manifest(entry)
                let archive = try await fetch(manifest)
                return RestoredSnapshot(manifest: manifest, sealedManifest: sealed, archive: archive, refused: refused)
            } catch {
                let reason: String
                if case let MetadataRestoreError.snapshotRefused(_, why)? = error as? MetadataRestoreError { reason = why } else { reason = "\(error)" }
                log.debug("snapshot \(entry.sequence) refused: \(reason); trying the previous one")
                refused.append((sequence: entry.sequence, reason: reason))
            }
        }
        throw MetadataRestoreError.noUsableSnapshot(refused.map { "snapshot \($0.sequence): \($0.reason)" })
    }

    /// Reads whole pieces in parallel until k arrived, then decodes.
    func fetchSegment(_ segment: SnapshotManifest.Segment, farmers: [FarmerContact], sequence: UInt64) async throws -> [UInt8] {
        let scheme = segment.scheme
        let pieceSize = scheme.pieceSize(segmentLength: segment.length)
        if pieceSize == 0 { return [] }
        let link = self.link, timeout = pieceTimeout + Double(pieceSize) / 1_048_576
        var pieces: [Int: [UInt8]] = [:]
        var errors: [String] = []
        await withTaskGroup(of: (Int, Result<[UInt8], Error>).self) { group in
            for p in segment.pieces {
                let farmer = farmers[p.farmer]
                group.addTask {
                    do {
                        let bytes = try await withDeadline(timeout) {
                            try await link.read(pieceID: p.pieceID, root: p.root, pieceSize: pieceSize, range: 0..<pieceSize, farmer: farmer)
                        }
                        return (p.index, .success(bytes))
                    } catch {
                        return (p.index, .failure(error))
                    }
                }
            }
            for await (index, result) in group {
                switch result {
                case let .success(bytes) where bytes.count == pieceSize: pieces[index] = bytes
                case .success: errors.append("piece \(index): wrong size")
                case let .failure(error): errors.append("piece \(index): \(error)")
                }
                if pieces.count >= scheme.k { group.cancelAll(); break }
            }
        }
        guard pieces.count >= scheme.k else {
            throw MetadataRestoreError.snapshotRefused(sequence: sequence,
                "segment \(segment.id.short) has \(pieces.count) readable pieces of the \(scheme.k) needed: \(errors.prefix(3).joined(separator: "; "))")
        }
        do { return try ErasureCoder(scheme: scheme).decode(pieces, segmentLength: segment.length) } catch {
            throw MetadataRestoreError.snapshotRefused(sequence: sequence, "segment \(segment.id.short) does not decode: \(error)")
        }
    }

    /// Nil when the bytes are an SQLite database that passes quick_check.
    static func databaseProblem(_ bytes: [UInt8]) -> String? {
        // A folder of its own: SQLite opens a WAL-mode copy with -wal and
        // -shm files beside it (these were left behind in /tmp, two per check).
        let folder = NSTemporaryDirectory() + "granary-restore-check-\(UUID().uuidString)"
        guard (try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)) != nil else {
            return "cannot make a temporary folder in \(NSTemporaryDirectory())"
        }
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let path = folder + "/snapshot.db"
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else { return "cannot write a temporary copy" }
        do {
            var config = Configuration()
            config.readonly = true
            let queue = try DatabaseQueue(path: path, configuration: config)
            let result = try queue.read { try String.fetchAll($0, sql: "PRAGMA quick_check") }
            try queue.close()
            return result == ["ok"] ? nil : result.prefix(3).joined(separator: "; ")
        } catch {
            return "\(error)"
        }
    }
}
