import Foundation
import GranaryCore
import GranaryDHT
import GranaryWire

/// Proof of work used by every test (the network's GRANARY_POW_BITS).
let testDifficulty = 4

func testConfiguration() -> DHTConfiguration {
    var c = DHTConfiguration.fastForTests(difficulty: testDifficulty)
    c.requestTimeout = .seconds(2)  // two shared cores: don't mistake a slow reply for a dead node
    return c
}

func identity() -> NodeIdentity { NodeIdentity.generate(difficulty: testDifficulty) }

/// Runs `body` over `items`, at most `width` at a time, results in order.
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

/// Builds the serialized envelope of a DHT datagram by hand, so tests can
/// forge every field a real node would get right.
func craftDatagram(signer: NodeIdentity, senderKey: NodeIdentity? = nil, senderID: Hash256? = nil,
                   host: String = "127.0.0.1", port: Int, timestampMs: UInt64? = nil,
                   _ message: Granary_DhtDatagram.OneOf_Message) -> [UInt8] {
    var d = Granary_DhtDatagram()
    d.timestampMs = timestampMs ?? UInt64(Date().timeIntervalSince1970 * 1000)
    d.nonce = Data(SecureRandom.bytes(16))
    d.requestID = UInt64.random(in: 1...UInt64.max)
    let key = senderKey ?? signer
    var c = Granary_DhtContact()
    c.nodeID = Data((senderID ?? key.id).bytes)
    c.publicKey = Data(key.publicKey.bytes)
    c.host = host
    c.port = UInt32(port)
    d.sender = c
    d.message = message
    let envelope = try! Granary_SignedEnvelope(kind: .datagram, message: d, signer: signer)
    return [UInt8](try! envelope.serializedData())
}

/// Waits until `condition` holds, polling, for at most `timeout`.
func eventually(_ timeout: Duration = .seconds(10), _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return await condition()
}
