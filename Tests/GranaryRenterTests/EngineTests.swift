import Foundation
import GranaryCore
import GranaryRenter
import GranaryTestSupport
import Testing

/// The engine's decisions against in-process farmers (see InProcessFarmers).
@Suite(.serialized, .timeLimit(.minutes(2)))
struct EngineTests {
    static func engine(_ dir: TemporaryDirectory, _ farmers: InProcessFarmers, clock: RenterClock = SystemClock(),
                       tweak: (inout RenterConfiguration) -> Void = { _ in }) async throws -> RenterEngine {
        var config = RenterConfiguration()
        config.runBackgroundLoops = false
        config.transferTimeoutBase = 1
        // In-process farmers have no TCP counters for a stall to show in:
        // a hung one is caught by the whole-transfer deadline alone.
        config.minimumTransferRate = 1_048_576
        config.requestTimeout = 1
        config.offlineGrace = 1
        config.repairBytesPerSecond = 1e12
        tweak(&config)
        let e = try RenterEngine(stateDirectory: dir.path, link: farmers, contracts: farmers, configuration: config,
                                 clock: clock, random: SeededRandomSource(seed: 7))
        try await e.start(contractTimeout: 5)
        return e
    }

    static func randomBytes(_ n: Int, seed: UInt64) -> [UInt8] {
        let r = SeededRandomSource(seed: seed)
        return (0..<n).map { _ in UInt8(truncatingIfNeeded: r.next(below: 256)) }
    }

    @Test func roundTripExactlySPiecesAndRanges() async throws {
        let dir = TemporaryDirectory()
        let farmers = InProcessFarmers(count: 10)
        let e = try await Self.engine(dir, farmers)
        let data = Self.randomBytes(1_000_003, seed: 1)
        let id = SegmentID.random()
        try await e.segments.put(id, bytes: data)
        let pieces = try e.database.pieces(of: id)
        #expect(pieces.filter { $0.state == .stored }.count == 7)
        #expect(Set(pieces.map(\.farmer)).count == pieces.count)
        #expect(try await e.segments.read(id, offset: 0, length: data.count) == data)
        for (o, l) in [(0, 1), (12345, 4096), (250_000, 300_000), (999_000, 1003), (data.count, 0)] {
            #expect(try await e.segments.read(id, offset: o, length: l) == Array(data[o..<(o + l)]))
        }
        await #expect(throws: SegmentStoreError.self) { try await e.segments.read(id, offset: data.count, length: 1) }
        await #expect(throws: SegmentStoreError.self) { try await e.segments.read(.random(), offset: 0, length: 1) }
        #expect(try await e.segments.list() == [id])
        // Three holders gone: still readable (decoding).
        for p in pieces.prefix(3) { farmers.set(p.farmer, .offline) }
        #expect(try await e.segments.read(id, offset: 0, length: data.count) == data)
        #expect(try await e.segments.read(id, offset: 10, length: 100) == Array(data[10..<110]))
        try await e.segments.delete(id)
        #expect(try await e.segments.list().isEmpty)
        #expect(try e.database.pieces(of: id).filter { $0.state == .stored }.isEmpty)
        await e.stop()
    }

    @Test func healthyUploadSendsOnlySPiecesAndSlowOneRacesAllN() async throws {
        let dir = TemporaryDirectory(), dir2 = TemporaryDirectory()
        let farmers = InProcessFarmers(count: 10)
        let e = try await Self.engine(dir, farmers)
        let data = Self.randomBytes(200_000, seed: 5)
        let id = SegmentID.random()
        try await e.segments.put(id, bytes: data)
        // The n − s held-back pieces were never sent.
        #expect(farmers.storeCount == 7)
        #expect(try e.database.pieces(of: id).filter { $0.state == .stored }.count == 7)
        await e.stop()

        // Every farmer slow: the hedge delay passes and all n race; s are kept.
        let slow = InProcessFarmers(count: 10)
        for c in slow.contacts { slow.set(c.id, .slow) }
        let e2 = try await Self.engine(dir2, slow) { $0.uploadHedgeBase = 0.01; $0.uploadHedgeRate = 1e12 }
        let id2 = SegmentID.random()
        try await e2.segments.put(id2, bytes: data)
        #expect(slow.storeCount == 8)
        #expect(try e2.database.pieces(of: id2).filter { $0.state == .stored }.count == 7)
        #expect(try await e2.segments.read(id2, offset: 0, length: data.count) == data)
        await e2.stop()
    }

