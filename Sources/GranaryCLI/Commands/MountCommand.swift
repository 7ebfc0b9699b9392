import ArgumentParser
import Foundation
import GranaryCore
import GranaryDHT
import GranaryFS
import GranaryRenter
import GranaryStore
import Logging

struct MountCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount a renter's folder in the foreground (Ctrl-C flushes and unmounts).",
        discussion: """
            Everything written to MOUNTPOINT lands in a local write-back cache under --state and is \
            uploaded in the background; fsync returns once data is durable on the local disk, and \
            `granary flush` waits until it is durable in segment storage. `granary status` shows progress.
            """)

    @Argument(help: "Folder to mount at (created if missing).") var mountpoint: String
    @Option(help: "State folder: master key, meta.db, cache, control socket.") var state: String = MountCommand.defaultState
    @Option(name: .customLong("cache-size"), help: "Budget for clean cached data, e.g. 512M, 10G.") var cacheSize: String = "4G"
    @Option(name: .customLong("local-segments"), help: "Store segments in this local folder instead of on the network. For tests and development only.")
    var localSegments: String?
    @Option(help: "A network node to join, HOST:PORT (a seed or any node; repeatable).") var bootstrap: [String] = []
    @Option(help: "Redundancy k/r/s/n: k pieces rebuild a segment, repair below r, durable at s, n generated.")
    var scheme: String = "4/5/7/8"
    @Option(name: .customLong("dht-listen"), help: "UDP address of the mount's DHT node (default: 0.0.0.0:0, or 127.0.0.1:0 when every --bootstrap is on loopback).")
    var dhtListen: String?
    @Option(name: .customLong("dht-advertise"), help: "Address farmers send bids to when the DHT node is behind NAT (default: the local address that routes to the first --bootstrap).")
    var dhtAdvertise: String?
    @Option(name: .customLong("audit-interval"), help: "Seconds between audits of each contract, asked for in new contracts (each audit is paid for).")
    var auditInterval: Double = 3600
    @OptionGroup var background: BackgroundWorkOptions
    @Option(name: .customLong("upload-idle"), help: .hidden) var uploadIdle: Double = 2
    @Option(name: .customLong("read-timeout"), help: .hidden) var readTimeout: Double = 30
    @Flag(name: .customLong("writeback-cache"), help: .hidden) var writebackCache = false
    @Option(name: .customLong("passphrase-file"), help: "Read the key file's passphrase from this file (else GRANARY_PASSPHRASE, else a prompt on a terminal).")
    var passphraseFile: String?
    @Flag(name: .customLong("plain-key"), help: "When the state folder has no key yet, create one without a passphrase.")
    var plainKey = false
    @Flag(name: .customLong("take-over"), help: "Mount even though another machine holds this key's lease (it is told it lost it).")
    var takeOver = false
    @Option(name: .customLong("lease-renew"), help: .hidden) var leaseRenew: Double = 30

    static var defaultState: String { (ProcessInfo.processInfo.environment["HOME"] ?? ".") + "/.granary/renter" }

    func run() async throws {
        HeapTuning.keepFreedMemory()
        guard let budget = ByteSize.parse(cacheSize) else {
            throw ValidationError("--cache-size \(cacheSize) is not a size: use a number with an optional K, M, G or T suffix")
        }
        let redundancy: RedundancyScheme
        do { redundancy = try RedundancyScheme(parsing: scheme) } catch { throw ValidationError("--scheme: \(error)") }
        let compaction = try background.compaction()
        guard auditInterval >= 10 else { throw ValidationError("--audit-interval must be at least 10 seconds") }
        if localSegments == nil && bootstrap.isEmpty {
            throw ValidationError("say where segments go: --bootstrap HOST:PORT (network) or --local-segments DIR (tests and development)")
        }
        var options = MountSession.Options(mountpoint: mountpoint, stateDirectory: state, cacheBudget: budget)
        options.uploadIdle = uploadIdle
        options.readTimeout = readTimeout
        options.writebackCache = writebackCache
        options.compaction = compaction
        options.keyAccess = KeyAccess(passphrase: PassphraseSource(file: passphraseFile), plainIfNew: plainKey)
        let localSegments = self.localSegments, bootstrap = self.bootstrap, stateDirectory = state
        let backupInterval = background.metadataBackupInterval
        let auditInterval = self.auditInterval
        let takeOver = self.takeOver, renew = Duration.milliseconds(Int64(max(0.1, leaseRenew) * 1000))
        let absoluteState = URL(fileURLWithPath: state).standardizedFileURL.path
        try await MountSession.run(options) { keys in
            if let localSegments {
                // No network, so no lease: nothing stops a second machine
                // mounting the same key on its own folder.
                print("granary mount: local segments, no network: no mount lease is taken")
                return MountBackend(segments: try FolderSegmentStore(directory: localSegments))
            }
            // The renter's identity follows from its master key alone (the
            // same whatever the configured difficulty), so a restore with the
            // key finds the same contracts; its search is cached in the state folder.
            let nonceCache = absoluteState + "/identity.nonce"
            let olderState = !FileManager.default.fileExists(atPath: nonceCache)
                && FileManager.default.fileExists(atPath: absoluteState + "/network/network.db")
            let identity = keys.nodeIdentity(difficulty: NodeIdentity.configuredDifficulty, nonceCache: nonceCache,
                                             keepingOlderIdentity: olderState)
            print("granary mount: joining the network through \(bootstrap.joined(separator: ", ")) and forming contracts in the background (scheme \(redundancy))")
            fflush(nil)
            // The lease is taken as soon as the DHT is joined: a refused
            // second mount forms no contracts and opens no database. When
            // the network is unreachable the mount comes up anyway (nil
            // contract timeout): joining and the lease follow in the
            // background, and nothing is uploaded or deleted before.
            let leaseBox = LeaseBox()
            let engine: RenterEngine
            do {
                var renter = RenterConfiguration(scheme: redundancy)
                renter.dhtListen = dhtListen
                renter.dhtAdvertise = dhtAdvertise
                renter.terms.auditInterval = auditInterval
                engine = try await RenterEngine.start(stateDirectory: stateDirectory + "/network", identity: identity,
                                                      bootstrap: bootstrap, configuration: renter, contractTimeout: nil) { node in
                    leaseBox.lease = try await MountLease.acquire(node: node, keys: keys, stateDirectory: absoluteState,
                                                                  takeOver: takeOver, renewInterval: renew)
                }
            } catch {
                await leaseBox.lease?.release()
                throw error
            }
            return MountBackend(segments: engine.segments,
                                extraStatus: {
                                    let lease = leaseBox.lease?.summary ?? "not taken yet: the network has not been joined"
                                    return engine.status().summary.merging(["lease": lease]) { a, _ in a }
                                },
                                stop: { await leaseBox.lease?.release(); await engine.stop() },
                                startBackup: { store in await BackupHook.start(engine: engine, store: store, keys: keys, interval: backupInterval) })
        }
    }
}

