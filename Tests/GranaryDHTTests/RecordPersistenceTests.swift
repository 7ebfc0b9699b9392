import Foundation
import GranaryCore
import GranaryDHT
import GranaryTestSupport
import GranaryWire
import GRDB
import Testing

/// Records held for others are kept in routing.db: a restarted node serves
/// them again, drops rows that expired or were altered, keeps within its
/// bounds, refuses a replayed older record, and holders republish what
/// they keep to nodes that joined after the original holders left.
@Suite(.serialized) struct RecordPersistenceTests {
    static let pointerKey = SignedRecord.keyOnlyPrefix + Array("granary/metadata-pointer".utf8)

    /// A bare key (as a renter's metadata pointer is signed by).
    static func bareKey() -> NodeIdentity { NodeIdentity(seed: SecureRandom.bytes(32)) }

    /// Sends STORE of `envelope` to `node` from a throwaway identity, as any peer could.
    static func store(_ envelope: Granary_SignedEnvelope, to node: DHTNode) async throws {
        let sender = try await UDPTransport.bind(host: "127.0.0.1", port: 0)
        var m = Granary_DhtStore()
        m.record = envelope
        sender.send(craftDatagram(signer: identity(), port: sender.localAddress.port, .store(m)), to: node.contact.address)
        try await Task.sleep(for: .milliseconds(300))
        await sender.close()
    }

    static func held(_ node: DHTNode, _ owner: Hash256, _ key: [UInt8]) async -> SignedRecord? {
        await node.heldRecords().first { $0.ownerID == owner && $0.key == key }
    }

    @Test(.timeLimit(.minutes(1))) func aRestartedNodeServesTheRecordsItHeld() async throws {
        let dir = TemporaryDirectory("granary-records")
        let net = try await LocalDHTNetwork.start(count: 1, configuration: testConfiguration())
        let publisher = net.nodes[0]
        let me = identity()
        let holder = try await net.makeNode(statePath: dir.path, identity: me)
        try await holder.bootstrap([publisher.contact.address])
        let owner = Self.bareKey()
        // A pointer may live for most of a year (a node's own records a week).
        let stored = try await publisher.putRecord(key: Self.pointerKey, value: [7], sequence: 5, ttl: .seconds(300 * 86_400), signedBy: owner)
        #expect(stored == 1)
        await holder.stop()
        await net.stopAll()  // every node that had it is gone

        let again = try await net.makeNode(statePath: dir.path, identity: me)
        #expect(again.statistics().recordsLoaded == 1)
        let reader = try await net.makeNode()
        try await reader.bootstrap([again.contact.address])
        let r = await reader.getRecord(owner: owner.id, key: Self.pointerKey)
        #expect(r?.value == [7] && r?.sequence == 5)
        #expect((r?.expiresAt ?? .distantPast) > Date().addingTimeInterval(299 * 86_400))
        await reader.stop()
        await again.stop()
    }

    /// A holder that was down while the pointer was updated comes back with
    /// the older one: a lookup for the newest asks every holder and takes
    /// the highest sequence.
    @Test(.timeLimit(.minutes(1))) func aHolderThatMissedAnUpdateDoesNotDecideTheLookup() async throws {
        let dirA = TemporaryDirectory("granary-records-a")
        let net = try await LocalDHTNetwork.start(count: 1, configuration: testConfiguration())
        let publisher = net.nodes[0]
        let meA = identity()
        var stale = try await net.makeNode(statePath: dirA.path, identity: meA)
        try await stale.bootstrap([publisher.contact.address])
        let fresh = try await net.makeNode()
        try await fresh.bootstrap([publisher.contact.address])
        let owner = Self.bareKey()
        #expect(try await publisher.putRecord(key: Self.pointerKey, value: [1], sequence: 1, ttl: .seconds(3600), signedBy: owner) == 2)
        await stale.stop()
        #expect(try await publisher.putRecord(key: Self.pointerKey, value: [2], sequence: 2, ttl: .seconds(3600), signedBy: owner) >= 1)
        stale = try await net.makeNode(statePath: dirA.path, identity: meA)  // back, with sequence 1 from its routing.db
        try await stale.bootstrap([fresh.contact.address])
        #expect(await Self.held(stale, owner.id, Self.pointerKey)?.sequence == 1)
        await publisher.stop()

        let reader = try await net.makeNode()
        try await reader.bootstrap([stale.contact.address])
        let r = await reader.lookupRecord(owner: owner.id, key: Self.pointerKey)
        #expect(r?.sequence == 2 && r?.value == [2], "\(String(describing: r?.sequence))")
        await reader.stop()
        await stale.stop()
        await fresh.stop()
    }

