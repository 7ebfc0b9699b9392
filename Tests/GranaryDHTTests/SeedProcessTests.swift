import Foundation
import GranaryCore
import GranaryDHT
import GranaryTestSupport
import Testing

/// Separate `granary seed` processes on loopback, driven from an in-process node.
@Suite(.serialized) struct SeedProcessTests {
    static let env = ["GRANARY_POW_BITS": "\(testDifficulty)"]

    struct Seed {
        let process: ChildProcess
        let address: DHTAddress
        let id: Hash256
    }

    func startSeed(bootstrap: DHTAddress?, state: String? = nil) throws -> Seed {
        var args = ["seed", "--listen", "127.0.0.1:0"]
        if let bootstrap { args += ["--bootstrap", bootstrap.description] }
        if let state { args += ["--state", state] }
        let p = try ChildProcess.granary(args, name: "seed", environment: Self.env)
        let line = try p.waitForLine(timeout: 30) { $0.hasPrefix("granary seed listening ") }
        let fields = Dictionary(uniqueKeysWithValues: line.split(separator: " ").compactMap { part -> (String, String)? in
            let kv = part.split(separator: "=", maxSplits: 1)
            return kv.count == 2 ? (String(kv[0]), String(kv[1])) : nil
        })
        guard let udp = fields["udp"].flatMap(DHTAddress.init), let id = fields["node"].flatMap(Hash256.init(hex:)) else {
            throw TestSupportError.missing("unparsable listening line: \(line)")
        }
        return Seed(process: p, address: udp, id: id)
    }

    @Test(.timeLimit(.minutes(2))) func seedsFormANetwork() async throws {
        let state = TemporaryDirectory("granary-seed")
        var seeds = [try startSeed(bootstrap: nil, state: state.sub("first"))]
        for _ in 1..<7 { seeds.append(try startSeed(bootstrap: seeds[0].address)) }
        defer { for s in seeds { s.process.kill() } }
        let net = try await LocalDHTNetwork.start(count: 1, configuration: testConfiguration())
        let probe = net.nodes[0]
        try await probe.bootstrap([seeds[0].address])
        // Every seed is found by lookup.
        for s in seeds { #expect(await probe.findNode(s.id).contact?.id == s.id) }
        // A record stored by a node that then leaves is still found.
        let writer = try await net.makeNode()
        try await writer.bootstrap([seeds[3].address])
        #expect(try await writer.putRecord(key: Array("contact".utf8), value: [7], sequence: 1, ttl: .seconds(300)) >= 5)
        await writer.stop()
        #expect(await probe.getRecord(owner: writer.id, key: Array("contact".utf8))?.value == [7])
        // Kill 2 of 7 (30%); the rest are still found from a fresh node.
        seeds[5].process.kill()
        seeds[6].process.kill()
        let fresh = try await net.makeNode()
        try await fresh.bootstrap([seeds[1].address])
        for s in seeds.prefix(5) { #expect(await fresh.findNode(s.id).contact?.id == s.id) }
        // Bad input reaches a real process: it logs the drop and keeps serving.
        let attacker = try await UDPTransport.bind(host: "127.0.0.1", port: 0)
        attacker.send([UInt8](repeating: 1, count: 100), to: seeds[2].address)
        _ = try seeds[2].process.waitForLine(timeout: 10) { $0.contains("dropped datagram") }
        #expect(await fresh.ping(address: seeds[2].address) != nil)
        await attacker.close()
        // SIGTERM: clean exit; restarted with its state and no bootstrap, the
        // first seed rejoins through its saved routing table.
        seeds[0].process.signal(SIGTERM)
        #expect(try seeds[0].process.waitForExit(timeout: 10) == 0)
        let again = try startSeed(bootstrap: nil, state: state.sub("first"))
        defer { again.process.kill() }
        #expect(again.id == seeds[0].id)
        let rejoined = await eventually(.seconds(15)) { await fresh.findNode(again.id).contact?.address == again.address }
        #expect(rejoined)
        await net.stopAll()
        await fresh.stop()
    }

    /// A node whose bootstrap node does not answer (not started yet,
    /// restarting, cut off, its packets lost) serves anyway and keeps
    /// trying: it used to exit with "no bootstrap node answered", so a
    /// farmer host that came up before its seed stayed out for good.
    @Test(.timeLimit(.minutes(2))) func aNodeStartedBeforeItsBootstrapNodeJoinsOnceThatAnswers() async throws {
        // A free port, released: the first seed will listen there later.
        let reserved = try await UDPTransport.bind(host: "127.0.0.1", port: 0)
        let port = reserved.localAddress.port
        await reserved.close()
        let early = try startSeed(bootstrap: DHTAddress(host: "127.0.0.1", port: port))
        defer { early.process.kill() }
        try await Task.sleep(for: .seconds(2))
        #expect(early.process.isRunning, "the node waits for its bootstrap node instead of exiting")
        let first = try ChildProcess.granary(["seed", "--listen", "127.0.0.1:\(port)"], name: "seed", environment: Self.env)
        defer { first.kill() }
        _ = try first.waitForLine(timeout: 30) { $0.hasPrefix("granary seed listening ") }
        let net = try await LocalDHTNetwork.start(count: 1, configuration: testConfiguration())
        let probe = net.nodes[0]
        try await probe.bootstrap([DHTAddress(host: "127.0.0.1", port: port)])
        let joined = await eventually(.seconds(40)) { await probe.findNode(early.id).contact?.id == early.id }
        #expect(joined, "the early node joined once its bootstrap node answered: \(early.process.output)")
        await net.stopAll()
    }
}