/// A running mount: the store over any `SegmentStore`, its control socket,
/// and the FUSE loop. `granary up` calls this with the network's store.
enum MountSession {
    struct Options {
        var mountpoint: String
        var stateDirectory: String
        var cacheBudget: UInt64
        var uploadIdle: Double = 2
        var readTimeout: Double = 30
        var writebackCache = false
        var compaction = CompactionConfiguration()
        /// How long Ctrl-C/SIGTERM waits for uploads before unmounting.
        var shutdownFlushSeconds: Double = 30
        /// How long the unmount waits for its final metadata snapshot.
        var shutdownSnapshotSeconds: Double = 20
        var keyAccess = KeyAccess()
    }

    static func run(_ o: Options, backend makeBackend: (RenterKeys) async throws -> MountBackend) async throws {
        let log = Logger(label: "granary.mount")
        let openFiles = OpenFileLimit.raise()
        if openFiles < 4_096 {
            log.warning("the open-file limit is \(openFiles): the mount keeps up to 64 cache files open per open file and one per farmer session; raise it (ulimit -n) if many files are open at once")
        }
        let fm = FileManager.default
        let mountpoint = URL(fileURLWithPath: o.mountpoint).standardizedFileURL.path
        let state = URL(fileURLWithPath: o.stateDirectory).standardizedFileURL.path
        if try StaleMount.clearIfStale(mountpoint) {
            log.notice("cleared a stale mount at \(mountpoint) left by a crashed run")
        }
        try? fm.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: mountpoint, isDirectory: &isDir), isDir.boolValue else {
            throw MountFailure("mount point \(mountpoint) is not a folder")
        }
        do { try fm.createDirectory(atPath: state, withIntermediateDirectories: true) } catch {
            throw MountFailure("cannot create state folder \(state): \(error.localizedDescription)")
        }
        chmod(state, 0o700)
        // One mount per state folder.
        let lockFD = open(state + "/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockFD >= 0, flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            throw MountFailure("state folder \(state) is in use by another granary mount")
        }
        defer { close(lockFD) }