    @Test(.timeLimit(.minutes(1))) func expiredAndAlteredRowsAreDroppedAtLoad() async throws {
        let dir = TemporaryDirectory("granary-records")
        let net = try await LocalDHTNetwork.start(count: 1, configuration: testConfiguration())
        let publisher = net.nodes[0]
        let me = identity()
        let holder = try await net.makeNode(statePath: dir.path, identity: me)
        try await holder.bootstrap([publisher.contact.address])
        let short = Array("short".utf8), altered = Array("altered".utf8), good = Array("good".utf8)
        #expect(try await publisher.putRecord(key: short, value: [1], sequence: 1, ttl: .seconds(1)) == 1)
        #expect(try await publisher.putRecord(key: altered, value: [2, 2, 2, 2], sequence: 1, ttl: .seconds(600)) == 1)
        #expect(try await publisher.putRecord(key: good, value: [3], sequence: 1, ttl: .seconds(600)) == 1)
        await holder.stop()
        await net.stopAll()

        // One byte of a stored envelope changes on disk; another record expires.
        let db = try DatabaseQueue(path: dir.path + "/routing.db")
        let alteredKey = Data(SignedRecord.storageKey(owner: publisher.id, key: altered).bytes)
        try await db.write { db in
            var bytes = [UInt8](try Data.fetchOne(db, sql: "SELECT envelope FROM record WHERE storage_key = ?", arguments: [alteredKey])!)
            let at = bytes.lastIndex(of: 2)!  // inside the signed value
            bytes[at] = 9
            try db.execute(sql: "UPDATE record SET envelope = ? WHERE storage_key = ?", arguments: [Data(bytes), alteredKey])
        }
        try await Task.sleep(for: .milliseconds(1500))

        let again = try await net.makeNode(statePath: dir.path, identity: me)
        #expect(again.statistics().recordsLoaded == 1)
        #expect(again.statistics().recordsDroppedAtLoad == 2)
        #expect(await Self.held(again, publisher.id, good)?.value == [3])
        #expect(await Self.held(again, publisher.id, altered) == nil)
        #expect(await Self.held(again, publisher.id, short) == nil)
        await again.stop()
        // The dropped rows are gone from the file.
        #expect(try await db.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM record") } == 1)
    }

    @Test(.timeLimit(.minutes(1))) func storageIsBoundedInCountAndSize() async throws {
        let dir = TemporaryDirectory("granary-records")
        var config = testConfiguration()
        config.maxStoredRecords = 3
        let net = try await LocalDHTNetwork.start(count: 1, configuration: config)
        let publisher = net.nodes[0]
        let me = identity()
        let holder = try await net.makeNode(statePath: dir.path, identity: me)
        try await holder.bootstrap([publisher.contact.address])
        var keys: [Hash256] = []
        for i in 0..<5 {
            let key = Array("k\(i)".utf8)
            _ = try await publisher.putRecord(key: key, value: [UInt8(i)], sequence: 1, ttl: .seconds(600))
            keys.append(SignedRecord.storageKey(owner: publisher.id, key: key))
        }
        // A full node keeps the records closest to it, whatever their order.
        let held = await holder.heldRecords().map(\.storageKey)
        #expect(held.count == 3, "a node holds at most maxStoredRecords")
        let closest = keys.sorted { ($0 ^ me.id) < ($1 ^ me.id) }.prefix(3)
        #expect(Set(held) == Set(closest), "a full node keeps the keys closest to its ID")
        #expect(try RoutingTableStore(path: dir.path + "/routing.db").recordCount() == 3, "routing.db holds what the node holds")
        // A record padded past the size bound with a field no reader knows
        // (its key and value within their limits, its signature valid).
        let owner = Self.bareKey()
        let small = try SignedRecord(owner: owner, key: Self.pointerKey, value: [1], sequence: 1, expiresAt: Date().addingTimeInterval(600))
        let padding: [UInt8] = [0xA2, 0x06, 0xB8, 0x17] + [UInt8](repeating: 0x55, count: 3000)  // field 100, 3,000 bytes
        let padded = Granary_SignedEnvelope(kind: .record, body: small.envelope.body + Data(padding), signer: owner)
        let before = holder.statistics().dropped["record-rejected"] ?? 0
        try await Self.store(padded, to: holder)
        #expect(await eventually { (holder.statistics().dropped["record-rejected"] ?? 0) > before })
        #expect(await Self.held(holder, owner.id, Self.pointerKey) == nil)
        await holder.stop()
        await net.stopAll()

        // Restarted with a lower limit, it loads only that many and deletes the rest.
        var lower = testConfiguration()
        lower.maxStoredRecords = 2
        let smaller = try await LocalDHTNetwork.start(count: 1, configuration: lower)
        let again = try await smaller.makeNode(statePath: dir.path, identity: me)
        #expect(again.statistics().recordsLoaded == 2 && again.statistics().recordsDroppedAtLoad == 1)
        await again.stop()
        await smaller.stopAll()
    }

