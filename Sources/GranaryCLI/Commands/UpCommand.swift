import ArgumentParser
import Foundation
import GranaryCore

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
    // Shorter than a mount's hourly default: on a network on one machine,
    // audits cost little, and `granary status` shows them within minutes.
    @Option(name: .customLong("audit-interval"), help: "Seconds between audits of each farmer.") var auditInterval: Double = 300
    @Option(name: .customLong("passphrase-file"), help: "The renter key's passphrase (else GRANARY_PASSPHRASE, else a prompt on a terminal).")
    var passphraseFile: String?
    @OptionGroup var background: BackgroundWorkOptions

    func run() async throws {
        _ = try background.compaction()  // refuse bad values before anything starts
        // The embedded network needs less proof of work than production: every
        // identity is minted once and kept, but 12 bits keep the first start quick.
        if ProcessInfo.processInfo.environment["GRANARY_POW_BITS"] == nil { setenv("GRANARY_POW_BITS", "12", 1) }
        let network = try EmbeddedNetwork(stateDirectory: state, farmerCount: farmers, capacity: capacity)
        try network.lock()
        try network.cleanStale(mountpoint: mountpoint)
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)

        // Before any process starts: a sealed key's passphrase is asked (and checked) first.
        let (keyArgs, keyEnvironment) = try renterKeyArguments()

        print("granary up: starting a seed and \(farmers) farmers on 127.0.0.1 (logs in \(state)/logs)")
        try network.start()
        print("granary up: seed at \(network.seedAddress); farmers \(network.farmerAddresses.joined(separator: " "))")

        var mountArgs = ["mount", mountpoint, "--bootstrap", network.seedAddress, "--state", state + "/renter", "--scheme", scheme,
                         "--audit-interval", "\(auditInterval)"]
        if let cacheSize { mountArgs += ["--cache-size", cacheSize] }
        mountArgs += background.arguments
        mountArgs += keyArgs
        let mount = try ManagedChild.start(arguments: mountArgs, log: nil, environment: keyEnvironment)
        // How to use the folder, the mount says once it is ready.
        print("granary up: mounting at \(mountpoint) (Ctrl-C to flush, unmount and stop)")
        let status = await SignalForwarding.run(foreground: mount, onStop: { network.stop() })
        network.stop()
        if status != 0 { throw ExitCode(status) }
    }

    /// `up` never blocks on a prompt it does not need: with no key yet and no
    /// passphrase given, the renter key is created plain (said so); a sealed
    /// key is opened with --passphrase-file, GRANARY_PASSPHRASE, or a prompt
    /// here on the terminal, and the mount child gets the passphrase in its
    /// environment (the child's stdin is not the terminal's).
    private func renterKeyArguments() throws -> ([String], [String: String]) {
        let keyPath = RenterKeyFile.path(state: state + "/renter")
        let source = PassphraseSource(file: passphraseFile)
        if !FileManager.default.fileExists(atPath: keyPath) {
            if source.isGivenNonInteractively {
                return (passphraseFile.map { ["--passphrase-file", $0] } ?? [], [:])
            }
            // The mount says so when it creates it, with how to seal it.
            return (["--plain-key"], [:])
        }
        let file = try KeyFile.read(keyPath)
        guard file.isProtected else { return ([], [:]) }
        guard let secret = try source.forUnlocking(keyPath) else { throw KeyFileError.passphraseRequired(path: keyPath) }
        _ = try file.unlock { secret }  // a wrong passphrase fails here, before the network starts
        if let passphraseFile { return (["--passphrase-file", passphraseFile], [:]) }
        if source.isGivenNonInteractively { return ([], [:]) }  // GRANARY_PASSPHRASE, inherited
        return ([], [PassphraseSource.environmentName: String(decoding: secret, as: UTF8.self)])
    }
}
