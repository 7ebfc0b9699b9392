import Foundation
import GranaryCore
import GranaryDHT
import GranaryWire
import Testing

/// Each kind of bad input is dropped, counted under its reason (and logged
/// as a warning), and the node keeps serving.
@Suite(.serialized) struct BadInputTests {
    @Test(.timeLimit(.minutes(1))) func badDatagramsAreDroppedAndTheNodeKeepsServing() async throws {
        let net = try await LocalDHTNetwork.start(count: 3, configuration: testConfiguration())
        let target = net.nodes[0]
        let attacker = try await UDPTransport.bind(host: "127.0.0.1", port: 0)
        let port = attacker.localAddress.port
        let to = target.contact.address
        let mallory = identity(), alice = identity()
        func dropped(_ reason: String) -> Int { target.statistics().dropped[reason] ?? 0 }
        func expectDropped(_ reason: String, _ send: () -> Void) async {
            let before = dropped(reason)
            send()
            let ok = await eventually { dropped(reason) > before }
            #expect(ok, "no drop counted as \(reason)")
            // Still serving: an honest node gets its ping answered.
            #expect(await net.nodes[1].ping(target.contact), "node stopped answering after \(reason)")
        }

        // A forged signature: a valid datagram with one signature bit flipped.
        await expectDropped("bad-signature") {
            var env = try! Granary_SignedEnvelope(serializedBytes: craftDatagram(signer: mallory, port: port, .ping(.init())))
            env.signature[5] ^= 0x40
            attacker.send([UInt8](try! env.serializedData()), to: to)
        }
        // A sender ID that is not BLAKE2b of the key that signed.
        await expectDropped("id-mismatch") {
            attacker.send(craftDatagram(signer: mallory, senderID: alice.id, port: port, .ping(.init())), to: to)
        }
        // A key whose proof of work is shorter than the network requires.
        var weak = NodeIdentity(seed: SecureRandom.bytes(32))
        while weak.publicKey.proofOfWorkBits >= testDifficulty { weak = NodeIdentity(seed: SecureRandom.bytes(32)) }
        await expectDropped("short-pow") {
            attacker.send(craftDatagram(signer: weak, port: port, .ping(.init())), to: to)
        }
        // A replay: the exact bytes of a datagram already accepted.
        let once = craftDatagram(signer: mallory, port: port, .ping(.init()))
        attacker.send(once, to: to)
        await expectDropped("replay") { attacker.send(once, to: to) }
        // A stale timestamp (10 minutes old).
        await expectDropped("stale") {
            attacker.send(craftDatagram(signer: mallory, port: port, timestampMs: UInt64(Date().timeIntervalSince1970 * 1000) - 600_000, .ping(.init())), to: to)
        }
        // Oversized: dropped before decoding.
        await expectDropped("oversized") { attacker.send([UInt8](repeating: 0x0a, count: 20_000), to: to) }
        // Truncated: half of a valid datagram.
        await expectDropped("malformed") {
            let whole = craftDatagram(signer: mallory, port: port, .ping(.init()))
            attacker.send(Array(whole.prefix(whole.count / 2)), to: to)
        }
        // STORE of a record whose body names Alice as owner but Mallory signed.
        let aliceRecord = try SignedRecord(owner: alice, key: Array("contact".utf8), value: [9], sequence: 1, expiresAt: Date().addingTimeInterval(60))
        var store = Granary_DhtStore()
        store.record = Granary_SignedEnvelope(kind: .record, body: aliceRecord.envelope.body, signer: mallory)
        await expectDropped("record-rejected") {
            attacker.send(craftDatagram(signer: mallory, port: port, .store(store)), to: to)
        }
        #expect(await net.nodes[2].getRecord(owner: alice.id, key: Array("contact".utf8)) == nil)
        // The genuine record is accepted.
        store.record = aliceRecord.envelope
        attacker.send(craftDatagram(signer: mallory, port: port, .store(store)), to: to)
        #expect(await eventually { await net.nodes[2].getRecord(owner: alice.id, key: Array("contact".utf8))?.value == [9] })
        await attacker.close()
        await net.stopAll()
    }

    /// A farmer's restart publishes its new transfer address; a lookup
    /// anywhere finds the new one, never the old, and nobody else can
    /// publish an address under the farmer's identity.
    @Test(.timeLimit(.minutes(1))) func aRestartedFarmersTransferAddressReplacesTheOldOne() async throws {
        let net = try await LocalDHTNetwork.start(count: 5, configuration: testConfiguration())
        let farmer = net.nodes[1]
        #expect(await TransferAddressPublisher(node: farmer, host: "127.0.0.1", port: 4000).publishOnce() > 0)
        try await Task.sleep(for: .milliseconds(5))  // the sequence is the clock in milliseconds
        #expect(await TransferAddressPublisher(node: farmer, host: "0.0.0.0", port: 5000).publishOnce() > 0)
        let found = await net.nodes[3].lookupRecord(owner: farmer.id, key: TransferAddressRecord.key)
        #expect(found.flatMap { TransferAddressRecord.address(from: $0.value, contactHost: "127.0.0.1") } == "127.0.0.1:5000")
        // Mallory's record names Mallory as owner: a lookup of the farmer's never sees it.
        let mallory = net.nodes[2]
        try await mallory.putRecord(key: TransferAddressRecord.key, value: TransferAddressRecord.value(host: "203.0.113.9", port: 1),
                                    sequence: UInt64.max - 1, ttl: .seconds(60))
        let again = await net.nodes[4].lookupRecord(owner: farmer.id, key: TransferAddressRecord.key)
        #expect(again.map { Array($0.value) } == Array(":5000".utf8))
        await net.stopAll()
    }

    @Test(.timeLimit(.minutes(1))) func olderSequenceDoesNotReplaceNewer() async throws {
        let net = try await LocalDHTNetwork.start(count: 5, configuration: testConfiguration())
        let owner = net.nodes[1]
        let key = Array("k".utf8)
        try await owner.putRecord(key: key, value: [2], sequence: 2, ttl: .seconds(60))
        await #expect(throws: DHTError.self) { try await owner.putRecord(key: key, value: [1], sequence: 1, ttl: .seconds(60)) }
        // Replaying the old signed version from elsewhere is refused by holders.
        let old = try SignedRecord(owner: owner.identity, key: key, value: [1], sequence: 1, expiresAt: Date().addingTimeInterval(60))
        let attacker = try await UDPTransport.bind(host: "127.0.0.1", port: 0)
        var store = Granary_DhtStore()
        store.record = old.envelope
        for n in net.nodes { attacker.send(craftDatagram(signer: identity(), port: attacker.localAddress.port, .store(store)), to: n.contact.address) }
        try await Task.sleep(for: .milliseconds(300))
        #expect(await net.nodes[3].getRecord(owner: owner.id, key: key)?.value == [2])
        await attacker.close()
        await net.stopAll()
    }
}
