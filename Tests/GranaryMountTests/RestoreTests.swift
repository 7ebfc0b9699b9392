import Foundation
import GranaryCore
import GranaryRenter
import GranaryTestSupport
import Testing

/// Metadata backup and `granary restore` against a real seed and farmer
/// processes: flushes publish snapshots; with the state folder deleted and
/// only the key kept, restore + mount show every flushed file bit-exact;
/// snapshots whose pieces were altered or truncated on the farmers are
/// refused and the newest intact one restored.
@Suite(.serialized) struct RestoreTests {
    static let env = ["GRANARY_POW_BITS": "4"]

    /// A seed and farmers on loopback, killed on release. `restartAll`
    /// stops every one of them and starts them again on the same state
    /// folders and addresses, as after a power cut.
    final class Network {
        var seed: ChildProcess
        let seedAddress: String
        let seedState: String
        var farmers: [ChildProcess] = []
        var storages: [String] = []
        /// Each farmer's transfer (TCP) and DHT (UDP) address, as it printed them.
        var farmerAddresses: [(tcp: String, udp: String)] = []

        init(dir: TemporaryDirectory, farmers count: Int) throws {
            seedState = dir.sub("seed")
            seed = try ChildProcess.granary(["seed", "--listen", "127.0.0.1:0", "--state", seedState], name: "seed", environment: env)
            let line = try seed.waitForLine(timeout: 30) { $0.contains("listening") && $0.contains("udp=") }
            seedAddress = Self.field("udp", in: line)
            for i in 0..<count {
                let storage = dir.sub("farmer\(i)")
                farmers.append(try Self.farmer(storage: storage, tcp: "127.0.0.1:0", udp: nil, seed: seedAddress, name: "farmer\(i)"))
                storages.append(storage)
            }
            for f in farmers {
                let line = try f.waitForLine(timeout: 60) { $0.contains("listening") && $0.contains("tcp=") }
                farmerAddresses.append((Self.field("tcp", in: line), Self.field("udp", in: line)))
            }
        }

        static func field(_ name: String, in line: String) -> String {
            String(line.split(separator: " ").first { $0.hasPrefix(name + "=") }!.dropFirst(name.count + 1))
        }

        static func farmer(storage: String, tcp: String, udp: String?, seed: String, name: String) throws -> ChildProcess {
            try ChildProcess.granary(["farm", "--storage", storage, "--capacity", "8G", "--listen", tcp, "--bootstrap", seed]
                                     + (udp.map { ["--dht-listen", $0] } ?? []), name: name, environment: env)
        }

        func restartAll() throws {
            for f in farmers { f.stop(grace: 20) }
            seed.stop(grace: 20)
            seed = try ChildProcess.granary(["seed", "--listen", seedAddress, "--state", seedState], name: "seed", environment: env)
            _ = try seed.waitForLine(timeout: 30) { $0.contains("listening") && $0.contains("udp=") }
            farmers = try storages.indices.map { i in
                try Self.farmer(storage: storages[i], tcp: farmerAddresses[i].tcp, udp: farmerAddresses[i].udp, seed: seedAddress, name: "farmer\(i)")
            }
            for f in farmers { _ = try f.waitForLine(timeout: 60) { $0.contains("listening") && $0.contains("tcp=") } }
        }

        deinit {
            for f in farmers { f.stop(grace: 5) }
            seed.stop(grace: 5)
        }
    }

    /// A network mount of `state` at `mnt`; unmounted and killed by `stop`.
    final class NetworkMount {
        let child: ChildProcess
        let mnt: String
        init(state: String, mnt: String, seed: String) throws {
            self.mnt = mnt
            child = try ChildProcess.granary(["mount", mnt, "--state", state, "--bootstrap", seed, "--scheme", "2/3/4/5",
                                              "--upload-idle", "0.5", "--metadata-backup-interval", "0", "--plain-key"],
                                             name: "mount", environment: RestoreTests.env)
            _ = try child.waitForLine(timeout: 120) { $0.hasPrefix("granary mount ready at") }
        }
        func stop() {
            child.stop(grace: 40)
            Shell.run("fusermount3 -u -z '\(mnt)' 2>/dev/null || umount -l '\(mnt)' 2>/dev/null; true", timeout: 20)
        }
        deinit { stop() }
    }

