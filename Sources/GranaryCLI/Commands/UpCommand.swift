import ArgumentParser
import Foundation

/// `granary up`: the embedded default. A seed DHT node and farmers on
/// 127.0.0.1 as children that die with this process, then the mount in the
/// foreground, handed only the seed's address (contracts form through the
/// market, as on a real network).
struct UpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start an embedded network (a seed and farmers on 127.0.0.1) and mount it.",
        discussion: """
        State, ports, pids and logs live under --state (default .granary/), locked against a second `up`. \
        A second `up` reuses the same state, ports and identities and shows the same files. \
        Ctrl-C or SIGTERM flushes what it can, unmounts cleanly and stops the farmers.
        """)

    @Option(help: "State folder of the embedded network.") var state = ".granary"
    @Option(help: "Where to mount.") var mountpoint = "Mountpoints/granary"
    @Option(help: "Number of farmers.") var farmers = 10
    @Option(help: "Disk space each farmer sells (e.g. 8G); at least the renter's 4 GiB contract allowance.") var capacity = "8G"
    @Option(help: "Local cache budget for clean chunks (e.g. 1G).") var cacheSize: String?
    @Option(help: "Redundancy k/r/s/n.") var scheme = "4/5/7/8"

    func run() async throws {
        // The embedded network needs less proof of work than production: every
        // identity is minted once and kept, but 12 bits keep the first start quick.
        if ProcessInfo.processInfo.environment["GRANARY_POW_BITS"] == nil { setenv("GRANARY_POW_BITS", "12", 1) }
        let network = try EmbeddedNetwork(stateDirectory: state, farmerCount: farmers, capacity: capacity)
        try network.lock()
        try network.cleanStale(mountpoint: mountpoint)
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)

        print("granary up: starting a seed and \(farmers) farmers on 127.0.0.1 (logs in \(state)/logs)")
        try network.start()
        print("granary up: seed at \(network.seedAddress); farmers \(network.farmerAddresses.joined(separator: " "))")

        var mountArgs = ["mount", mountpoint, "--bootstrap", network.seedAddress, "--state", state + "/renter", "--scheme", scheme]
        if let cacheSize { mountArgs += ["--cache-size", cacheSize] }
        let mount = try ManagedChild.start(arguments: mountArgs, log: nil)
        print("""
            granary up: mounting at \(mountpoint) (Ctrl-C to flush, unmount and stop)
              use it like any folder:   cp -a ~/Documents \(mountpoint)/
              see what is happening:    granary status --state \(state)/renter
              wait until it is stored:  granary flush --state \(state)/renter
            """)
        let status = await SignalForwarding.run(foreground: mount, onStop: { network.stop() })
        network.stop()
        if status != 0 { throw ExitCode(status) }
    }
}
