import Foundation
import GranaryCore
import Logging

/// What `granary status` shows of the network side.
public struct RenterStatus: Sendable, Codable, Hashable {
    public struct Contract: Sendable, Codable, Hashable {
        public var id: String
        public var farmer: String
        public var allowance: Int64
        public var used: Int64
        public var end: Date
        public var paid: UInt64
        public var state: String
    }
    public struct Farmer: Sendable, Codable, Hashable {
        public var id: String
        public var address: String
        public var auditScore: Double
        public var uptimeScore: Double
        public var latencyMs: Double?
        public var auditsPassed: Int
        public var auditsFailed: Int
        public var disqualified: Bool
        public var offline: Bool
        /// Seconds every contact has failed, before it counts as offline.
        public var unreachableSeconds: Double?
        public var pieces: Int
    }
    public var contracts: [Contract]
    public var farmers: [Farmer]
    public var totalPaid: UInt64
    public var upload: UploadProgress.Snapshot
    public var durableSegments: Int
    public var scheme: String
    /// What uploads wait for (joining the network, too few contracts); nil when ready.
    public var waiting: String?
}

/// The renter engine: network.db, the farmer book, the segment store, the
/// contract pool, audits and repair, with their background loop. The mount
/// and the CLI construct one and use `segments`.
public final class RenterEngine: Sendable {
    public let database: NetworkDatabase
    public let farmers: FarmerBook
    public let store: NetworkSegmentStore
    public let contracts: ContractPool
    public let audits: AuditScheduler
    public let repairer: Repairer
    public let configuration: RenterConfiguration
    let link: FarmerLink
    let source: ContractSource
    private let loop = LoopHandle()
    private let connector: NetworkConnector
    private let log = Logger(label: "granary.renter")

    /// The segment store to hand to the Store layer.
    public var segments: SegmentStore { store }

