import Foundation
import GranaryCore
import GranaryDHT

/// Proof of work used by every test (the network's GRANARY_POW_BITS).
let testDifficulty = 4

/// A network of DHT nodes in this process, on real UDP sockets on
/// 127.0.0.1 (or on the in-memory transport when given a MemoryNetwork).
final class TestNetwork: @unchecked Sendable {
    // @unchecked: `nodes` is filled before the network is shared and only
    // read afterwards by the test that owns it.
    var nodes: [DHTNode] = []

    static func identity() -> NodeIdentity { NodeIdentity.generate(difficulty: testDifficulty) }

    /// Starts `count` nodes: the first alone, the rest bootstrapping off it
    /// (a few at a time, as real nodes arrive).
    static func start(count: Int, configuration: DHTConfiguration = .fastForTests(),
                      memory: MemoryNetwork? = nil) async throws -> TestNetwork {
        let net = TestNetwork()
        let first = try await makeNode(configuration, memory)
        net.nodes.append(first)
        let seed = first.contact.address
        var i = 1
        while i < count {
            let batch = min(10, count - i)
            let nodes = try await withThrowingTaskGroup(of: DHTNode.self) { group in
                for _ in 0..<batch {
                    group.addTask {
                        let n = try await makeNode(configuration, memory)
                        try await n.bootstrap([seed])
                        return n
                    }
                }
                var out: [DHTNode] = []
                for try await n in group { out.append(n) }
                return out
            }
            net.nodes += nodes
            i += batch
        }
        return net
    }

    static func makeNode(_ configuration: DHTConfiguration, _ memory: MemoryNetwork?, statePath: String? = nil) async throws -> DHTNode {
        let transport: any DHTTransport
        if let memory { transport = memory.makeTransport() } else { transport = try await UDPTransport.bind(host: "127.0.0.1", port: 0) }
        let node = try DHTNode(identity: identity(), transport: transport, configuration: configuration, statePath: statePath)
        await node.start()
        return node
    }

    func stopAll() async {
        for n in nodes { await n.stop() }
    }
}

/// Runs `body` over `items` with at most `width` at a time.
func concurrently<T: Sendable, R: Sendable>(_ items: [T], width: Int = 16, _ body: @escaping @Sendable (T) async -> R) async -> [R] {
    await withTaskGroup(of: (Int, R).self) { group in
        var results = [R?](repeating: nil, count: items.count)
        var next = 0
        for _ in 0..<min(width, items.count) {
            let i = next; next += 1
            group.addTask { (i, await body(items[i])) }
        }
        for await (i, r) in group {
            results[i] = r
            if next < items.count {
                let j = next; next += 1
                group.addTask { (j, await body(items[j])) }
            }
        }
        return results.map { $0! }
    }
}
