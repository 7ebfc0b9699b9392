import ArgumentParser
import Foundation
import GranaryContracts
import GranaryCore
import GranaryDHT
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

    @Option(help: "A DHT node to join, HOST:PORT (repeatable). Without one the farmer serves only renters that know its address.")
    var bootstrap: [String] = []

    @Option(name: .customLong("dht-listen"), help: "UDP address of the farmer's DHT node (default: the --listen host, any free port).")
    var dhtListen: String?

    @Option(name: .customLong("min-price"), help: "Lowest price per passed audit this farmer bids and signs for.")
    var minPrice: UInt64 = 1

    @Option(help: "Seconds a contract may go unpaid before its pieces are dropped.")
    var grace: UInt64 = 86_400

    @Option(name: .customLong("max-duration"), help: "Longest contract this farmer signs, in seconds.")
    var maxDuration: UInt64 = 366 * 86_400

    @OptionGroup var records: RecordHoldingOptions

    @Option(name: .customLong("status-interval"), help: "Seconds between status log lines.")
    var statusInterval: Double = 60

    @Flag(name: .customLong("quick-check"), help: "At startup check piece sizes only, without rehashing.")
    var quickCheck = false

    func run() async throws {
        HeapTuning.keepFreedMemory()
        OpenFileLimit.raise()  // a descriptor per connection and per piece being written
        var logger = Logger(label: "granary.farmer")
        let (host, port) = try HostPort.parse(listen, option: "--listen")
        let advertised = try advertise.map { try HostPort.parse($0, option: "--advertise") }
        let seeds = try bootstrap.map { text -> DHTAddress in
            guard let a = DHTAddress(text), a.port > 0 else { throw ValidationError("--bootstrap \(text) is not HOST:PORT") }
            return a
        }
        let dhtAddress = try dhtListen.map { text -> DHTAddress in
            guard let a = DHTAddress(text) else { throw ValidationError("--dht-listen \(text) is not HOST:PORT") }
            return a
        } ?? DHTAddress(host: host, port: 0)
        guard let bytes = ByteSize.parse(capacity) else {
            throw ValidationError("--capacity \(capacity) is not a size (examples: 10G, 512M, 1048576)")
        }
        let dhtConfiguration = try records.dhtConfiguration()
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

        // The farmer's DHT node: it finds renters' offers (pub/sub) and bids
        // on those its policy accepts, advertising its transfer address.
        let dht = try await DHTNode.startServing(identity: identity, listen: dhtAddress, bootstrap: seeds,
                                          statePath: storage, configuration: dhtConfiguration)
        let transfer = advertised ?? (farmer.host, farmer.port)
        let bids = BidAgent(node: dht, policy: BidPolicy(minPricePerAudit: minPrice, capacityBytes: bytes, maxDurationSeconds: maxDuration),
                            transferHost: transfer.0, transferPort: transfer.1,
                            freeBytes: { let s = farmer.status(); return s.capacity > s.bytesUsed ? s.capacity - s.bytesUsed : 0 })
        await bids.start()
        // Renters find it through this after a restart on another address.
        let addressRecord = TransferAddressPublisher(node: dht, host: transfer.0, port: transfer.1)
        await addressRecord.start()

        print("granary farmer listening tcp=\(farmer.host):\(farmer.port) udp=\(dht.localAddress) node=\(identity.id.hex)")
        fflush(nil)  // flushes stdout: scripts wait for this line
        logger.info("farmer started", metadata: [
            "listen": "\(farmer.host):\(farmer.port)", "advertise": "\(advertise ?? "\(farmer.host):\(farmer.port)")",
            "bootstrap": "\(bootstrap.isEmpty ? "none" : bootstrap.joined(separator: ","))", "storage": "\(storage)", "capacity": "\(bytes)",
            "grace": "\(grace)", "min_price": "\(minPrice)"])

        let signals = SignalWaiter([SIGINT, SIGTERM])
        let stopper = Task {
            let signal = await signals.wait()
            guard signal != 0 else { return }
            log.notice("shutting down", metadata: ["signal": "\(signal)"])
            await farmer.shutdown()
        }
        let status = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(statusInterval))
                if Task.isCancelled { break }
                log.info("status", metadata: ["status": "\(farmer.status())"])
            }
        }
        defer { status.cancel(); stopper.cancel(); signals.cancel() }
        try await farmer.run()
        await bids.stop()
        await addressRecord.stop()
        await dht.stop()
        logger.info("farmer stopped", metadata: ["status": "\(farmer.status())"])
    }
}