        let keys = try o.keyAccess.loadOrCreate(state: state)

        var config = StoreConfiguration(stateDirectory: state, cacheBudget: o.cacheBudget)
        config.idleUploadDelay = o.uploadIdle
        config.readTimeout = o.readTimeout
        config.compaction = o.compaction
        let backend = try await makeBackend(keys)
        let segments = backend.segments
        let store = try GranaryStore(configuration: config, segments: segments, keys: keys)
        let backup = await backend.startBackup?(store)
        let backendStatus = backend.extraStatus
        let control = try ControlServer(stateDirectory: state, store: store,
                                        extra: {
                                            backendStatus().merging(GranaryFS.requestStatistics()) { a, _ in a }
                                                .merging(ProcessUsage.status()) { a, _ in a }
                                        },
                                        afterFlush: backup?.afterFlush)
        defer { control.close() }

        var fsOptions = MountOptions(mountpoint: mountpoint)
        fsOptions.writebackCache = o.writebackCache
        let fs = GranaryFS(store: store, options: fsOptions)
        let result: Result<Void, Error> = await withCheckedContinuation { cont in
            let t = Thread {
                do {
                    try fs.run {
                        print("granary mount ready at \(mountpoint)")
                        print("  use it like any folder: cp, rsync -a, tar, restic, borg")
                        print("  granary status --state \(state)    progress of uploads")
                        print("  granary flush --state \(state)     wait until everything is stored")
                        print("  Ctrl-C flushes (up to \(Int(o.shutdownFlushSeconds)) s) and unmounts")
                        fflush(nil)
                    }
                    cont.resume(returning: .success(()))
                } catch {
                    cont.resume(returning: .failure(error))
                }
            }
            t.name = "granary-fuse"
            t.stackSize = 8 << 20
            t.start()
        }
        log.notice("unmounted \(mountpoint); flushing what is dirty (up to \(Int(o.shutdownFlushSeconds)) s)")
        store.shutdown(deadline: Date().addingTimeInterval(o.shutdownFlushSeconds))
        let st = store.status()
        if st.dirtyBytes > 0 {
            log.notice("\(st.dirtyBytes) bytes stay in the local cache and upload on the next mount")
        }
        if let backup {
            // What was flushed above becomes restorable from the key alone.
            do {
                let summary = try await withDeadline(o.shutdownSnapshotSeconds, backup.final)
                log.notice("\(summary)")
            } catch is DeadlineExceeded {
                log.warning("no metadata snapshot within \(Int(o.shutdownSnapshotSeconds)) s at unmount; the previous one stays current")
            } catch {
                log.warning("no metadata snapshot at unmount: \(error); the previous one stays current")
            }
        }
        await backup?.stop()
        await backend.stop()
        try result.get()
    }
}