    /// Opens (or creates) `stateDirectory/network.db`, rolls back uploads a
    /// crash interrupted, and starts the background loop. Contracts come
    /// from `source`, transfers go through `link`.
    public init(stateDirectory: String, link: FarmerLink, contracts source: ContractSource,
                configuration: RenterConfiguration = RenterConfiguration(),
                clock: RenterClock = SystemClock(), random: RandomSource = SystemRandomSource()) throws {
        try FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true)
        let db = try NetworkDatabase(path: stateDirectory + "/network.db")
        let book = try FarmerBook(db: db, clock: clock, offlineGrace: configuration.offlineGrace)
        let store = NetworkSegmentStore(db: db, book: book, link: link, config: configuration, random: random)
        database = db
        farmers = book
        self.store = store
        self.link = link
        self.source = source
        self.configuration = configuration
        contracts = ContractPool(db: db, book: book, link: link, source: source, clock: clock, config: configuration)
        audits = AuditScheduler(db: db, book: book, link: link, clock: clock, random: random, config: configuration)
        repairer = Repairer(db: db, book: book, store: store, config: configuration)
        connector = NetworkConnector()
        let rolledBack = try db.rollBackInterruptedUploads()
        if !rolledBack.isEmpty {
            log.info("rolled back \(rolledBack.count) uploads interrupted by a crash; their pieces are being released")
        }
    }

    /// Fills the contract pool (at least s farmers, waiting up to
    /// `contractTimeout`) and starts the background loop when configured.
    /// With a nil timeout it returns at once: `join` (when given) and the
    /// contract pool run in the background, retried with backoff, and
    /// `status().waiting` says what uploads wait for.
    public func start(contractTimeout: Double? = 60, join: (@Sendable () async throws -> Void)? = nil) async throws {
        if let contractTimeout {
            if let join { try await join() }
            if !rolledBackReleased() { await store.releasePendingPieces() }
            try await contracts.fill(minimum: configuration.scheme.s, timeout: contractTimeout)
        } else {
            let pool = contracts, store = self.store
            var gatedJoin: (@Sendable () async throws -> Void)?
            if let join {
                store.joinGate.close()
                gatedJoin = { try await join(); store.joinGate.open() }
            }
            connector.start(join: gatedJoin, release: { await store.releasePendingPieces() },
                            minimum: configuration.scheme.s, full: min(configuration.scheme.n, configuration.targetContracts),
                            fillRound: { await pool.maintain() })
        }
        if configuration.runBackgroundLoops { startLoop() }
    }

    /// What uploads wait for while the network is being joined or too few
    /// farmers have contracts; nil when uploads can go ahead.
    public var waiting: String? {
        let needed = configuration.scheme.s
        switch connector.phase {
        case let .joining(attempts, lastError):
            if attempts == 0 { return "joining the network" }
            return "joining the network (attempt \(attempts)\(lastError.map { ": " + $0 } ?? ""))"
        case .formingContracts, .ready:
            let have = Set(((try? contracts.liveContracts()) ?? []).map(\.record.farmer.id)).count
            return have >= needed ? nil : "waiting for contracts: \(have) of \(needed) farmers"
        }
    }

    private func rolledBackReleased() -> Bool { ((try? database.pieces(state: .deleting, limit: 1)) ?? []).isEmpty }

    private func startLoop() {
        let interval = configuration.maintenanceInterval
        let task = Task { [self] in
            var round = 0
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: UInt64(interval * 1e9))
                if Task.isCancelled { break }
                if round % 6 == 0 { await contracts.maintain() }
                await audits.runDue()
                _ = await repairer.runPass()
                await store.releasePendingPieces()
                farmers.flush()
                round += 1
            }
        }
        loop.set(task)
    }

    /// Stops the loop and closes every session; network.db stays consistent.
    public func stop() async {
        await connector.cancel()
        await loop.cancel()
        farmers.flush()
        await source.shutdown()
        await link.shutdown()
    }

    public func status() -> RenterStatus {
        let paid = (try? database.vouchers()) ?? [:]
        let rows = (try? database.contracts(activeOnly: false)) ?? []
        var piecesPerFarmer: [Hash256: Int] = [:]
        for f in farmers.all { piecesPerFarmer[f.contact.id] = (try? database.storedPieces(onFarmer: f.contact.id).count) ?? 0 }
        return RenterStatus(
            contracts: rows.map { c in
                RenterStatus.Contract(id: c.record.id.hex, farmer: c.record.farmer.id.hex, allowance: c.record.allowance,
                                      used: c.used, end: c.record.end, paid: paid[c.record.id] ?? 0, state: c.state)
            },
            farmers: farmers.all.sorted { $0.contact.address < $1.contact.address }.map { f in
                RenterStatus.Farmer(id: f.contact.id.hex, address: f.contact.address, auditScore: f.reputation.auditScore,
                                    uptimeScore: f.reputation.uptimeScore, latencyMs: f.reputation.latencyMs,
                                    auditsPassed: f.reputation.auditsPassed, auditsFailed: f.reputation.auditsFailed,
                                    disqualified: f.disqualified, offline: farmers.isOffline(f.contact.id),
                                    unreachableSeconds: farmers.failingFor(f.contact.id),
                                    pieces: piecesPerFarmer[f.contact.id] ?? 0)
            },
            totalPaid: paid.values.reduce(0, +),
            upload: store.progress.snapshot,
            durableSegments: (try? database.durableSegmentIDs().count) ?? 0,
            scheme: configuration.scheme.description,
            waiting: waiting)
    }
}

/// The background loop's task, cancelled on stop. A lock, not an actor:
/// `set` is called synchronously right after the task is created.
final class LoopHandle: @unchecked Sendable {
    private let lock = NSLock()
    private var task: Task<Void, Never>?
    func set(_ t: Task<Void, Never>) { lock.lock(); task = t; lock.unlock() }
    func cancel() async {
        let t: Task<Void, Never>? = lock.withLock { let t = task; task = nil; return t }
        t?.cancel()
        await t?.value
    }
}