    @Test(.timeLimit(.minutes(1))) func aReplayedOlderRecordIsRefusedAlsoAfterARestart() async throws {
        let dir = TemporaryDirectory("granary-records")
        let net = try await LocalDHTNetwork.start(count: 1, configuration: testConfiguration())
        let me = identity()
        let holder = try await net.makeNode(statePath: dir.path, identity: me)
        let owner = Self.bareKey()
        let expires = Date().addingTimeInterval(200 * 86_400)
        let one = try SignedRecord(owner: owner, key: Self.pointerKey, value: [1], sequence: 1, expiresAt: expires)
        let two = try SignedRecord(owner: owner, key: Self.pointerKey, value: [2], sequence: 2, expiresAt: expires)
        let twoAgain = try SignedRecord(owner: owner, key: Self.pointerKey, value: [22], sequence: 2, expiresAt: expires)
        try await Self.store(one.envelope, to: holder)
        try await Self.store(two.envelope, to: holder)
        #expect(await eventually { await Self.held(holder, owner.id, Self.pointerKey)?.sequence == 2 })
        try await Self.store(one.envelope, to: holder)
        try await Self.store(twoAgain.envelope, to: holder)
        #expect(await Self.held(holder, owner.id, Self.pointerKey)?.value == [2])
        await holder.stop()

        let again = try await net.makeNode(statePath: dir.path, identity: me)
        try await Self.store(one.envelope, to: again)
        #expect(await Self.held(again, owner.id, Self.pointerKey)?.value == [2], "the old record replayed after a restart")
        // A pointer signed to live longer than its limit is refused.
        let tooLong = try SignedRecord(owner: owner, key: Self.pointerKey, value: [3], sequence: 3,
                                       expiresAt: Date().addingTimeInterval(SignedRecord.keyOnlyMaxLifetime + 86_400))
        try await Self.store(tooLong.envelope, to: again)
        #expect(await Self.held(again, owner.id, Self.pointerKey)?.value == [2])
        await again.stop()
        await net.stopAll()
    }

    @Test(.timeLimit(.minutes(2))) func holdersRepublishToNodesThatJoinAfterTheOriginalHoldersLeave() async throws {
        var config = testConfiguration()
        config.republishInterval = .seconds(2)
        let net = try await LocalDHTNetwork.start(count: 3, configuration: config)
        let publisher = try await net.makeNode()
        try await publisher.bootstrap([net.nodes[0].contact.address])
        let owner = Self.bareKey()
        #expect(try await publisher.putRecord(key: Self.pointerKey, value: [4], sequence: 1, ttl: .seconds(600), signedBy: owner) == 3)
        await publisher.stop()  // the owner is gone: only holders republish now

        var newcomers: [DHTNode] = []
        for _ in 0..<4 {
            let n = try await net.makeNode()
            try await n.bootstrap([net.nodes[0].contact.address])
            newcomers.append(n)
        }
        let spread = await eventually(.seconds(40)) {
            for n in newcomers {
                if await Self.held(n, owner.id, Self.pointerKey) == nil { return false }
            }
            return true
        }
        #expect(spread, "the holders republished the record to the nodes that joined")
        await net.stopAll()  // the original holders leave

        let reader = try await net.makeNode()
        try await reader.bootstrap([newcomers[2].contact.address])
        #expect(await reader.getRecord(owner: owner.id, key: Self.pointerKey)?.value == [4])
        await reader.stop()
        for n in newcomers { await n.stop() }
    }
}

/// routing.db from before records were kept is migrated; one from a newer
/// granary is refused and left alone.
@Suite struct RoutingDatabaseSchemaTests {
    @Test func anOlderFileIsMigratedAndANewerOneRefused() throws {
        let dir = TemporaryDirectory("granary-routing-schema")
        let old = dir.path + "/old.db"
        do {
            let db = try DatabaseQueue(path: old)
            try db.write { db in
                try db.execute(sql: """
                    CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
                    INSERT INTO grdb_migrations VALUES ('v1-contacts');
                    CREATE TABLE contact (node_id BLOB PRIMARY KEY, public_key BLOB NOT NULL, host TEXT NOT NULL,
                                          port INTEGER NOT NULL, last_seen DOUBLE NOT NULL);
                    """)
            }
            try db.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA user_version = 1") }
        }
        let store = try RoutingTableStore(path: old)
        #expect(try store.recordCount() == 0)
        let version = try DatabaseQueue(path: old).read { db in try Int.fetchOne(db, sql: "PRAGMA user_version") }
        #expect(version == RoutingTableStore.schema.version)

        let newer = dir.path + "/newer.db"
        _ = try RoutingTableStore(path: newer)
        let future = try DatabaseQueue(path: newer)
        try future.writeWithoutTransaction { db in
            try db.execute(sql: "INSERT INTO grdb_migrations VALUES ('v9-future')")
            try db.execute(sql: "PRAGMA user_version = 9")
        }
        do {
            _ = try RoutingTableStore(path: newer)
            Issue.record("a routing.db from a newer granary was opened")
        } catch {
            #expect("\(error)".contains("newer granary"), "\(error)")
        }
    }
}