    @Test func readAcrossDataPiecesAsksOnlyForItsBytesAndDecodesAMissingPart() async throws {
        let dir = TemporaryDirectory()
        let farmers = InProcessFarmers(count: 10)
        let e = try await Self.engine(dir, farmers)
        let data = Self.randomBytes(1_000_003, seed: 6)
        let id = SegmentID.random()
        try await e.segments.put(id, bytes: data)
        let pieceSize = RedundancyScheme.embeddedDefault.pieceSize(segmentLength: data.count)
        let (offset, length) = (pieceSize - 1500, 3000)
        let before = farmers.readBytes
        #expect(try await e.segments.read(id, offset: offset, length: length) == Array(data[offset..<(offset + length)]))
        #expect(farmers.readBytes - before == length)
        // The second data piece's farmer gone: its part is decoded from k pieces, the first part still read directly.
        let second = try #require(try e.database.pieces(of: id).first { $0.index == 1 && $0.state == .stored })
        farmers.set(second.farmer, .offline)
        #expect(try await e.segments.read(id, offset: offset, length: length) == Array(data[offset..<(offset + length)]))
        // Across three pieces, with one missing.
        let (o2, l2) = (pieceSize / 2, 2 * pieceSize)
        #expect(try await e.segments.read(id, offset: o2, length: l2) == Array(data[o2..<(o2 + l2)]))
        await e.stop()
    }

    @Test func hangingFarmerDoesNotStallUpload() async throws {
        let dir = TemporaryDirectory()
        let farmers = InProcessFarmers(count: 10)
        for c in farmers.contacts.prefix(2) { farmers.set(c.id, .hang) }
        let e = try await Self.engine(dir, farmers)
        let data = Self.randomBytes(300_000, seed: 2)
        let id = SegmentID.random()
        let started = Date()
        try await e.segments.put(id, bytes: data)
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(try await e.segments.read(id, offset: 0, length: data.count) == data)
        await e.stop()
    }

