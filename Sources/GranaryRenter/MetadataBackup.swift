import Foundation
import GranaryCore
import GranaryDHT
import Logging

/// One database (or other file) a snapshot carries.
public struct SnapshotSource: Sendable {
    /// Path relative to the mount's state folder, where a restore puts it.
    public var name: String
    /// Whether its bytes change all the time for reasons not worth a
    /// snapshot (network.db: audits, reputation). Its placement digest
    /// stands in for it when deciding whether anything changed.
    public var volatile: Bool
    /// Writes a consistent copy of the file at the given path.
    public var copy: @Sendable (String) throws -> Void

    public init(name: String, volatile: Bool = false, copy: @escaping @Sendable (String) throws -> Void) {
        self.name = name; self.volatile = volatile; self.copy = copy
    }
}

/// When and how metadata snapshots are taken and kept.
public struct MetadataBackupConfiguration: Sendable {
    /// Seconds between checks for changes (0: only on flush).
    public var interval: Double = 600
    /// Snapshots kept (and listed in the pointer); older ones are deleted.
    public var keep = 3
    /// Records are signed for this long (a year: see
    /// `SignedRecord.keyOnlyMaxLifetime`) and re-signed and republished this
    /// often while the renter runs, even when nothing changed, so holders
    /// that lost them (new nodes among the closest) get them back. The DHT
    /// node also re-stores them every `DHTConfiguration.republishInterval`.
    public var recordLifetime: Double = SignedRecord.keyOnlyMaxLifetime
    public var resignInterval: Double = 3_600
    public init() {}
}

/// What one snapshot call did.
public struct SnapshotSummary: Sendable, CustomStringConvertible {
    public var sequence: UInt64
    public var created: Date
    /// Sealed bytes stored (0 when nothing had changed).
    public var bytes: Int
    public var segments: Int
    public var farmers: Int
    /// Nothing had changed since the last snapshot: none was taken.
    public var unchanged: Bool
    /// DHT nodes that accepted the pointer.
    public var pointerReplicas: Int

    public var description: String {
        if unchanged { return "metadata snapshot \(sequence) is current (nothing changed)" }
        let pointer = pointerReplicas > 0 ? "pointer on \(pointerReplicas) DHT nodes"
            : "pointer not published yet (no DHT node answered; retried at the next check): `granary restore` cannot find this snapshot until then"
        return "metadata snapshot \(sequence) stored: \(bytes) bytes in \(segments) segment(s) on \(farmers) farmers, \(pointer)"
    }
}

