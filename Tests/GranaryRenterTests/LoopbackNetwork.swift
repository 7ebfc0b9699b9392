import Foundation
import GranaryCore
import GranaryDHT
import GranaryRenter
import GranaryTestSupport

/// A seed and N `granary farm` processes on 127.0.0.1, each with port 0
/// and its own folder; killed when released.
final class LoopbackNetwork: @unchecked Sendable {
    struct Farmer {
        let process: ChildProcess
        let storage: String
        let tcp: String
        let node: Hash256
    }

    static let powBits = 4
    static let environment = ["GRANARY_POW_BITS": String(powBits)]

    let dir = TemporaryDirectory("granary-renter")
    let seed: ChildProcess
    let seedAddress: String
    private(set) var farmers: [Farmer] = []
    /// Whether the farmers joined the DHT themselves (their line names a
    /// udp= address). When they do not, `startBidders` runs each farmer's
    /// market half in this process: a DHT node with the farmer's own key
    /// (from its storage folder) and a BidAgent pointing at its TCP port, so
    /// renters still find farmers only through the market.
    private(set) var farmersJoinMarket = false
    private var bidders: [Hash256: (DHTNode, BidAgent)] = [:]

    static func field(_ name: String, in line: String) -> String? {
        for part in line.split(separator: " ") where part.hasPrefix(name + "=") {
            return String(part.dropFirst(name.count + 1))
        }
        return nil
    }

    init(farmers count: Int, capacity: String = "4GiB", extraFarmerArguments: (Int) -> [String] = { _ in [] }) throws {
        seed = try ChildProcess.granary(["seed", "--listen", "127.0.0.1:0", "--state", dir.sub("seed")], name: "seed",
                                        environment: Self.environment)
        let line = try seed.waitForLine(timeout: 30) { $0.contains("listening") && $0.contains("udp=") }
        seedAddress = Self.field("udp", in: line)!
        for i in 0..<count {
            let storage = dir.sub("farmer\(i)")
            let p = try ChildProcess.granary(["farm", "--storage", storage, "--capacity", capacity, "--listen", "127.0.0.1:0",
                                              "--bootstrap", seedAddress] + extraFarmerArguments(i),
                                             name: "farmer\(i)", environment: Self.environment)
            farmers.append(Farmer(process: p, storage: storage, tcp: "", node: .zero))
        }
        for i in 0..<count {
            let line = try farmers[i].process.waitForLine(timeout: 60) { $0.contains("listening") && $0.contains("tcp=") }
            farmersJoinMarket = line.contains("udp=")
            farmers[i] = Farmer(process: farmers[i].process, storage: farmers[i].storage, tcp: Self.field("tcp", in: line)!,
                                node: Hash256(hex: Self.field("node", in: line)!)!)
        }
    }

    func farmer(_ id: Hash256) -> Farmer? { farmers.first { $0.node == id } }

    func startBidders() async throws {
        guard !farmersJoinMarket, bidders.isEmpty else { return }
        let seed = DHTAddress(seedAddress)!
        for f in farmers {
            let identity = try NodeIdentity.load(from: f.storage + "/identity.key", difficulty: Self.powBits)
            let node = try await DHTNode.start(identity: identity, listen: DHTAddress(host: "127.0.0.1", port: 0), bootstrap: [seed],
                                               configuration: .fastForTests(difficulty: Self.powBits))
            let (host, port) = (String(f.tcp.split(separator: ":")[0]), Int(f.tcp.split(separator: ":")[1])!)
            let agent = BidAgent(node: node, policy: BidPolicy(minPricePerAudit: 1, capacityBytes: 4 << 30, maxDurationSeconds: 366 * 86_400),
                                 transferHost: host, transferPort: port)
            await agent.start()
            bidders[f.node] = (node, agent)
        }
    }

    /// SIGKILLs a farmer (and its market half).
    func kill(_ id: Hash256) async {
        farmer(id)?.process.kill()
        if let (node, agent) = bidders.removeValue(forKey: id) { await agent.stop(); await node.stop() }
    }

    func stopBidders() async {
        for (_, (node, agent)) in bidders { await agent.stop(); await node.stop() }
        bidders.removeAll()
    }

    /// Flips bytes in every piece file of a farmer (its pieces/ folder).
    func corruptPieces(of id: Hash256) throws -> Int {
        guard let f = farmer(id) else { return 0 }
        var count = 0
        let root = f.storage + "/pieces"
        let e = FileManager.default.enumerator(atPath: root)
        while let rel = e?.nextObject() as? String {
            let path = root + "/" + rel
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue,
                  let h = FileHandle(forUpdatingAtPath: path) else { continue }
            let size = (try? h.seekToEnd()) ?? 0
            var offset: UInt64 = 0
            while offset < size {
                try h.seek(toOffset: offset)
                try h.write(contentsOf: Data([0xA5, 0x5A, 0xFF, 0x00]))
                offset += 1024
            }
            try h.close()
            count += 1
        }
        return count
    }

    /// A renter configuration for tests: short deadlines, fast repair, no loop.
    static func renterConfiguration() -> RenterConfiguration {
        var c = RenterConfiguration()
        c.difficulty = powBits
        c.runBackgroundLoops = false
        c.transferTimeoutBase = 5
        c.requestTimeout = 5
        c.offlineGrace = 1
        c.repairBytesPerSecond = 1e12
        c.bidWindow = 1.5
        c.terms = ContractTerms(allowance: 1 << 30, duration: 3600, maxPricePerAudit: 1_000, auditInterval: 60)
        return c
    }

    func startRenter(state: String? = nil, identity: NodeIdentity? = nil,
                     tweak: (inout RenterConfiguration) -> Void = { _ in }) async throws -> RenterEngine {
        var c = Self.renterConfiguration()
        tweak(&c)
        let id = identity ?? NodeIdentity.generate(difficulty: Self.powBits)
        try await startBidders()
        return try await RenterEngine.start(stateDirectory: state ?? dir.sub("renter"), identity: id, bootstrap: [seedAddress],
                                            configuration: c, contractTimeout: 60)
    }
}

func pseudoRandomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    var state = seed &+ 0x9E37_79B9_7F4A_7C15
    out.withUnsafeMutableBytes { buf in
        var i = 0
        while i < count {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            withUnsafeBytes(of: z) { w in
                let n = min(8, count - i)
                buf.baseAddress!.advanced(by: i).copyMemory(from: w.baseAddress!, byteCount: n)
            }
            i += 8
        }
    }
    return out
}