    @Test func corruptingFarmerFailsAuditsIsDisqualifiedAndRepairedAround() async throws {
        let dir = TemporaryDirectory()
        let farmers = InProcessFarmers(count: 10)
        let e = try await Self.engine(dir, farmers)
        var ids: [SegmentID] = []
        var datas: [[UInt8]] = []
        for i in 0..<4 {
            let d = Self.randomBytes(200_000, seed: UInt64(10 + i))
            let id = SegmentID.random()
            try await e.segments.put(id, bytes: d)
            ids.append(id); datas.append(d)
        }
        let bad = try e.database.pieces(of: ids[0])[0].farmer
        farmers.set(bad, .corrupt)
        let outcomes = await e.audits.auditAll()
        let badOutcome = try #require(outcomes.first { $0.farmer == bad })
        #expect(badOutcome.verdict == .fail)
        #expect(badOutcome.paid == 0)
        #expect(outcomes.filter { $0.farmer != bad }.allSatisfy { $0.verdict == .pass && $0.paid == 10 })
        #expect(e.farmers.isDisqualified(bad))
        // Reads avoid it and still verify.
        for (id, d) in zip(ids, datas) { #expect(try await e.segments.read(id, offset: 0, length: d.count) == d) }
        let report = await e.repairer.runPass()
        #expect(report.failures.isEmpty)
        for id in ids {
            let healthy = try e.database.pieces(of: id).filter { $0.state == .stored && !e.farmers.isDisqualified($0.farmer) }
            #expect(Set(healthy.map(\.index)).count >= 7)
            #expect(!healthy.contains { $0.farmer == bad })
        }
        let status = e.status()
        #expect(status.totalPaid > 0)
        #expect(status.farmers.first { $0.id == bad.hex }?.disqualified == true)
        await e.stop()
    }

    @Test func killThreeHoldersReadRepairKillThreeMore() async throws {
        let dir = TemporaryDirectory()
        let farmers = InProcessFarmers(count: 10)
        let e = try await Self.engine(dir, farmers)
        let data = Self.randomBytes(500_000, seed: 3)
        let id = SegmentID.random()
        try await e.segments.put(id, bytes: data)
        let holders = try e.database.pieces(of: id).filter { $0.state == .stored }.map(\.farmer)
        for f in holders.prefix(3) { farmers.set(f, .offline) }
        #expect(try await e.segments.read(id, offset: 0, length: data.count) == data)
        await e.audits.auditAll()
        try await Task.sleep(nanoseconds: 1_200_000_000)  // offline grace is 1 s here
        await e.audits.auditAll()
        let report = await e.repairer.runPass()
        #expect(report.segmentsRepaired == 1)
        let healthy = try e.database.pieces(of: id).filter { $0.state == .stored && e.farmers.isHealthy($0.farmer) }
        #expect(healthy.count >= 7)
        for p in healthy.prefix(3) { farmers.set(p.farmer, .offline) }
        #expect(try await e.segments.read(id, offset: 0, length: data.count) == data)
        await e.stop()
    }

    /// With too few farmers answering, an upload fails before coding and
    /// its error says why, so `granary status` can tell a person whether to
    /// wait for the pool, bring farmers back or buy more space.
    @Test func tooFewReachableFarmersSayWhyUploadsWait() async throws {
        let dir = TemporaryDirectory()
        let farmers = InProcessFarmers(count: 10)
        let e = try await Self.engine(dir, farmers)
        for c in farmers.contacts.prefix(4) { farmers.set(c.id, .offline) }
        // The first upload finds out who is down; the next one knows.
        await #expect(throws: SegmentStoreError.self) { try await e.segments.put(.random(), bytes: Self.randomBytes(100_000, seed: 9)) }
        do {
            try await e.segments.put(.random(), bytes: Self.randomBytes(100_000, seed: 10))
            Issue.record("an upload to 6 of 10 farmers with 7 needed succeeded")
        } catch {
            let text = "\(error)"
            #expect(text.contains("6 farmers can take a piece") && text.contains("7 are needed"), "\(text)")
            #expect(text.contains("of 10 farmers under contract, 4 recently failed to answer"), "\(text)")
        }
        await e.stop()
    }

    @Test func interruptedUploadIsRolledBackOnRestart() async throws {
        let dir = TemporaryDirectory()
        let farmers = InProcessFarmers(count: 10)
        let db = try NetworkDatabase(path: dir.path + "/network.db")
        let id = SegmentID.random()
        try db.beginUpload(id, length: 100, scheme: .embeddedDefault)
        #expect(try db.markDurable(id, required: 7) == false)
        let e = try await Self.engine(dir, farmers)
        #expect(try e.database.segment(id) == nil)
        await #expect(throws: SegmentStoreError.self) { try await e.segments.read(id, offset: 0, length: 1) }
        await e.stop()
    }

    /// A read whose widened requests also reach hanging farmers adds a
    /// spare at every further hedge delay until k pieces answer, instead
    /// of waiting out the transfer timeout (here ten minutes).
    @Test func readsAddSparesUntilKPiecesAnswer() async throws {
        let dir = TemporaryDirectory()
        let farmers = InProcessFarmers(count: 10)
        let e = try await Self.engine(dir, farmers) {
            $0.readHedgeBase = 0.05; $0.readHedgeRate = 1e12; $0.transferTimeoutBase = 600
        }
        let data = Self.randomBytes(400_000, seed: 9)
        let id = SegmentID.random()
        try await e.segments.put(id, bytes: data)
        let stored = try e.database.pieces(of: id).filter { $0.state == .stored }
        // The data piece read from, and the two best ranked of the others:
        // the widened read asks k + 1 = 5 pieces, three of them hanging.
        let others = stored.filter { $0.index != 0 }.sorted { e.farmers.rank($0.farmer) > e.farmers.rank($1.farmer) }
        let hanging = Set([stored.first { $0.index == 0 }!.farmer] + others.prefix(2).map(\.farmer))
        for f in hanging { farmers.set(f, .hang) }
        #expect(try await e.segments.read(id, offset: 10, length: 1000) == Array(data[10..<1010]))
        #expect(hanging.allSatisfy { e.farmers.isSlow($0) }, "the hanging farmers are known as slow")
        await e.stop()
    }

    /// Every farmer slow alike (a slow downlink): once a read has shown
    /// how long reads take, the next ones wait for their one data piece
    /// instead of widening to k + 1 pieces after the fixed hedge delay.
    @Test func readsOnAUniformlySlowNetworkDoNotWiden() async throws {
        let dir = TemporaryDirectory()
        let farmers = InProcessFarmers(count: 10)
        let e = try await Self.engine(dir, farmers) {
            $0.readHedgeBase = 0.05; $0.readHedgeRate = 1e12; $0.transferTimeoutBase = 600
        }
        let data = Self.randomBytes(4_000_000, seed: 10)
        let id = SegmentID.random()
        try await e.segments.put(id, bytes: data)
        for c in farmers.contacts { farmers.set(c.id, .slow) }  // 0.3 s a request
        let range = 10..<300_010
        #expect(try await e.segments.read(id, offset: range.lowerBound, length: range.count) == Array(data[range]))
        #expect(farmers.readBytes > 2 * range.count, "the first read, with nothing measured yet, widens after 50 ms")
        for _ in 1...3 {
            let before = farmers.readBytes
            #expect(try await e.segments.read(id, offset: range.lowerBound, length: range.count) == Array(data[range]))
            #expect(farmers.readBytes - before < 2 * range.count, "a read asks its data piece only")
        }
        await e.stop()
    }

    /// Farmers too slow for the transfer deadline, with no others to place
    /// on (8 farmers, 7 pieces needed, 3 slow): the next upload gives them
    /// twice as long, and it goes through instead of failing forever.
    @Test func slowLinksGetLongerDeadlinesOnTheNextUpload() async throws {
        let dir = TemporaryDirectory()
        let farmers = InProcessFarmers(count: 8)
        let clock = ManualClock()
        let e = try await Self.engine(dir, farmers, clock: clock) {
            $0.transferTimeoutBase = 0.2; $0.minimumTransferRate = 1e12; $0.uploadHedgeBase = 0.01; $0.uploadHedgeRate = 1e12
        }
        for c in farmers.contacts.prefix(3) { farmers.set(c.id, .slow) }  // 0.3 s a request
        let data = Self.randomBytes(100_000, seed: 11)
        var stored: SegmentID?
        for _ in 1...3 where stored == nil {
            clock.advance(by: 60)  // past the pause after a failed contact
            let id = SegmentID.random()
            if (try? await e.segments.put(id, bytes: data)) != nil { stored = id }
        }
        let id = try #require(stored, "an upload went through within three tries")
        #expect(try await e.segments.read(id, offset: 0, length: data.count) == data)
        await e.stop()
    }

    /// Maintenance rounds started together (the start-up fill, the
    /// connector, the loop) share one market round: no farmer gets two
    /// contracts for the same missing place.
    @Test func concurrentMaintenanceRoundsFormOneContractPerFarmer() async throws {
        let dir = TemporaryDirectory()
        let farmers = InProcessFarmers(count: 10)
        let late = farmers.contacts.suffix(3).map(\.id)
        for id in late { farmers.set(id, .offline) }
        let e = try await Self.engine(dir, farmers)
        #expect(try e.contracts.liveContracts().count == 7)
        for id in late { farmers.set(id, .normal) }
        farmers.roundDuration = .milliseconds(200)
        async let a = e.contracts.maintain()
        async let b = e.contracts.maintain()
        async let c = e.contracts.maintain()
        _ = await (a, b, c)
        let perFarmer = Dictionary(grouping: try e.contracts.liveContracts(), by: \.record.farmer.id)
        #expect(perFarmer.count == 10, "every farmer has a contract")
        #expect(perFarmer.values.allSatisfy { $0.count == 1 }, "one contract each: \(perFarmer.values.map(\.count))")
        await e.stop()
    }
}

extension EngineTests {
    @Test func auditsFollowTheirJitteredIntervalOnTheInjectedClock() async throws {
        let dir = TemporaryDirectory()
        let farmers = InProcessFarmers(count: 10)
        let clock = ManualClock()
        let e = try await Self.engine(dir, farmers, clock: clock) { $0.terms.auditInterval = 100 }
        try await e.segments.put(.random(), bytes: Self.randomBytes(100_000, seed: 4))
        #expect(await e.audits.runDue().isEmpty)   // first sight: scheduled, not due
        clock.advance(by: 70)
        #expect(await e.audits.runDue().isEmpty)   // jitter keeps it within 75...125 s
        clock.advance(by: 60)
        let due = await e.audits.runDue()
        #expect(due.count == 7)                      // the contracts holding pieces
        #expect(due.allSatisfy { $0.verdict == .pass && $0.paid == 10 })
        #expect(await e.audits.runDue().isEmpty)   // rescheduled
        let recorded = try e.database.audits()
        #expect(recorded.count == 7 && recorded.allSatisfy { $0.outcome == "pass" })
        for a in due { #expect(farmers.paidTotal(a.contract) == 10) }
        await e.stop()
    }

    @Test func offlineFarmerLosesUptimeAndSlowFarmerIsReadLast() async throws {
        let dir = TemporaryDirectory()
        let farmers = InProcessFarmers(count: 10)
        let e = try await Self.engine(dir, farmers) { $0.readHedgeBase = 5 }
        let d = Self.randomBytes(400_000, seed: 6)
        let id = SegmentID.random()
        try await e.segments.put(id, bytes: d)
        let pieces = try e.database.pieces(of: id).filter { $0.state == .stored }.sorted { $0.index < $1.index }
        // Offline: audits time out, uptime falls, no pay.
        let gone = pieces[5].farmer
        farmers.set(gone, .offline)
        let outcomes = await e.audits.auditAll()
        #expect(outcomes.first { $0.farmer == gone }?.verdict == .timeout)
        #expect(outcomes.first { $0.farmer == gone }?.paid == 0)
        #expect(e.farmers.farmer(gone)!.reputation.uptimeScore < 1)
        #expect(e.farmers.rank(gone) < e.farmers.rank(pieces[6].farmer))
        // Status says it is unreachable before the grace makes it offline.
        let row = e.status().farmers.first { $0.id == gone.hex }
        #expect(row?.unreachableSeconds != nil)
        #expect(e.status().farmers.first { $0.id == pieces[6].farmer.hex }?.unreachableSeconds == nil)
        farmers.set(gone, .normal)
        _ = await e.audits.auditAll()
        #expect(e.status().farmers.first { $0.id == gone.hex }?.unreachableSeconds == nil)
        // Slow: its latency grows, its rank falls, and reads that can avoid it do.
        let slow = pieces[0].farmer
        farmers.set(slow, .slow)
        _ = await e.audits.auditAll()
        #expect(e.farmers.rank(slow) < e.farmers.rank(pieces[1].farmer))
        // Piece 0 is unhealthy-free but slow: a range inside it is still read from it
        // (the data piece), while a read that must decode picks the k fastest.
        farmers.set(pieces[1].farmer, .offline)
        let before = farmers.readCount(slow)
        #expect(try await e.segments.read(id, offset: 100_000, length: 10) == Array(d[100_000..<100_010]))
        #expect(farmers.readCount(slow) == before)
        await e.stop()
    }
}

@Suite struct ReputationTests {
    @Test func betaWithForgetting() {
        var r = Reputation()
        #expect(r.auditScore == 1)
        for _ in 0..<50 { r.recordAudit(passed: true) }
        #expect(r.alpha > 10 && r.alpha < 20)
        r.recordAudit(passed: false)
        #expect(!r.shouldDisqualify)
        for _ in 0..<15 { r.recordAudit(passed: false) }
        #expect(r.shouldDisqualify)
        var fresh = Reputation()
        fresh.recordAudit(passed: false)
        #expect(fresh.shouldDisqualify)
        var slow = Reputation(), fast = Reputation()
        slow.recordLatency(milliseconds: 2000); fast.recordLatency(milliseconds: 5)
        #expect(fast.rank > slow.rank)
    }
}