/// A mount that could not start, with what to do about it.
struct MountFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Where a mount's segments go, what it adds to `granary status`, and how
/// to stop it after the unmount.
struct MountBackend: Sendable {
    var segments: any SegmentStore
    var extraStatus: @Sendable () -> [String: String] = { [:] }
    var stop: @Sendable () async -> Void = {}
    /// Starts metadata backups once the store is open (network mounts).
    var startBackup: (@Sendable (GranaryStore) async -> BackupHook?)?
}

extension RenterStatus {
    /// The network's part of `granary status`.
    var summary: [String: String] {
        // An active contract with a farmer that stopped answering holds no
        // usable space: say how many, rather than count them as healthy.
        let answering = Set(farmers.filter { $0.state == nil }.map(\.id))
        let active = contracts.filter { $0.state == "active" }
        let silent = active.filter { !answering.contains($0.farmer) }.count
        var out: [String: String] = [
            "network.scheme": scheme,
            "network.contracts": "\(active.count) active of \(contracts.count)"
                + (silent > 0 ? ", \(silent) with a farmer not answering" : ""),
            "network.durable_segments": "\(durableSegments)",
            "network.paid": "\(totalPaid)",
            "network.state": waiting ?? "ready",
            // Bytes the renter's contracts count as used, and pieces held:
            // both fall when compaction deletes segments.
            "network.contract_bytes_used": "\(contracts.reduce(Int64(0)) { $0 + $1.used })",
            "network.stored_pieces": "\(farmers.reduce(0) { $0 + $1.pieces })",
        ]
        for f in farmers {
            let latency = f.latencyMs.map { String(format: "%.0f ms", $0) } ?? "-"
            let state = f.state ?? "ok"
            out["farmer.\(f.id.prefix(8))"] = String(format: "%@ %@ audit %.2f uptime %.2f latency %@ pieces %d passed %d failed %d",
                                                      f.address, state, f.auditScore, f.uptimeScore, latency, f.pieces, f.auditsPassed, f.auditsFailed)
        }
        return out
    }
}

extension RenterStatus.Farmer {
    /// Why the farmer is not answering, or nil when it is.
    var state: String? {
        disqualified ? "disqualified"
            : offline ? "offline"
            : unreachableSeconds.map { String(format: "unreachable for %.0f s", $0) }
    }
}

/// How a mount gets its key: `STATE/master.key`, opened with a passphrase
/// when sealed; created when missing (sealed, or plain when asked).
struct KeyAccess {
    var passphrase = PassphraseSource()
    var plainIfNew = false

    func loadOrCreate(state: String) throws -> RenterKeys {
        let path = RenterKeyFile.path(state: state)
        if FileManager.default.fileExists(atPath: path) {
            let opened = try RenterKeyFile.unlock(path, with: passphrase)
            if opened.file.format == .legacyPlain {
                Logger(label: "granary.mount").notice("\(path) is an original raw key file without a passphrase; `granary key passphrase --state \(state)` seals it")
            }
            return opened.keys
        }
        let secret = plainIfNew ? nil : try passphrase.forNewKey(path)
        if !plainIfNew && secret == nil {
            throw MountFailure("""
                there is no renter key in \(state) yet, and no passphrase to protect a new one: set GRANARY_PASSPHRASE or \
                --passphrase-file FILE, run in a terminal to be asked, create one first with `granary key init --state \(state)`, \
                or pass --plain-key for a key file without a passphrase
                """)
        }
        let keys = RenterKeys.generate()
        try RenterKeyFile.create(keys, at: path, passphrase: secret)
        print("granary mount: created a new renter key at \(path), \(RenterKeyFile.describe(secret)); fingerprint \(keys.fingerprint)")
        print("  back it up: granary key export --state \(state)   (it alone decrypts and restores your files)")
        if secret == nil { print("  seal it with a passphrase: granary key passphrase --state \(state)") }
        fflush(nil)
        return keys
    }
}

/// Carries the lease out of the engine's `joined` callback. Written once,
/// before `RenterEngine.start` returns, or later when the network was
/// unreachable at start and is joined in the background.
final class LeaseBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: MountLease?
    var lease: MountLease? {
        get { lock.withLock { value } }
        set { lock.withLock { value = newValue } }
    }
}
