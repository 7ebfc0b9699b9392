import ArgumentParser
import Dispatch
import Foundation
import GranaryCore
import GranaryDHT
import Logging

/// `granary seed`: a DHT node that stores no pieces, for bootstrapping.
/// With --state it keeps its identity (identity.key, mode 0600), its
/// routing table and the signed records it holds (routing.db) there, and
/// rejoins through them and serves the records again on restart.
struct SeedCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seed", abstract: "Run a DHT bootstrap node (stores no pieces).")

    @Option(help: "UDP address to listen on (port 0 picks one and prints it).")
    var listen: String = "0.0.0.0:7400"

    @Option(help: "Address other nodes should use to reach this one (behind a port forward).")
    var advertise: String?

    @Option(help: "Another node to join through (repeatable).")
    var bootstrap: [String] = []

    @Option(help: "Folder for the identity key, the routing table and the records held (default: nothing kept).")
    var state: String?

    @OptionGroup var records: RecordHoldingOptions

    func run() async throws {
        let logger = Logger(label: "granary.seed")
        guard let listenAddress = DHTAddress(listen) else { throw ValidationError("--listen \(listen) is not HOST:PORT") }
        let advertised = try advertise.map { text -> DHTAddress in
            guard let a = DHTAddress(text), a.port > 0 else { throw ValidationError("--advertise \(text) is not HOST:PORT") }
            return a
        }
        let seeds = try bootstrap.map { text -> DHTAddress in
            guard let a = DHTAddress(text), a.port > 0 else { throw ValidationError("--bootstrap \(text) is not HOST:PORT") }
            return a
        }
        let configuration = try records.dhtConfiguration()
        let difficulty = NodeIdentity.configuredDifficulty
        let identity: NodeIdentity
        if let state {
            try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
            identity = try NodeIdentity.loadOrCreate(at: state + "/identity.key", difficulty: difficulty)
        } else {
            identity = NodeIdentity.generate(difficulty: difficulty)
        }
        let signals = SignalWaiter([SIGINT, SIGTERM])
        let node = try await DHTNode.startServing(identity: identity, listen: listenAddress, advertise: advertised,
                                           bootstrap: seeds, statePath: state, configuration: configuration)
        let bound = node.localAddress
        // The one stdout line scripts and tests wait for, written unbuffered.
        let line = "granary seed listening udp=\(bound) node=\(node.id.hex)\n"
        _ = line.withCString { write(STDOUT_FILENO, $0, strlen($0)) }
        let contacts = await node.knownContacts().count
        logger.info("seed node \(node.id.short) serving on udp \(bound), advertising \(node.contact.address), \(contacts) contacts")
        let sig = await signals.wait()
        logger.info("signal \(sig): shutting down")
        await node.stop()
    }
}
