import ArgumentParser
import Foundation
import GranaryCore
import GranaryDHT

/// `granary bench dht`: lookup cost in a 100-node network on real UDP
/// sockets and in a 1,000-node network on the in-memory transport (same
/// node code), and pub/sub delivery of an offer to 20 subscribers among 100.
struct DHTBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dht", abstract: "Kademlia lookup rounds and pub/sub delivery (100 UDP nodes, 1,000 simulated).")

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    @Option(help: "Lookups measured per network.")
    var lookups = 300

    @Option(help: "Nodes in the simulated network.")
    var simulated = 1000

    @Option(help: "Offers published in the pub/sub measurement.")
    var offers = 10

    func run() async throws {
        var config = DHTConfiguration.fastForTests(difficulty: min(NodeIdentity.configuredDifficulty, 8))
        config.requestTimeout = .seconds(2)
        let started = ContinuousClock.now

        // 100 nodes on real UDP sockets.
        let udp = try await LocalDHTNetwork.start(count: 100, configuration: config)
        progress("100 UDP nodes joined, \(udp.nodes.reduce(0) { $0 + $1.statistics().datagramsSent }) datagrams", started)
        let udpLookups = await udp.measureLookups(count: lookups)
        progress("\(lookups) lookups over UDP", started)
        let pubsub = try await udp.measurePubSub(subscribers: 20, offers: offers)
        progress("\(offers) offers published", started)
        await udp.stopAll()

        // 1,000 nodes on the in-memory transport.
        var simConfig = config
        simConfig.filterExchangeInterval = .seconds(3600)  // no pub/sub traffic in the lookup simulation
        let sim = try await LocalDHTNetwork.start(count: simulated, configuration: simConfig, inMemory: true, joinWidth: 20)
        progress("\(simulated) simulated nodes joined, \(sim.nodes.reduce(0) { $0 + $1.statistics().datagramsSent }) datagrams", started)
        let simLookups = await sim.measureLookups(count: lookups)
        progress("\(lookups) simulated lookups", started)
        await sim.stopAll()

        let r100 = udpLookups.map(\.statistics.rounds), r1000 = simLookups.map(\.statistics.rounds)
        let messages1000 = Double(simLookups.map(\.statistics.messages).reduce(0, +)) / Double(max(1, simLookups.count))
        let found100 = Double(udpLookups.filter(\.found).count) / Double(max(1, udpLookups.count))
        let found1000 = Double(simLookups.filter(\.found).count) / Double(max(1, simLookups.count))
        let figures: [(String, Double)] = [
            ("lookup_rounds_median_100", Double(Percentile.of(r100, 50))),
            ("lookup_rounds_p99_100", Double(Percentile.of(r100, 99))),
            ("lookup_rounds_median_1000", Double(Percentile.of(r1000, 50))),
            ("lookup_rounds_p99_1000", Double(Percentile.of(r1000, 99))),
            ("messages_per_lookup_1000", (messages1000 * 100).rounded() / 100),
            ("pubsub_delivery_ratio", (pubsub.deliveryRatio * 1000).rounded() / 1000),
            ("pubsub_messages_per_delivery", (pubsub.messagesPerDelivery * 100).rounded() / 100),
            ("lookup_found_ratio_100", found100),
            ("lookup_found_ratio_1000", found1000),
            ("seconds", Double((ContinuousClock.now - started).components.seconds)),
        ]
        if json {
            let body = figures.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ")
            print("{\(body)}")
        } else {
            print("DHT benchmark (goal: median lookup rounds at 1,000 nodes <= 4)")
            for (k, v) in figures { print(k.padding(toLength: 32, withPad: " ", startingAt: 0) + String(v)) }
        }
    }
}

/// Progress on stderr, so stdout stays one JSON object.
private func progress(_ what: String, _ since: ContinuousClock.Instant) {
    let s = Double((ContinuousClock.now - since).components.attoseconds / 10_000_000_000_000_000) / 100
        + Double((ContinuousClock.now - since).components.seconds)
    FileHandle.standardError.write(Data("bench dht: \(what) (\(s) s)\n".utf8))
}
