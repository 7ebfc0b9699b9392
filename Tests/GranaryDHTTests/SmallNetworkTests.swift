import Foundation
import GranaryCore
import GranaryDHT
import Testing

@Suite(.serialized) struct SmallNetworkTests {
    @Test(.timeLimit(.minutes(1))) func tenNodesFindEachOtherAndStoreRecords() async throws {
        let net = try await TestNetwork.start(count: 10)
        defer { Task { await net.stopAll() } }
        for a in net.nodes {
            for b in net.nodes where a.id != b.id {
                let (found, _) = await a.findNode(b.id)
                #expect(found?.id == b.id)
            }
        }
        let stored = try await net.nodes[3].putRecord(key: Array("contact".utf8), value: Array("hello".utf8), sequence: 1, ttl: .seconds(600))
        #expect(stored >= 5)
        let got = await net.nodes[7].getRecord(owner: net.nodes[3].id, key: Array("contact".utf8))
        #expect(got?.value == Array("hello".utf8))
        await net.stopAll()
    }
}