/// Backs up the renter's metadata: takes consistent copies of its
/// databases, seals them with the metadata key into an archive, stores it
/// as ordinary segments (erasure coded over farmers), and publishes in the
/// DHT a signed pointer to the newest `keep` snapshots with the sealed
/// manifests that say where their pieces are. Runs on flush and every
/// `interval` when something changed; deletes older snapshots.
public actor MetadataBackup {
    let engine: RenterEngine
    let node: DHTNode
    let signer: NodeIdentity
    let key: [UInt8]
    let sources: [SnapshotSource]
    let workDirectory: String
    let configuration: MetadataBackupConfiguration
    private var loop: Task<Void, Never>?
    private var tail: Task<Void, Never>?
    private var lastRecordSequence: UInt64 = 0
    private var lastSigned = Date.distantPast
    private var lastReplicas = 0
    /// An unchanged pointer published this recently is not published again.
    static let republishQuietPeriod: Double = 60
    private let log = Logger(label: "granary.backup")

    public init(engine: RenterEngine, node: DHTNode, keys: RenterKeys, sources: [SnapshotSource],
                configuration: MetadataBackupConfiguration = MetadataBackupConfiguration()) {
        self.engine = engine
        self.node = node
        signer = keys.metadataSigningIdentity
        key = keys.metadataKey
        self.sources = sources
        workDirectory = (engine.database.path as NSString).deletingLastPathComponent + "/snapshot-work"
        self.configuration = configuration
    }

    /// Re-signs the pointer and manifests of the snapshots network.db knows
    /// (their records live in DHT memory: a restart must refresh them), then
    /// checks for changes every `interval`.
    public func start() async {
        // Re-signing the pointers is DHT traffic (lookups and stores) that
        // can take many request timeouts when the nodes closest to them
        // are gone: it runs in the background, never before the mount is up.
        guard configuration.interval > 0 else {
            Task { [weak self] in await self?.resign() }
            return
        }
        let interval = configuration.interval
        loop = Task { [weak self] in
            await self?.resign()
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: UInt64(interval * 1e9))
                guard let self, !Task.isCancelled else { return }
                await self.tick()
            }
        }
    }

    public func stop() {
        loop?.cancel()
        loop = nil
    }

    private func tick() async {
        do {
            let s = try await snapshot(republishUnchanged: false)
            if !s.unchanged { log.info("\(s)") }
        } catch {
            log.warning("metadata snapshot failed: \(error); retrying in \(Int(configuration.interval)) s")
        }
        if Date().timeIntervalSince(lastSigned) > configuration.resignInterval { await resign() }
    }

    /// Takes a snapshot unless nothing changed since the last one, stores
    /// it, publishes the pointer, and deletes snapshots beyond `keep`.
    /// Calls run one after another (a flush during a periodic snapshot
    /// waits for it, then takes its own). When nothing changed the pointer
    /// is still re-signed and republished (a flush), unless
    /// `republishUnchanged` is false (the timer: it does so hourly).
    @discardableResult
    public func snapshot(republishUnchanged: Bool = true) async throws -> SnapshotSummary {
        try await serialized { try await self.takeSnapshot(republishUnchanged: republishUnchanged) }
    }

    /// Runs `body` after every earlier snapshot or re-signing has ended, so
    /// a pointer built from older rows never lands after a newer one.
    private func serialized<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let previous = tail
        let task = Task { () async throws -> T in
            await previous?.value
            return try await body()
        }
        tail = Task { _ = try? await task.value }
        return try await task.value
    }

    private func resign() async {
        _ = try? await serialized { () async throws -> Int in
            guard let rows = try? self.engine.database.snapshots(), !rows.isEmpty else { return 0 }
            return await self.publish(rows)
        }
    }

    private func takeSnapshot(republishUnchanged: Bool) async throws -> SnapshotSummary {
        let db = engine.database
        let fm = FileManager.default
        try? fm.removeItem(atPath: workDirectory)
        try fm.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
        defer { try? fm.removeItem(atPath: workDirectory) }

        // Copies first, meta.db before network.db: a segment meta.db names
        // is durable in network.db before meta.db records it.
        var files: [SnapshotArchive.File] = []
        var token: [UInt8] = try db.placementDigest().bytes
        for (i, source) in sources.enumerated() {
            let path = workDirectory + "/\(i)"
            try source.copy(path)
            guard let data = fm.contents(atPath: path) else { throw SegmentStoreError.io("cannot read the copy of \(source.name)") }
            let bytes = [UInt8](data)
            files.append(SnapshotArchive.File(name: source.name, bytes: bytes))
            if !source.volatile { token += Blake2b.hash256(Self.stableImage(bytes)).bytes }
        }
        let changeToken = Blake2b.hash256(token).bytes
        let previous = try db.snapshots()
        if let last = previous.first, last.changeToken == changeToken {
            // Nothing new, but a flush still republishes the pointer: the
            // nodes holding it may have changed since it was last stored.
            // Not again within a minute (a flush then the unmount): with
            // DHT nodes gone, each republish waits out their timeouts.
            let replicas: Int
            if Date().timeIntervalSince(lastSigned) < Self.republishQuietPeriod {
                replicas = lastReplicas
            } else {
                replicas = republishUnchanged ? await publish(previous) : 0
            }
            return SnapshotSummary(sequence: last.sequence, created: last.created, bytes: 0, segments: 0, farmers: 0,
                                   unchanged: true, pointerReplicas: replicas)
        }

        let created = Date()
        let sequence = max((previous.first?.sequence ?? 0) + 1, UInt64(created.timeIntervalSince1970 * 1000))
        let nonce = SecureRandom.bytes(SnapshotArchive.algorithm.nonceByteCount)
        let sealed = try SnapshotArchive(files: files).sealed(key: key, nonce: nonce, sequence: sequence)
        files.removeAll()

        // Store the sealed archive as ordinary segments, claimed first.
        let limit = NetworkSegmentStore.maxSegmentSize
        var segmentIDs: [SegmentID] = []
        do {
            var offset = 0
            while offset < sealed.count {
                let end = min(sealed.count, offset + limit)
                let id = SegmentID.random()
                try db.markSnapshotSegment(id, sequence: sequence)
                segmentIDs.append(id)
                try await engine.store.put(id, bytes: Array(sealed[offset..<end]))
                offset = end
            }
        } catch {
            for id in segmentIDs { try? await engine.store.delete(id) }
            try? db.forgetSnapshot(sequence: sequence)
            throw error
        }

        let manifest = try self.manifest(sequence: sequence, created: created, nonce: nonce, segments: segmentIDs)
        let sealedManifest = try manifest.sealed(key: key)
        try db.recordSnapshot(.init(sequence: sequence, created: created, changeToken: changeToken, manifest: sealedManifest))
        let rows = try db.snapshots()
        let replicas = await publish(rows)
        await deleteBeyondKeep(rows)
        return SnapshotSummary(sequence: sequence, created: created, bytes: sealed.count, segments: segmentIDs.count,
                               farmers: manifest.farmers.count, unchanged: false, pointerReplicas: replicas)
    }

    /// The page image with the header fields SQLite bumps on every open
    /// or copy (change counter, version-valid-for, library version) zeroed.
    static func stableImage(_ bytes: [UInt8]) -> [UInt8] {
        guard bytes.count >= 100 else { return bytes }
        var b = bytes
        for i in 24..<28 { b[i] = 0 }
        for i in 92..<100 { b[i] = 0 }
        return b
    }

    /// Where the segments' stored pieces are, from network.db.
    func manifest(sequence: UInt64, created: Date, nonce: [UInt8], segments ids: [SegmentID]) throws -> SnapshotManifest {
        let db = engine.database
        let contracts = Dictionary(try db.contracts(activeOnly: false).map { ($0.record.id, $0.record) }, uniquingKeysWith: { a, _ in a })
        var farmers: [FarmerContact] = []
        var farmerIndex: [Hash256: Int] = [:]
        var segments: [SnapshotManifest.Segment] = []
        for id in ids {
            guard let row = try db.segment(id), row.state == .durable else { throw SegmentStoreError.notFound(id) }
            var pieces: [SnapshotManifest.Piece] = []
            for p in try db.pieces(of: id) where p.state == .stored {
                guard let contact = contracts[p.contract]?.farmer else { continue }
                let f: Int
                if let known = farmerIndex[contact.id] { f = known } else {
                    f = farmers.count
                    farmers.append(contact)
                    farmerIndex[contact.id] = f
                }
                pieces.append(.init(index: p.index, pieceID: p.pieceID, root: p.root, contract: p.contract, farmer: f))
            }
            segments.append(.init(id: id, length: row.length, scheme: row.scheme, pieces: pieces))
        }
        return SnapshotManifest(sequence: sequence, created: created, nonce: nonce, segments: segments, farmers: farmers)
    }

    /// Signs and stores the manifests of the newest `keep` snapshots and
    /// the pointer listing them. Returns how many DHT nodes took the pointer.
    @discardableResult
    func publish(_ rows: [NetworkDatabase.SnapshotRow]) async -> Int {
        let listed = Array(rows.prefix(configuration.keep))
        let ttl = Duration.seconds(Int64(configuration.recordLifetime))
        var entries: [MetadataPointer.Entry] = []
        for row in listed {
            let parts = stride(from: 0, to: row.manifest.count, by: MetadataPointer.partBytes).map {
                Array(row.manifest[$0..<min(row.manifest.count, $0 + MetadataPointer.partBytes)])
            }
            var ok = true
            for (i, part) in parts.enumerated() {
                do {
                    try await node.putRecord(key: MetadataPointer.manifestKey(sequence: row.sequence, part: i), value: part,
                                             sequence: nextRecordSequence(), ttl: ttl, signedBy: signer)
                } catch {
                    log.warning("manifest of snapshot \(row.sequence) not published: \(error)")
                    ok = false
                }
            }
            if ok {
                entries.append(.init(sequence: row.sequence, created: row.created, parts: parts.count, digest: Blake2b.hash256(row.manifest)))
            }
        }
        do {
            let n = try await node.putRecord(key: MetadataPointer.recordKey, value: MetadataPointer(entries: entries).encoded(),
                                             sequence: nextRecordSequence(), ttl: ttl, signedBy: signer)
            // A pointer no node took counts as not signed: the next check
            // (every `interval`, or the next flush) tries again.
            if n > 0 { lastSigned = Date() } else { log.warning("metadata pointer reached no DHT node; trying again at the next check") }
            lastReplicas = n
            return n
        } catch {
            log.warning("metadata pointer not published: \(error)")
            return 0
        }
    }

    /// Record sequences: milliseconds since the epoch, strictly increasing,
    /// so a renter restored elsewhere (no memory of the last) still wins.
    private func nextRecordSequence() -> UInt64 {
        lastRecordSequence = max(lastRecordSequence + 1, UInt64(Date().timeIntervalSince1970 * 1000))
        return lastRecordSequence
    }

    private func deleteBeyondKeep(_ rows: [NetworkDatabase.SnapshotRow]) async {
        for row in rows.dropFirst(configuration.keep) {
            do {
                for id in try engine.database.snapshotSegments(sequence: row.sequence) { try await engine.store.delete(id) }
                try engine.database.forgetSnapshot(sequence: row.sequence)
                let parts = (row.manifest.count + MetadataPointer.partBytes - 1) / MetadataPointer.partBytes
                for i in 0..<parts { await node.forgetRecord(owner: signer.id, key: MetadataPointer.manifestKey(sequence: row.sequence, part: i)) }
                log.info("deleted metadata snapshot \(row.sequence) (keeping the newest \(configuration.keep))")
            } catch {
                log.warning("could not delete metadata snapshot \(row.sequence): \(error); will retry")
            }
        }
    }
}
