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
    static let segmentBytes = 50 << 20   // 2 segments: the issue's 100 MiB
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
        for v in victims { await net.kill(v) }
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
        for v in more { await net.kill(v) }
        for (id, d) in zip(ids, data) { #expect(try await e.segments.read(id, offset: 0, length: d.count) == d) }
        await e.stop()
        await net.stopBidders()
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
        await net.stopBidders()
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
        await net.stopBidders()
    }

    /// A farmer that freezes (SIGSTOP: its connections hang, nothing is
    /// refused) costs one read a hedge delay; the reads after it go around
    /// the farmer instead of each waiting a hedge delay again.
    @Test(.timeLimit(.minutes(3)))
    func readsGoAroundAFrozenFarmerAfterOneHedgeDelay() async throws {
        let net = try LoopbackNetwork(farmers: 10)
        // Hedge after 1 s: before the 5 s handshake or 10 s transfer
        // deadlines could mark the farmer failing.
        let e = try await net.startRenter { $0.readHedgeBase = 1 }
        var segs: [(SegmentID, [UInt8])] = []
        for i in 0..<4 {
            let d = pseudoRandomBytes(1 << 20, seed: 700 + UInt64(i))
            let id = SegmentID.random()
            try await e.segments.put(id, bytes: d)
            segs.append((id, d))
        }
        let k = try #require(try e.database.segment(segs[0].0)).scheme.k
        let frozen = try #require(try e.database.pieces(of: segs[0].0).first { $0.index < k && $0.state == .stored }).farmer
        let process = try #require(net.farmer(frozen)).process
        process.signal(SIGSTOP)
        defer { process.signal(SIGCONT) }
        // The first read asks the frozen farmer for its data piece, hedges
        // after the delay and decodes from the others.
        #expect(try await e.segments.read(segs[0].0, offset: 0, length: segs[0].1.count) == segs[0].1)
        #expect(e.farmers.isSlow(frozen))
        #expect(!e.farmers.isFailing(frozen), "slow is not failing: nothing was refused")
        // A read that asked the frozen farmer first would wait the whole
        // hedge delay (1 s and more); going around it takes a fraction.
        for (id, d) in segs {
            let started = Date()
            #expect(try await e.segments.read(id, offset: 0, length: d.count) == d)
            let took = Date().timeIntervalSince(started)
            #expect(took < 1, "read of \(id.short) took \(took) s with farmer \(frozen.short) frozen")
        }
        await e.stop()
        await net.stopBidders()
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
        await net.stopBidders()
    }

    @Test(.timeLimit(.minutes(3)))
    func unpaidFarmersDropPiecesAndAreRepairedAround() async throws {
        // Farmers 0-2 drop an unpaid contract's pieces after 4 s; the others wait a day.
        let net = try LoopbackNetwork(farmers: 10) { $0 < 3 ? ["--grace", "4"] : [] }
        let strict = Set(net.farmers.prefix(3).map(\.node))
        let e = try await net.startRenter { $0.payForAudits = false }
        var segs: [(SegmentID, [UInt8])] = []
        for i in 0..<3 {
            let d = pseudoRandomBytes(1 << 20, seed: UInt64(200 + i))
            let id = SegmentID.random()
            try await e.segments.put(id, bytes: d)
            segs.append((id, d))
        }
        let onStrict = try segs.flatMap { try e.database.pieces(of: $0.0) }.filter { $0.state == .stored && strict.contains($0.farmer) }
        #expect(!onStrict.isEmpty)
        try await Task.sleep(nanoseconds: 6_000_000_000)
        var rounds = 0
        while rounds < 6 && !strict.allSatisfy({ e.farmers.isDisqualified($0) || (try? e.database.storedPieces(onFarmer: $0).isEmpty) == true }) {
            let outcomes = await e.audits.auditAll()
            #expect(outcomes.allSatisfy { $0.paid == 0 })
            #expect(outcomes.filter { strict.contains($0.farmer) }.allSatisfy { $0.verdict == .fail })
            rounds += 1
        }
        let report = await e.repairer.runPass()
        #expect(report.failures.isEmpty, "\(report)")
        for (id, d) in segs {
            #expect(try Self.healthy(e, id) >= 7)
            #expect(!(try e.database.pieces(of: id)).contains { strict.contains($0.farmer) && $0.state == .stored })
            #expect(try await e.segments.read(id, offset: 0, length: d.count) == d)
        }
        await e.stop()
        await net.stopBidders()
    }

    /// network.db restored from an older snapshot holds lower vouchers
    /// than the farmers accepted: the farmers say so with their highest,
    /// and the renter continues above it instead of going unpaid.
    @Test(.timeLimit(.minutes(3)))
    func restoredLedgerCatchesUpWithTheFarmersVouchers() async throws {
        let net = try LoopbackNetwork(farmers: 10)
        let state = net.dir.sub("ledger-renter")
        let identity = NodeIdentity.generate(difficulty: LoopbackNetwork.powBits)
        var e = try await net.startRenter(state: state, identity: identity)
        try await e.segments.put(SegmentID.random(), bytes: pseudoRandomBytes(1 << 20, seed: 31))
        let old = net.dir.path + "/old-network.db"
        try e.database.copy(to: old)  // the "snapshot", before any payment
        for _ in 0..<2 { #expect(await e.audits.auditAll().allSatisfy { $0.verdict == .pass && $0.paid > 0 }) }
        let paid = try e.database.vouchers()
        #expect(!paid.isEmpty && paid.values.allSatisfy { $0 > 0 })
        await e.stop()

        // The restore: the old ledger comes back.
        let fm = FileManager.default
        for suffix in ["", "-wal", "-shm"] { try? fm.removeItem(atPath: state + "/network.db" + suffix) }
        try fm.copyItem(atPath: old, toPath: state + "/network.db")
        e = try await net.startRenter(state: state, identity: identity)
        #expect(try e.database.vouchers().isEmpty)
        let outcomes = await e.audits.auditAll()
        #expect(!outcomes.isEmpty && outcomes.allSatisfy { $0.verdict == .pass && $0.paid > 0 }, "\(outcomes)")
        let after = try e.database.vouchers()
        for (contract, amount) in paid {
            // Above what the farmer already held (the old ledger alone would have sent one audit's price).
            #expect((after[contract] ?? 0) > amount, "contract \(contract.short): \(after[contract] ?? 0) after, \(amount) before")
        }
        await e.stop()
        await net.stopBidders()
    }

    @Test(.timeLimit(.minutes(3)))
    func renterKilledMidUploadRecovers() async throws {
        let net = try LoopbackNetwork(farmers: 10)
        let state = net.dir.sub("killed-renter")
        // A renter process (the bench in upload-only mode) uploading 64 MiB in 8 MiB segments.
        let renter = try ChildProcess.granary(["bench", "network", "--bootstrap", net.seedAddress, "--state", state, "--size", "64",
                                               "--segment", "8", "--parallel", "2", "--upload-only"] +
                                              (net.farmersJoinMarket ? [] : ["--farmer", net.farmers.map(\.tcp).joined(separator: ",")]),
                                              name: "renter", environment: LoopbackNetwork.environment)
        _ = try renter.waitForLine(timeout: 120) { $0.hasPrefix("durable segment") }
        renter.kill()  // SIGKILL, mid-upload of the next segments
        // What it said was durable, and what network.db holds right after the crash.
        let durable = renter.output.filter { $0.hasPrefix("durable segment") }.compactMap { line -> (SegmentID, Int, String)? in
            let parts = line.split(separator: " ")
            guard parts.count >= 5, let id = Hash256(hex: String(parts[2])),
                  let bytes = Int(parts[3].dropFirst("bytes=".count)) else { return nil }
            return (id, bytes, String(parts[4].dropFirst("blake2b=".count)))
        }
        #expect(!durable.isEmpty)
        let db = try NetworkDatabase(path: state + "/network.db")
        for seg in try db.segments(state: .durable) {
            let stored = Set(try db.pieces(of: seg.id).filter { $0.state == .stored }.map(\.index))
            #expect(stored.count >= seg.scheme.s, "segment durable with \(stored.count) pieces")
        }
        let interrupted = try db.segments(state: .uploading).map(\.id)
        // Restart with the same key: interrupted uploads are rolled back, durable ones read back.
        let identity = try NodeIdentity.load(from: state + "/identity.key", difficulty: LoopbackNetwork.powBits)
        let e = try await net.startRenter(state: state, identity: identity)
        for id in interrupted { #expect(try e.database.segment(id) == nil) }
        for (id, length, hash) in durable {
            let bytes = try await e.segments.read(id, offset: 0, length: length)
            #expect(Blake2b.hash256(bytes).hex == hash)
        }
        // Redoing an interrupted upload works.
        if let redo = interrupted.first {
            let d = pseudoRandomBytes(3 << 20, seed: 77)
            try await e.segments.put(redo, bytes: d)
            #expect(try await e.segments.read(redo, offset: 0, length: d.count) == d)
        }
        await e.stop()
        await net.stopBidders()
    }

    @Test(.timeLimit(.minutes(3)))
    func backgroundLoopAuditsPaysAndRepairsOnItsOwn() async throws {
        let net = try LoopbackNetwork(farmers: 10)
        let e = try await net.startRenter {
            $0.runBackgroundLoops = true
            $0.maintenanceInterval = 0.3
            $0.terms.auditInterval = 1
        }
        let d = pseudoRandomBytes(2 << 20, seed: 300)
        let id = SegmentID.random()
        try await e.segments.put(id, bytes: d)
        let bad = try e.database.pieces(of: id).first { $0.state == .stored }!.farmer
        // Audits run and pay by themselves.
        let deadline = Date().addingTimeInterval(60)
        while e.status().totalPaid == 0 && Date() < deadline { try await Task.sleep(nanoseconds: 200_000_000) }
        #expect(e.status().totalPaid > 0)
        _ = try net.corruptPieces(of: bad)
        while Date() < deadline {
            let repaired = try Self.healthy(e, id) >= 7
                && !(try e.database.pieces(of: id)).contains { $0.farmer == bad && $0.state == .stored }
            if e.farmers.isDisqualified(bad) && repaired { break }
            try await Task.sleep(nanoseconds: 200_000_000)
        }
        #expect(e.farmers.isDisqualified(bad))
        #expect(try Self.healthy(e, id) >= 7)
        #expect(try await e.segments.read(id, offset: 0, length: d.count) == d)
        await e.stop()
        await net.stopBidders()
    }

    @Test(.timeLimit(.minutes(3)))
    func contractsAreRenewedBeforeExpiryAndKeepTheirPieces() async throws {
        let net = try LoopbackNetwork(farmers: 8)
        let e = try await net.startRenter {
            $0.terms.duration = 600
            $0.renewWhenRemaining = 0.999   // due at once
        }
        let d = pseudoRandomBytes(1 << 20, seed: 400)
        let id = SegmentID.random()
        try await e.segments.put(id, bytes: d)
        let before = Dictionary(e.status().contracts.map { ($0.id, $0.end) }, uniquingKeysWith: { a, _ in a })
        try await Task.sleep(nanoseconds: 1_100_000_000)   // contract times are whole seconds
        await e.contracts.maintain()
        // Every contract held before is renewed; one formed meanwhile (the
        // uploader may still be placing) is not part of the question.
        let after = Dictionary(e.status().contracts.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for (contract, end) in before {
            let now = after[contract]
            #expect(now?.state == "active" && (now.map { $0.end > end } ?? false),
                    "contract \(contract) ended \(end), now \(now.map { "\($0.state), ends \($0.end)" } ?? "gone")")
        }
        #expect(await e.audits.auditAll().allSatisfy { $0.verdict == .pass })
        #expect(try await e.segments.read(id, offset: 0, length: d.count) == d)
        await e.stop()
        await net.stopBidders()
    }
}
