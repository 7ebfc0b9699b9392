import Foundation
import GranaryCore
import GranaryRenter
import GranaryTestSupport
import Testing

/// The renter engine against real `granary farm` and `granary seed`
/// processes on loopback: contracts come from the DHT market, pieces travel
/// over the transfer protocol.
@Suite(.serialized)
struct RealNetworkTests {
    #if DEBUG
    static let segmentBytes = 8 << 20
    #else
    static let segmentBytes = 50 << 20   // 2 segments: the 100 MiB
    #endif

    /// Healthy, distinct piece indexes of a segment.
    static func healthy(_ e: RenterEngine, _ id: SegmentID) throws -> Int {
        Set(try e.database.pieces(of: id).filter { $0.state == .stored && e.farmers.isHealthy($0.farmer) }.map(\.index)).count
    }

    @Test(.timeLimit(.minutes(5)))
    func uploadKillThreeReadRepairKillThreeMore() async throws {
        let net = try LoopbackNetwork(farmers: 10)
        let e = try await net.startRenter()
        let ids = [SegmentID.random(), SegmentID.random()]
        let data = [pseudoRandomBytes(Self.segmentBytes, seed: 1), pseudoRandomBytes(Self.segmentBytes - 12345, seed: 2)]
        for (id, d) in zip(ids, data) { try await e.segments.put(id, bytes: d) }
        for id in ids { #expect(try Self.healthy(e, id) >= 7) }
        #expect(e.status().upload.durableSegments == 2)

        // Three farmers holding pieces of both segments die.
        let holders = try ids.map { Set(try e.database.pieces(of: $0).filter { $0.state == .stored }.map(\.farmer)) }
        let victims = Array(holders[0].intersection(holders[1]).sorted().prefix(3))
        #expect(victims.count == 3)
        for v in victims { net.farmer(v)!.process.kill() }
        for (id, d) in zip(ids, data) {
            #expect(try await e.segments.read(id, offset: 0, length: d.count) == d)
            #expect(try await e.segments.read(id, offset: 1_000_000, length: 5000) == Array(d[1_000_000..<1_005_000]))
        }
        // The checker sees them offline past the grace, and repairs.
        await e.audits.auditAll()
        try await Task.sleep(nanoseconds: 1_500_000_000)
        await e.audits.auditAll()
        let report = await e.repairer.runPass()
        #expect(report.segmentsRepaired == 2, "\(report)")
        for id in ids { #expect(try Self.healthy(e, id) >= 7) }

        // Another three holders die: still readable.
        let alive = Set(net.farmers.map(\.node)).subtracting(victims)
        let holders2 = try ids.map { Set(try e.database.pieces(of: $0).filter { $0.state == .stored }.map(\.farmer)) }
        let more = Array(holders2[0].intersection(holders2[1]).intersection(alive).sorted().prefix(3))
        #expect(more.count == 3)
        for v in more { net.farmer(v)!.process.kill() }
        for (id, d) in zip(ids, data) { #expect(try await e.segments.read(id, offset: 0, length: d.count) == d) }
        await e.stop()
    }

    @Test(.timeLimit(.minutes(4)))
    func corruptingFarmerIsDisqualifiedAndRepairedAround() async throws {
        let net = try LoopbackNetwork(farmers: 10)
        let e = try await net.startRenter()
        var segs: [(SegmentID, [UInt8])] = []
        for i in 0..<3 {
            let d = pseudoRandomBytes(2 << 20, seed: UInt64(100 + i))
            let id = SegmentID.random()
            try await e.segments.put(id, bytes: d)
            segs.append((id, d))
        }
        let first = await e.audits.auditAll()
        #expect(!first.isEmpty && first.allSatisfy { $0.verdict == .pass })
        #expect(e.status().totalPaid > 0)
        let bad = try e.database.pieces(of: segs[0].0).first { $0.state == .stored }!.farmer
        #expect(try net.corruptPieces(of: bad) > 0)
        let paidBefore = e.status().contracts.filter { $0.farmer == bad.hex }.map(\.paid).reduce(0, +)
        let outcomes = await e.audits.auditAll()
        let verdict = try #require(outcomes.first { $0.farmer == bad })
        #expect(verdict.verdict == .fail)
        #expect(verdict.paid == 0)
        #expect(e.status().contracts.filter { $0.farmer == bad.hex }.map(\.paid).reduce(0, +) == paidBefore)
        let scoreAfterOne = try #require(e.status().farmers.first { $0.id == bad.hex }).auditScore
        #expect(scoreAfterOne < 1)
        // Reads now prefer every other farmer.
        #expect(e.farmers.all.filter { $0.contact.id != bad }.allSatisfy { e.farmers.rank($0.contact.id) > e.farmers.rank(bad) })
        // It keeps failing, unpaid, until its score falls below the threshold.
        var rounds = 1
        while !e.farmers.isDisqualified(bad) && rounds < 6 {
            let more = await e.audits.auditAll()
            #expect(more.filter { $0.farmer == bad }.allSatisfy { $0.verdict == .fail && $0.paid == 0 })
            rounds += 1
        }
        #expect(e.farmers.isDisqualified(bad))
        #expect(e.status().contracts.filter { $0.farmer == bad.hex }.map(\.paid).reduce(0, +) == paidBefore)
        let badRow = try #require(e.status().farmers.first { $0.id == bad.hex })
        #expect(badRow.auditScore < 0.6)
        for (id, d) in segs { #expect(try await e.segments.read(id, offset: 0, length: d.count) == d) }
        let report = await e.repairer.runPass()
        #expect(report.failures.isEmpty, "\(report)")
        for (id, d) in segs {
            #expect(try Self.healthy(e, id) >= 7)
            #expect(!(try e.database.pieces(of: id)).contains { $0.farmer == bad && $0.state == .stored })
            #expect(try await e.segments.read(id, offset: 0, length: d.count) == d)
        }
        // Its contract is released and replaced from the market.
        await e.contracts.maintain()
        #expect(e.status().contracts.contains { $0.farmer == bad.hex && $0.state == "released" })
        await e.stop()
    }

    @Test(.timeLimit(.minutes(3)))
    func hangingFarmerDoesNotStallUpload() async throws {
        let net = try LoopbackNetwork(farmers: 10)
        let e = try await net.startRenter { $0.transferTimeoutBase = 3 }
        // Two farmers stop answering (SIGSTOP: connections hang, nothing is refused).
        for f in net.farmers.prefix(2) { f.process.signal(SIGSTOP) }
        defer { for f in net.farmers.prefix(2) { f.process.signal(SIGCONT) } }
        let d = pseudoRandomBytes(4 << 20, seed: 9)
        let id = SegmentID.random()
        let started = Date()
        try await e.segments.put(id, bytes: d)
        #expect(Date().timeIntervalSince(started) < 30)
        #expect(try Self.healthy(e, id) >= 7)
        #expect(try await e.segments.read(id, offset: 0, length: d.count) == d)
        await e.stop()
    }

    @Test(.timeLimit(.minutes(3)))
    func deleteReleasesPiecesAndBadRequestsFailClearly() async throws {
        let net = try LoopbackNetwork(farmers: 8)
        let e = try await net.startRenter()
        let d = pseudoRandomBytes(1 << 20, seed: 5)
        let id = SegmentID.random()
        try await e.segments.put(id, bytes: d)
        await #expect(throws: SegmentStoreError.self) { try await e.segments.put(.random(), bytes: [UInt8](repeating: 0, count: (64 << 20) + 1)) }
        await #expect(throws: SegmentStoreError.self) { try await e.segments.read(id, offset: d.count - 1, length: 2) }
        await #expect(throws: SegmentStoreError.self) { try await e.segments.read(.random(), offset: 0, length: 1) }
        #expect(try await e.segments.read(id, offset: 0, length: d.count) == d)
        try await e.segments.delete(id)
        try await e.segments.delete(.random())
        #expect(try await e.segments.list().isEmpty)
        #expect(try e.database.pieces(of: id).isEmpty)
        #expect(e.status().contracts.allSatisfy { $0.used == 0 })
        await e.stop()
    }
}
