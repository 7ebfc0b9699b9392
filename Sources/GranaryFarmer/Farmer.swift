import Foundation
import GranaryContracts
import GranaryCore
import GranaryWire
import Logging
import NIOCore

/// How a farmer runs.
public struct FarmerConfiguration: Sendable {
    public var storage: String
    public var capacity: UInt64
    public var listenHost: String
    public var listenPort: Int
    public var policy: ContractPolicy
    /// Seconds a contract may go without a voucher before its pieces are dropped.
    public var gracePeriod: UInt64
    /// How often tit for tat and expiry are checked (seconds).
    public var sweepInterval: Double
    public var difficulty: Int
    /// Rehash every piece at startup (else sizes only).
    public var verifyOnStartup: Bool

    public init(storage: String, capacity: UInt64, listenHost: String = "127.0.0.1", listenPort: Int = 0,
                policy: ContractPolicy = ContractPolicy(), gracePeriod: UInt64 = 86_400, sweepInterval: Double? = nil,
                difficulty: Int = NodeIdentity.configuredDifficulty, verifyOnStartup: Bool = true) {
        self.storage = storage; self.capacity = capacity; self.listenHost = listenHost; self.listenPort = listenPort
        self.policy = policy; self.gracePeriod = gracePeriod
        self.sweepInterval = sweepInterval ?? min(30, max(0.5, Double(gracePeriod) / 4))
        self.difficulty = difficulty; self.verifyOnStartup = verifyOnStartup
    }
}

/// What `granary farm` logs periodically.
public struct FarmerStatus: Sendable, CustomStringConvertible {
    public let pieces: Int
    public let bytesUsed: UInt64
    public let capacity: UInt64
    public let activeContracts: Int
    public let earnings: UInt64
    public var description: String {
        "pieces=\(pieces) bytes_used=\(bytesUsed) capacity=\(capacity) contracts=\(activeContracts) earnings=\(earnings)"
    }
}

/// A farmer: piece store, contract book, tit for tat, and the transfer
/// server answering renters. `start` binds; `run` serves until `shutdown`.
public final class Farmer: Sendable {
    public let identity: NodeIdentity
    public let configuration: FarmerConfiguration
    public let store: PieceStore
    public let contracts: ContractBook
    public let startupReport: StartupReport
    let clock: any FarmerClock
    let logger: Logger
    private let server: TransferServer

    public var host: String { server.host }
    public var port: Int { server.port }

    private init(identity: NodeIdentity, configuration: FarmerConfiguration, store: PieceStore, contracts: ContractBook,
                 startupReport: StartupReport, clock: any FarmerClock, logger: Logger, server: TransferServer) {
        self.identity = identity; self.configuration = configuration; self.store = store; self.contracts = contracts
        self.startupReport = startupReport; self.clock = clock; self.logger = logger; self.server = server
    }

    /// Opens the store (running the startup check), then binds the listener.
    public static func start(identity: NodeIdentity, configuration: FarmerConfiguration, clock: any FarmerClock = SystemClock(),
                             logger: Logger = Logger(label: "granary.farmer")) async throws -> Farmer {
        let store = try PieceStore(root: configuration.storage, capacity: configuration.capacity, logger: logger)
        let report = try store.checkOnStartup(verifyContents: configuration.verifyOnStartup)
        if !report.missing.isEmpty || !report.corrupt.isEmpty {
            logger.error("startup check found damaged pieces", metadata: [
                "missing": "\(report.missing.map(\.hex))", "corrupt": "\(report.corrupt.map(\.hex))"])
        }
        logger.info("startup check", metadata: ["result": "\(report)"])
        let book = ContractBook(db: store.db, identity: identity, policy: configuration.policy, difficulty: configuration.difficulty)
        let service = FarmerService(identity: identity, store: store, contracts: book, clock: clock, logger: logger)
        let server = try await TransferServer(host: configuration.listenHost, port: configuration.listenPort, identity: identity,
                                              difficulty: configuration.difficulty, logger: logger) { session in
            await service.serve(session)
        }
        return Farmer(identity: identity, configuration: configuration, store: store, contracts: book,
                      startupReport: report, clock: clock, logger: logger, server: server)
    }

    /// Serves renters and runs tit for tat until `shutdown()`.
    public func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.server.run() }
            group.addTask {
                while !Task.isCancelled {
                    try await Task.sleep(for: .seconds(self.configuration.sweepInterval))
                    self.sweep()
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// Stops accepting, closes every session (uploads in progress are
    /// abandoned: their temporary files are removed, nothing half-written
    /// is indexed), and lets `run` return.
    public func shutdown() async {
        await server.close()
    }

    public func status() -> FarmerStatus {
        FarmerStatus(pieces: store.pieceCount, bytesUsed: store.usedBytes, capacity: store.capacity,
                     activeContracts: (try? contracts.activeContracts().count) ?? 0, earnings: (try? contracts.earnings()) ?? 0)
    }

    /// Tit for tat and expiry: drops the pieces of every contract that
    /// ended, or has gone unpaid longer than the grace period. Touches
    /// nothing of any other contract. Returns the contracts dropped.
    @discardableResult
    public func sweep() -> [Hash256] {
        let now = clock.now()
        var dropped: [Hash256] = []
        guard let active = try? contracts.activeContracts() else { return [] }
        for record in active {
            let c = record.contract
            let state: ContractRecord.State
            let why: String
            if now >= c.endTime {
                state = .expired; why = "contract ended at \(c.endTime)"
            } else if now > record.lastPaid && now - record.lastPaid > configuration.gracePeriod {
                state = .unpaid; why = "no payment for \(now - record.lastPaid)s (grace \(configuration.gracePeriod)s)"
            } else { continue }
            do {
                try contracts.setState(c.id, state)
                let (pieces, bytes) = try store.dropPieces(ofContract: c.id)
                logger.notice("dropped contract", metadata: [
                    "contract": "\(c.id.hex)", "renter": "\(c.renterID.short)", "reason": "\(why)",
                    "pieces": "\(pieces)", "bytes": "\(bytes)"])
                dropped.append(c.id)
            } catch {
                logger.error("could not drop contract", metadata: ["contract": "\(c.id.hex)", "error": "\(error)"])
            }
        }
        return dropped
    }
}
