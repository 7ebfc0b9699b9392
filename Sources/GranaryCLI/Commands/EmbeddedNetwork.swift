import Foundation
import GranaryFS

/// Why the embedded network could not start.
struct EmbeddedNetworkError: Error, CustomStringConvertible {
    let description: String
}

/// The seed and farmer processes of `granary up`, with their state folder:
/// `lock` (flock), `network.json` (ports, pids, node IDs), `logs/`,
/// `seed/`, `farmers/N/`.
final class EmbeddedNetwork: @unchecked Sendable {  // used from the main task and the signal path only
    struct Record: Codable {
        var seed: Node?
        var farmers: [Node] = []
        struct Node: Codable { var pid: Int32; var tcp: String?; var udp: String?; var node: String? }
    }

    let stateDirectory: String
    let farmerCount: Int
    let capacity: String
    private var lockFD: Int32 = -1
    private var children: [ManagedChild] = []
    private var record = Record()
    private let stopLock = NSLock()
    private var stopped = false

    var seedAddress: String { record.seed?.udp ?? "" }
    var farmerAddresses: [String] { record.farmers.compactMap(\.tcp) }

    init(stateDirectory: String, farmerCount: Int, capacity: String) throws {
        self.stateDirectory = stateDirectory
        self.farmerCount = farmerCount
        self.capacity = capacity
        for dir in ["", "/logs", "/seed", "/farmers"] {
            try FileManager.default.createDirectory(atPath: stateDirectory + dir, withIntermediateDirectories: true)
        }
    }

    /// One `up` per state folder.
    func lock() throws {
        let path = stateDirectory + "/lock"
        lockFD = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lockFD >= 0 else { throw EmbeddedNetworkError(description: "cannot open \(path): \(String(cString: strerror(errno)))") }
        if flock(lockFD, LOCK_EX | LOCK_NB) != 0 {
            let owner = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
            throw EmbeddedNetworkError(description: "another `granary up` (pid \(owner)) is using \(stateDirectory); stop it first")
        }
        ftruncate(lockFD, 0)
        let pid = "\(getpid())\n"
        _ = pid.withCString { write(lockFD, $0, strlen($0)) }
    }

    private var recordPath: String { stateDirectory + "/network.json" }

    /// Kills processes left by a crashed run and clears a dead mount.
    func cleanStale(mountpoint: String) throws {
        if let data = FileManager.default.contents(atPath: recordPath),
           let old = try? JSONDecoder().decode(Record.self, from: data) {
            record = old
            for node in [old.seed].compactMap({ $0 }) + old.farmers where Self.isGranary(pid: node.pid) {
                print("granary up: stopping orphaned process \(node.pid) from an earlier run")
                kill(node.pid, SIGKILL)
            }
        }
        // The mount clears its own stale mount too, but `up` must create the
        // mount point first, which a dead FUSE mount would refuse.
        let absolute = URL(fileURLWithPath: mountpoint).standardizedFileURL.path
        if try StaleMount.clearIfStale(absolute) {
            print("granary up: cleared a stale mount at \(absolute) left by an earlier run")
        }
    }

    private static func isGranary(pid: Int32) -> Bool {
        guard pid > 0, kill(pid, 0) == 0,
              let cmd = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        return String(decoding: cmd, as: UTF8.self).contains("granary")
    }

    /// Starts the seed, then the farmers all at once; reuses the ports of
    /// the last run. At once, not one by one: a farmer of an earlier run
    /// knows the others from its routing table and, started alone, waited
    /// on each one not yet up before it reported ready, so a second `up`
    /// took about a minute (10 farmers, 5-7 s each) to mount.
    func start() throws {
        let previous = record
        record = Record()
        let seedPort = previous.seed?.udp.flatMap(Self.port) ?? 0
        let seed = try startNode(role: "seed", arguments: ["seed", "--listen", "127.0.0.1:\(seedPort)", "--state", stateDirectory + "/seed"],
                                 log: stateDirectory + "/logs/seed.log")
        record.seed = seed
        guard let seedUDP = seed.udp else { throw EmbeddedNetworkError(description: "the seed did not report its UDP address") }
        var launched: [(role: String, arguments: [String], log: String, child: Result<ManagedChild, any Error>)] = []
        for i in 0..<farmerCount {
            let old = i < previous.farmers.count ? previous.farmers[i] : nil
            let port = old?.tcp.flatMap(Self.port) ?? 0
            let dir = stateDirectory + "/farmers/\(i + 1)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            var arguments = ["farm", "--storage", dir, "--capacity", capacity, "--listen", "127.0.0.1:\(port)", "--bootstrap", seedUDP]
            if let udp = old?.udp.flatMap(Self.port) { arguments += ["--dht-listen", "127.0.0.1:\(udp)"] }
            let log = stateDirectory + "/logs/farmer-\(i + 1).log"
            launched.append(("farmer \(i + 1)", arguments, log, Result { try launch(arguments: arguments, log: log) }))
        }
        for f in launched {
            record.farmers.append(try startNode(role: f.role, arguments: f.arguments, log: f.log, launched: f.child))
        }
        let data = try JSONEncoder().encode(record)
        try data.write(to: URL(fileURLWithPath: recordPath), options: .atomic)
    }

    /// Starts one node, or waits for one `launched` already with these
    /// arguments; if its old ports are taken, retries on port 0.
    private func startNode(role: String, arguments: [String], log: String,
                           launched: Result<ManagedChild, any Error>? = nil) throws -> Record.Node {
        do {
            return try Self.listening(launched?.get() ?? launch(arguments: arguments, log: log))
        } catch let error {
            guard let i = arguments.firstIndex(of: "--listen"), !arguments[i + 1].hasSuffix(":0") else {
                throw EmbeddedNetworkError(description: "\(role) failed to start: \(error) (see \(log))")
            }
            var retry = arguments
            retry[i + 1] = "127.0.0.1:0"
            if let d = retry.firstIndex(of: "--dht-listen") { retry[d + 1] = "127.0.0.1:0" }
            do { return try Self.listening(launch(arguments: retry, log: log)) } catch {
                throw EmbeddedNetworkError(description: "\(role) failed to start: \(error) (see \(log))")
            }
        }
    }

    private func launch(arguments: [String], log: String) throws -> ManagedChild {
        let child = try ManagedChild.start(arguments: arguments, log: log)
        children.append(child)
        return child
    }

    /// Waits until a node says where it listens.
    private static func listening(_ child: ManagedChild) throws -> Record.Node {
        let fields = try child.waitForListeningFields(timeout: 120)
        var node = Record.Node(pid: child.pid)
        node.tcp = fields["tcp"]
        node.udp = fields["udp"]
        node.node = fields["node"]
        return node
    }

    private static func port(_ address: String) -> Int? { address.split(separator: ":").last.flatMap { Int($0) } }

    /// SIGTERM to every node, SIGKILL to stragglers after a few seconds.
    func stop() {
        stopLock.lock()
        defer { stopLock.unlock() }
        guard !stopped else { return }
        stopped = true
        ManagedChild.stopAll(children, grace: 10)
    }
}