/// A renter's node identity does not depend on the configured difficulty,
/// and its search is cached in the state folder.
@Suite struct RenterIdentityTests {
    @Test func theIdentityIsTheSameWhateverTheConfiguredDifficulty() {
        let keys = RenterKeys.generate()
        let low = keys.nodeIdentity(difficulty: 4), embedded = keys.nodeIdentity(difficulty: 12)
        let production = keys.nodeIdentity(difficulty: NodeIdentity.defaultDifficulty)
        #expect(low.id == embedded.id && embedded.id == production.id)
        #expect(low.publicKey.proofOfWorkBits >= NodeIdentity.defaultDifficulty)
        #expect(RenterKeys.identityDifficulty(configured: 4) == NodeIdentity.defaultDifficulty)
        #expect(RenterKeys.identityDifficulty(configured: 20) == 20)
    }

    /// A state folder from before the cache holds contracts made with the
    /// identity searched at the configured difficulty: the mount keeps it
    /// (and caches it) instead of moving to the production-difficulty one.
    @Test func anOlderStateKeepsItsIdentity() throws {
        let dir = TemporaryDirectory("granary-identity-older")
        let path = dir.path + "/identity.nonce"
        let keys = RenterKeys.generate()
        let production = keys.nodeIdentity(difficulty: 4)
        let older = keys.nodeIdentity(difficulty: 4, nonceCache: path, keepingOlderIdentity: true)
        #expect(older.publicKey.proofOfWorkBits >= 4)
        #expect(older.id != production.id || older.publicKey.proofOfWorkBits >= NodeIdentity.defaultDifficulty)
        #expect(keys.nodeIdentity(difficulty: 4, nonceCache: path).id == older.id, "the cached older identity is kept")
        // A network asking for more than the older identity meets: a new search, at production difficulty.
        if older.publicKey.proofOfWorkBits < 12 {
            #expect(keys.nodeIdentity(difficulty: 12, nonceCache: path).id == production.id)
        }
    }

    @Test func theSearchIsCachedAndABadCacheIsIgnoredAndRewritten() throws {
        let dir = TemporaryDirectory("granary-identity")
        let path = dir.path + "/identity.nonce"
        let keys = RenterKeys.generate()
        let first = keys.nodeIdentity(difficulty: 4, nonceCache: path)
        func fields() -> [String] {
            (try? String(contentsOfFile: path, encoding: .utf8))?.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) } ?? []
        }
        let written = fields()
        #expect(written.count == 5 && written[0] == "granary-identity-nonce" && written[3] == "\(NodeIdentity.defaultDifficulty)")
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        guard written.count == 5, let counter = UInt64(written[4]) else { return }
        #expect(keys.nodeIdentity(difficulty: 4, nonceCache: path).id == first.id)
        #expect(keys.nodeIdentity(difficulty: 12, nonceCache: path).id == first.id, "the same cache serves any configured difficulty up to production")

        // Each bad cache is ignored (the search runs again, same identity) and rewritten.
        let otherTag = Hex.encode(SecureRandom.bytes(8))
        let bad: [String] = [
            // A counter below the one found: its key misses the proof of work.
            counter > 0 ? "granary-identity-nonce 1 \(written[2]) \(written[3]) \(counter - 1)\n" : "garbage",
            // Another key's cache (its tag differs).
            "granary-identity-nonce 1 \(otherTag) \(written[3]) \(counter)\n",
            // A cache made at another difficulty.
            "granary-identity-nonce 1 \(written[2]) 20 \(counter)\n",
            "not a cache at all\n",
        ]
        for text in bad {
            try SecretFile.write(Array(text.utf8), to: path)
            #expect(keys.nodeIdentity(difficulty: 4, nonceCache: path).id == first.id, "after cache \(text)")
            #expect(fields() == written, "the cache is rewritten after \(text)")
        }
        // A cache others can read is not trusted either.
        try SecretFile.write(Array("granary-identity-nonce 1 \(written[2]) \(written[3]) \(counter)\n".utf8), to: path)
        chmod(path, 0o644)
        #expect(keys.nodeIdentity(difficulty: 4, nonceCache: path).id == first.id)
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        // No folder for the cache: the identity is found, nothing is written.
        #expect(keys.nodeIdentity(difficulty: 4, nonceCache: dir.path + "/missing/identity.nonce").id == first.id)
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/missing"))
    }
}