    static func flush(_ bin: String, _ state: String) throws -> UInt64 {
        let r = Shell.run("'\(bin)' flush --state '\(state)'", timeout: 120)
        #expect(r.status == 0, "\(r.output)")
        // "metadata snapshot N stored: ..."
        guard let line = r.output.split(separator: "\n").first(where: { $0.hasPrefix("metadata snapshot ") && $0.contains("stored") }),
              let seq = UInt64(line.split(separator: " ")[2]) else {
            throw TestSupportError.missing("flush did not report a stored snapshot: \(r.output)")
        }
        return seq
    }

    /// The piece files of a snapshot's segments on the farmers' disks, from network.db.
    static func snapshotPieceFiles(state: String, sequence: UInt64, storages: [String]) throws -> [String] {
        let db = try NetworkDatabase(path: state + "/network/network.db")
        var paths: [String] = []
        for segment in try db.snapshotSegments(sequence: sequence) {
            for piece in try db.pieces(of: segment) where piece.state == .stored {
                let hex = piece.pieceID.hex
                for storage in storages {
                    let path = "\(storage)/pieces/\(hex.prefix(2))/\(hex.dropFirst(2).prefix(2))/\(hex)"
                    if FileManager.default.fileExists(atPath: path) { paths.append(path) }
                }
            }
        }
        return paths
    }

