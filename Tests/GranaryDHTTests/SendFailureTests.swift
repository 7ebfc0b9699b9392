import Foundation
import GranaryCore
import GranaryDHT
import GranaryWire
import Synchronization
import Testing

/// A send that fails loses that datagram and nothing else. NIO closes a
/// datagram channel on most send errors, so one EPERM from a firewall
/// rule, one ENETUNREACH while a link was down, or one EACCES for a peer
/// that named a broadcast address used to leave a node running but deaf.
@Suite struct SendFailureTests {
    final class Inbox: Sendable {
        let datagrams = Mutex<[[UInt8]]>([])
        func contains(_ bytes: [UInt8]) -> Bool { datagrams.withLock { $0.contains(bytes) } }
    }

    @Test(.timeLimit(.minutes(1))) func aFailedSendLosesOneDatagramAndTheSocketKeepsServing() async throws {
        let a = try await UDPTransport.bind(host: "127.0.0.1", port: 0)
        let b = try await UDPTransport.bind(host: "127.0.0.1", port: 0)
        let inboxA = Inbox(), inboxB = Inbox()
        a.setReceiver { bytes, _ in inboxA.datagrams.withLock { $0.append(bytes) } }
        b.setReceiver { bytes, _ in inboxB.datagrams.withLock { $0.append(bytes) } }
        a.send([1], to: DHTAddress(host: "255.255.255.255", port: 9))  // EACCES: broadcast
        a.send([2], to: DHTAddress(host: "::1", port: 9))              // EAFNOSUPPORT: IPv6 on an IPv4 socket
        #expect(a.failedSends == 2)
        try await Task.sleep(for: .milliseconds(100))
        b.send([3], to: a.localAddress)
        a.send([4], to: b.localAddress)
        #expect(await eventually { inboxA.contains([3]) }, "the socket still receives after failed sends")
        #expect(await eventually { inboxB.contains([4]) }, "the socket still sends after failed sends")
        await a.close()
        await b.close()
    }

    /// A bootstrap list naming a broadcast address (a typo, or a script's
    /// bad guess) costs the node those sends only: it joins through the
    /// seed that answers and keeps answering pings.
    @Test(.timeLimit(.minutes(1))) func aNodeWhoseSendsFailKeepsServing() async throws {
        let seed = try await DHTNode.start(identity: identity(), listen: DHTAddress(host: "127.0.0.1", port: 0),
                                           configuration: testConfiguration())
        let node = try await DHTNode.start(identity: identity(), listen: DHTAddress(host: "127.0.0.1", port: 0),
                                           bootstrap: [DHTAddress(host: "255.255.255.255", port: 9), seed.localAddress],
                                           configuration: testConfiguration())
        try await Task.sleep(for: .milliseconds(200))
        #expect(await seed.ping(node.contact), "the node answers after its send to a broadcast address failed")
        #expect(await node.ping(seed.contact))
        await node.stop()
        await seed.stop()
    }

    @Test func onlyUnicastIPLiteralsAreUsableAddresses() {
        for host in ["127.0.0.1", "10.213.0.11", "192.0.2.7", "::1", "2001:db8::7"] {
            #expect(DHTAddress(host: host, port: 1).isUnicastLiteral, "\(host)")
        }
        for host in ["255.255.255.255", "224.0.0.1", "239.1.2.3", "0.0.0.0", "::", "ff02::1", "localhost",
                     "seed.example.org", "", "1.2.3", "[::1]"] {
            #expect(!DHTAddress(host: host, port: 1).isUnicastLiteral, "\(host)")
        }
        #expect(DHTAddress.numericHost(for: "localhost") != nil)
        #expect(DHTAddress.numericHost(for: "10.1.2.3") == "10.1.2.3")
        #expect(DHTAddress.numericHost(for: "localhost", sameFamilyAs: "127.0.0.1") == "127.0.0.1")
        #expect(DHTAddress.numericHost(for: "10.1.2.3", sameFamilyAs: "::1") == nil, "an IPv4 literal is no IPv6 address")
    }

    /// Contacts are what peers name to each other: one naming a broadcast
    /// or multicast address, or a host name, is refused as malformed.
    @Test func contactsNamingNoSingleHostAreRefused() throws {
        let key = identity()
        func contact(_ host: String) -> Granary_DhtContact {
            var c = Granary_DhtContact()
            c.nodeID = Data(key.id.bytes)
            c.publicKey = Data(key.publicKey.bytes)
            c.host = host
            c.port = 7400
            return c
        }
        for host in ["255.255.255.255", "224.0.0.1", "ff02::1", "seed.example.org", ""] {
            #expect(throws: DHTError.self, "\(host)") { try DHTContact(contact(host), difficulty: testDifficulty) }
        }
        for host in ["10.0.0.7", "::1", "0.0.0.0"] {  // unspecified: the receiver substitutes the source
            #expect(try DHTContact(contact(host), difficulty: testDifficulty).address.host == host)
        }
    }

    @Test(.timeLimit(.minutes(1))) func aNamedAdvertiseAddressIsAdvertisedResolved() async throws {
        let node = try await DHTNode.start(identity: identity(), listen: DHTAddress(host: "127.0.0.1", port: 0),
                                           advertise: DHTAddress(host: "localhost", port: 7400),
                                           configuration: testConfiguration())
        #expect(node.contact.address.host == "127.0.0.1", "a node bound to IPv4 advertises IPv4: \(node.contact.address)")
        #expect(node.contact.address.port == 7400)
        await node.stop()
    }
}
