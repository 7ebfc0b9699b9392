import ArgumentParser
import Foundation
import GranaryContracts
import GranaryCore
import GranaryFarmer
import Logging

/// `granary farm`: sells disk space to renters.
struct FarmCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "farm", abstract: "Run a farmer: store renters' pieces under signed contracts, answer audits, take vouchers.")

    @Option(help: "Folder for pieces, the index (farmer.db) and the node key (identity.key).")
    var storage: String

    @Option(help: "Disk space to sell, e.g. 10G, 512M, 1T (powers of 1024).")
    var capacity: String

    @Option(help: "Address to listen on for transfers (port 0: any free port, printed on stdout).")
    var listen: String = "127.0.0.1:0"

    @Option(help: "Address to advertise to renters when it differs from --listen (port forwards).")
    var advertise: String?

    @Option(help: "A DHT node to join (kept for the DHT layer).")
    var bootstrap: String?

    @Option(name: .customLong("min-price"), help: "Lowest price per passed audit this farmer signs for.")
    var minPrice: UInt64 = 0

    @Option(help: "Seconds a contract may go unpaid before its pieces are dropped.")
    var grace: UInt64 = 86_400

    @Option(name: .customLong("max-duration"), help: "Longest contract this farmer signs, in seconds.")
    var maxDuration: UInt64 = 366 * 86_400

    @Option(name: .customLong("status-interval"), help: "Seconds between status log lines.")
    var statusInterval: Double = 60

    @Flag(name: .customLong("quick-check"), help: "At startup check piece sizes only, without rehashing.")
    var quickCheck = false

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = ProcessInfo.processInfo.environment["GRANARY_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
            return handler
        }
        var logger = Logger(label: "granary.farmer")
        let (host, port) = try HostPort.parse(listen, option: "--listen")
        if let advertise { _ = try HostPort.parse(advertise, option: "--advertise") }
        if let bootstrap { _ = try HostPort.parse(bootstrap, option: "--bootstrap") }
        guard let bytes = ByteSize.parse(capacity) else {
            throw ValidationError("--capacity \(capacity) is not a size (examples: 10G, 512M, 1048576)")
        }
        try FileManager.default.createDirectory(atPath: storage, withIntermediateDirectories: true)
        let difficulty = NodeIdentity.configuredDifficulty
        let identity = try NodeIdentity.loadOrCreate(at: storage + "/identity.key", difficulty: difficulty)
        logger[metadataKey: "node"] = "\(identity.id.short)"
        let log = logger

        let config = FarmerConfiguration(
            storage: storage, capacity: bytes, listenHost: host, listenPort: port,
            policy: ContractPolicy(minPricePerAudit: minPrice, maxDurationSeconds: maxDuration),
            gracePeriod: grace, difficulty: difficulty, verifyOnStartup: !quickCheck)
        let farmer = try await Farmer.start(identity: identity, configuration: config, logger: logger)

        print("granary farmer listening tcp=\(farmer.host):\(farmer.port) node=\(identity.id.hex)")
        fflush(nil)  // flushes stdout: scripts wait for this line
        logger.info("farmer started", metadata: [
            "listen": "\(farmer.host):\(farmer.port)", "advertise": "\(advertise ?? "\(farmer.host):\(farmer.port)")",
            "bootstrap": "\(bootstrap ?? "none")", "storage": "\(storage)", "capacity": "\(bytes)",
            "grace": "\(grace)", "min_price": "\(minPrice)"])

        let signals = SignalWatch { signal in
            log.notice("shutting down", metadata: ["signal": "\(signal)"])
            Task { await farmer.shutdown() }
        }
        let status = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(statusInterval))
                if Task.isCancelled { break }
                log.info("status", metadata: ["status": "\(farmer.status())"])
            }
        }
        defer { status.cancel(); signals.cancel() }
        try await farmer.run()
        logger.info("farmer stopped", metadata: ["status": "\(farmer.status())"])
    }
}

/// `HOST:PORT` option values.
enum HostPort {
    static func parse(_ text: String, option: String) throws -> (String, Int) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw ValidationError("\(option) \(text) is not HOST:PORT")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw ValidationError("\(option) \(text) has no host") }
        return (host, port)
    }
}

/// Sizes like 10G, 512M, 64KiB, 1048576 (suffixes are powers of 1024).
enum ByteSize {
    static func parse(_ text: String) -> UInt64? {
        var t = text.trimmingCharacters(in: .whitespaces).uppercased()
        for suffix in ["IB", "B"] where t.hasSuffix(suffix) && t.count > suffix.count { t.removeLast(suffix.count); break }
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var multiplier: UInt64 = 1
        if let last = t.last, let m = units[last] { multiplier = m; t.removeLast() }
        guard let value = Double(t), value >= 0 else { return nil }
        return UInt64(value * Double(multiplier))
    }
}

/// Runs a handler on SIGINT or SIGTERM (once each delivery), instead of dying.
final class SignalWatch {
    private let sources: [any DispatchSourceSignal]

    init(_ handler: @escaping @Sendable (Int32) -> Void) {
        sources = [SIGINT, SIGTERM].map { sig in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { handler(sig) }
            source.resume()
            return source
        }
    }

    func cancel() { sources.forEach { $0.cancel() } }
}
