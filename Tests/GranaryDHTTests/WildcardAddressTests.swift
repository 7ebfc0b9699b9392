import Foundation
import GranaryCore
import GranaryDHT
import Testing

/// A node bound to 0.0.0.0 must not advertise 0.0.0.0: offers carry the
/// renter's contact, and a farmer on another host that sends its bid there
/// sends it to itself (on one host 0.0.0.0 happens to reach the local
/// machine, which is why loopback tests never showed it).
@Suite struct WildcardAddressTests {
    @Test func theRouteSourceTowardLoopbackIsLoopback() {
        #expect(DHTAddress.localSource(toward: DHTAddress(host: "127.0.0.1", port: 9)) == "127.0.0.1")
        #expect(DHTAddress.localSource(toward: DHTAddress(host: "not-an-address.invalid", port: 9)) == nil)
        #expect(DHTAddress(host: "0.0.0.0", port: 1).isUnspecified)
        #expect(!DHTAddress(host: "10.0.0.1", port: 1).isUnspecified)
    }

    @Test(.timeLimit(.minutes(1))) func aWildcardNodeAdvertisesTheAddressThatReachesItsSeed() async throws {
        let seed = try await DHTNode.start(identity: identity(), listen: DHTAddress(host: "127.0.0.1", port: 0),
                                           configuration: testConfiguration())
        let node = try await DHTNode.start(identity: identity(), listen: DHTAddress(host: "0.0.0.0", port: 0),
                                           bootstrap: [seed.localAddress], configuration: testConfiguration())
        #expect(node.contact.address.host == "127.0.0.1")
        #expect(node.contact.address.port == node.localAddress.port)
        // An explicit advertise address still wins.
        let named = try await DHTNode.start(identity: identity(), listen: DHTAddress(host: "0.0.0.0", port: 0),
                                            advertise: DHTAddress(host: "192.0.2.7", port: 7400),
                                            bootstrap: [seed.localAddress], configuration: testConfiguration())
        #expect(named.contact.address == DHTAddress(host: "192.0.2.7", port: 7400))
        await named.stop()
        await node.stop()
        await seed.stop()
    }
}
