import ArgumentParser
import GranaryDHT

/// How a DHT node that holds records for others (`seed`, `farm`) keeps
/// them alive. Shared so both commands take and check it the same way.
struct RecordHoldingOptions: ParsableArguments {
    @Option(name: .customLong("republish-interval"),
            help: "Seconds between republishing the DHT records this node holds (kept in routing.db) to the nodes closest to them.")
    var republishInterval: Double = 3600

    /// The DHT configuration these options give.
    func dhtConfiguration() throws -> DHTConfiguration {
        guard republishInterval >= 1 else { throw ValidationError("--republish-interval must be at least 1 second") }
        var configuration = DHTConfiguration()
        configuration.republishInterval = .milliseconds(Int64(republishInterval * 1000))
        return configuration
    }
}