    @Test(.timeLimit(.minutes(5)))
    func restoreFromTheKeyAloneAndFallBackFromADamagedSnapshot() async throws {
        try FuseEnvironment.require()
        let bin = try GranaryBinary.require()
        let dir = TemporaryDirectory("granary-restore")
        let net = try Network(dir: dir, farmers: 5)
        let state = dir.path + "/state", mnt = dir.path + "/mnt", orig = dir.sub("orig")

        // Four flushes, four snapshots: the oldest is deleted, three are kept.
        var mount: NetworkMount? = try NetworkMount(state: state, mnt: mnt, seed: net.seedAddress)
        #expect(Shell.run("echo zero > '\(mnt)/z'").status == 0)
        let zero = try Self.flush(bin, state)
        let oldestPieces = try Self.snapshotPieceFiles(state: state, sequence: zero, storages: net.storages)
        #expect(oldestPieces.count >= 4, "the oldest snapshot's pieces are on the farmers")
        #expect(Shell.run("echo one > '\(mnt)/z'").status == 0)
        let one = try Self.flush(bin, state)
        #expect(Shell.run("""
            head -c 3000000 /dev/urandom > '\(orig)/a' && cp '\(orig)/a' '\(mnt)/a' && mkdir '\(mnt)/d' && \
            echo first > '\(mnt)/d/note' && ln -s ../a '\(mnt)/d/link'
            """).status == 0)
        let first = try Self.flush(bin, state)
        #expect(Shell.run("""
            head -c 700000 /dev/urandom > '\(orig)/b' && cp '\(orig)/b' '\(mnt)/d/b' && echo second >> '\(mnt)/d/note'
            """).status == 0)
        let second = try Self.flush(bin, state)
        #expect(zero < one && one < first && first < second)
        let kept = try NetworkDatabase(path: state + "/network/network.db").snapshots().map(\.sequence)
        #expect(kept == [second, first, one])
        #expect(oldestPieces.allSatisfy { !FileManager.default.fileExists(atPath: $0) }, "the oldest snapshot's pieces are deleted")
        // A flush with nothing new takes no snapshot.
        let again = Shell.run("'\(bin)' flush --state '\(state)'", timeout: 120)
        #expect(again.status == 0 && again.output.contains("metadata snapshot \(second) is current"), "\(again.output)")
        mount?.stop()
        mount = nil

        // Only the key survives.
        let keyFile = dir.path + "/saved.key"
        #expect(Shell.run("cp '\(state)/master.key' '\(keyFile)' && chmod 600 '\(keyFile)' && rm -rf '\(state)'").status == 0)

        // A restore with a key of the wrong size is refused, and nothing is written.
        let badKey = dir.path + "/bad.key"
        #expect(Shell.run("head -c 16 /dev/urandom > '\(badKey)' && chmod 600 '\(badKey)'").status == 0)
        let bad = Shell.run("GRANARY_POW_BITS=4 '\(bin)' restore --bootstrap \(net.seedAddress) --key '\(badKey)' --state '\(dir.path)/nowhere'", timeout: 60)
        #expect(bad.status != 0 && bad.output.contains("not a Granary key file"), "\(bad.output)")
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/nowhere/meta.db"))

        let restored = dir.path + "/restored"
        let tmp = dir.sub("tmp")  // the snapshot's check copy must not outlive the restore
        let r1 = Shell.run("TMPDIR='\(tmp)' GRANARY_POW_BITS=4 '\(bin)' restore --bootstrap \(net.seedAddress) --key '\(keyFile)' --state '\(restored)'", timeout: 120)
        #expect(r1.status == 0 && r1.output.contains("restored snapshot \(second)"), "\(r1.output)")
        let left = (try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? []
        #expect(left.isEmpty, "restore left temporary files: \(left)")
        var st = stat()
        #expect(stat(restored + "/master.key", &st) == 0 && st.st_mode & 0o777 == 0o600)
        // Restoring over existing state is refused.
        let over = Shell.run("GRANARY_POW_BITS=4 '\(bin)' restore --bootstrap \(net.seedAddress) --key '\(keyFile)' --state '\(restored)'", timeout: 60)
        #expect(over.status != 0 && over.output.contains("already holds a meta.db"), "\(over.output)")

        mount = try NetworkMount(state: restored, mnt: mnt, seed: net.seedAddress)
        #expect(Shell.run("""
            cmp '\(orig)/a' '\(mnt)/a' && cmp '\(orig)/b' '\(mnt)/d/b' && printf 'first\\nsecond\\n' | cmp - '\(mnt)/d/note' && \
            [ "$(readlink '\(mnt)/d/link')" = ../a ] && [ "$(cat '\(mnt)/z')" = one ]
            """, timeout: 120).status == 0)
        mount?.stop()
        mount = nil

        // The restored mount's unmount took a snapshot of its own (reads
        // moved atimes). Damage every piece of the two newest snapshots on
        // the farmers: half altered, half truncated. Their manifests say
        // where the pieces are.
        let keys = try KeyFile.read(keyFile).unlock { nil }
        let restorer = try await MetadataRestorer.connect(keys: keys, bootstrap: [net.seedAddress], difficulty: 4)
        let pointer = try await restorer.pointer()
        let third = pointer.entries[0].sequence
        #expect(pointer.entries.map(\.sequence) == [third, second, first] && third > second)
        var manifests: [SnapshotManifest] = []
        for entry in pointer.entries.prefix(2) { manifests.append(try await restorer.manifest(entry).0) }
        await restorer.close()
        var damaged = 0
        for segment in manifests.flatMap(\.segments) {
            for (i, piece) in segment.pieces.enumerated() {
                let hex = piece.pieceID.hex
                for storage in net.storages {
                    let path = "\(storage)/pieces/\(hex.prefix(2))/\(hex.dropFirst(2).prefix(2))/\(hex)"
                    guard FileManager.default.fileExists(atPath: path) else { continue }
                    let cmd = i % 2 == 0 ? "printf '\\377\\377\\377\\377' | dd of='\(path)' bs=1 seek=100 conv=notrunc 2>/dev/null"
                                         : "truncate -s 50 '\(path)'"
                    #expect(Shell.run(cmd).status == 0)
                    damaged += 1
                }
            }
        }
        #expect(damaged >= 8)

        let older = dir.path + "/older"
        let r2 = Shell.run("GRANARY_POW_BITS=4 '\(bin)' restore --bootstrap \(net.seedAddress) --key '\(keyFile)' --state '\(older)'", timeout: 180)
        #expect(r2.status == 0, "\(r2.output)")
        #expect(r2.output.contains("snapshot \(third)") && r2.output.contains("snapshot \(second)") && r2.output.contains("refused"), "\(r2.output)")
        #expect(r2.output.contains("restored snapshot \(first)"), "\(r2.output)")
        mount = try NetworkMount(state: older, mnt: mnt, seed: net.seedAddress)
        #expect(Shell.run("""
            cmp '\(orig)/a' '\(mnt)/a' && printf 'first\\n' | cmp - '\(mnt)/d/note' && [ ! -e '\(mnt)/d/b' ] && [ "$(cat '\(mnt)/z')" = one ]
            """, timeout: 120).status == 0)
        mount?.stop()
        mount = nil
        _ = net
    }

    /// Issue #7: the pointer outlives every DHT node process that held it.
    /// The renter flushes (publishing its pointer) and goes away; the seed
    /// and every farmer stop and start again on their state folders; a
    /// restore on a fresh state folder with only the key still finds the
    /// pointer in the restarted nodes' stored records, and the restored
    /// mount reads back bit-exact.
    @Test(.timeLimit(.minutes(6)))
    func thePointerSurvivesARestartOfEveryDHTNode() async throws {
        try FuseEnvironment.require()
        let bin = try GranaryBinary.require()
        let dir = TemporaryDirectory("granary-restore")
        let net = try Network(dir: dir, farmers: 5)
        let state = dir.path + "/state", mnt = dir.path + "/mnt", orig = dir.sub("orig")

        var mount: NetworkMount? = try NetworkMount(state: state, mnt: mnt, seed: net.seedAddress)
        #expect(Shell.run("""
            head -c 2000000 /dev/urandom > '\(orig)/a' && cp '\(orig)/a' '\(mnt)/a' && mkdir '\(mnt)/d' && echo kept > '\(mnt)/d/note'
            """).status == 0)
        let sequence = try Self.flush(bin, state)
        // The renter's identity search was cached in its state folder.
        #expect(FileManager.default.fileExists(atPath: state + "/identity.nonce"))
        mount?.stop()
        mount = nil
        let keyFile = dir.path + "/saved.key"
        #expect(Shell.run("cp '\(state)/master.key' '\(keyFile)' && chmod 600 '\(keyFile)' && rm -rf '\(state)'").status == 0)

        // Every DHT node process stops and starts again; nobody republishes
        // from the renter's side.
        try net.restartAll()

        let restored = dir.path + "/restored"
        let r = Shell.run("GRANARY_POW_BITS=4 '\(bin)' restore --bootstrap \(net.seedAddress) --key '\(keyFile)' --state '\(restored)'", timeout: 180)
        // The flush's snapshot, or the unmount's own if it took one after it.
        let restoredSequence = r.output.split(separator: "\n").first { $0.contains("restored snapshot ") }
            .flatMap { line in line.split(separator: " ").drop { $0 != "snapshot" }.dropFirst().first.flatMap { UInt64($0) } }
        #expect(r.status == 0 && (restoredSequence ?? 0) >= sequence, "\(r.output)")
        #expect(FileManager.default.fileExists(atPath: restored + "/identity.nonce"))

        mount = try NetworkMount(state: restored, mnt: mnt, seed: net.seedAddress)
        #expect(Shell.run("cmp '\(orig)/a' '\(mnt)/a' && [ \"$(cat '\(mnt)/d/note')\" = kept ]", timeout: 120).status == 0)
        mount?.stop()
        mount = nil
        _ = net
    }
}
