import Foundation
import GranaryTestSupport
import Testing

/// Compaction and garbage collection through a real mount on a local
/// segment folder: orphans and dead segments go, live data never does,
/// not even when the mount is killed in the middle of a pass, and
/// `restic forget --prune` really frees segment space.
@Suite(.serialized)
struct CompactionTests {
    func expectOK(_ r: Shell.Result, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status == 0, "\(what) failed (\(r.status)):\n\(r.output.suffix(4000))", sourceLocation: sourceLocation)
    }

    /// Segment files in the folder (not the temporaries of a put).
    func segmentFiles(_ m: MountFixture) -> Set<String> {
        Set(((try? FileManager.default.contentsOfDirectory(atPath: m.segments)) ?? []).filter { $0.count == 64 })
    }

    func segmentBytes(_ m: MountFixture) -> UInt64 {
        segmentFiles(m).reduce(0) { sum, name in
            let size = (try? FileManager.default.attributesOfItem(atPath: m.segments + "/" + name)[.size] as? NSNumber)?.uint64Value ?? 0
            return sum + size
        }
    }

    /// Restarts the mount with an empty clean cache: reads come from segments.
    func restartCold(_ m: MountFixture) throws {
        m.stop()
        Shell.run("rm -rf '\(m.state)/cache/clean'/* '\(m.state)/cache/slab-clean'")
        try m.start()
    }

    @Test(.timeLimit(.minutes(3)))
    func orphanAndDeadSegmentsAreDeletedLiveOnesNever() throws {
        let bin = try GranaryBinary.require()
        let m = try MountFixture(uploadIdle: 30, extraArguments: ["--compact-rate", "0", "--compact-interval", "0"])
        defer { m.stop() }
        // Two files in two segments (a flush between them).
        expectOK(Shell.run("""
            set -e; cd '\(m.dir.path)'
            head -c 6000000 /dev/urandom > a.ref; head -c 3000000 /dev/urandom > b.ref
            cp a.ref '\(m.path("a"))' && '\(bin)' flush --state '\(m.state)'
            cp b.ref '\(m.path("b"))' && '\(bin)' flush --state '\(m.state)'
            """), "write and flush")
        let live = segmentFiles(m)
        #expect(live.count == 2, "two flushes, two segments: \(live)")

        // What a crash between upload and commit leaves: a segment meta.db does not know.
        let orphan = String(repeating: "ab", count: 32)
        expectOK(Shell.run("head -c 1000000 /dev/urandom > '\(m.segments)/\(orphan)'"), "plant orphan")
        let first = CompactOutput(Shell.run("'\(bin)' compact --state '\(m.state)' --json", timeout: 60))
        #expect(first.ok, "compact: \(first.raw)")
        #expect(first.report?["orphansDeleted"] == 1 && first.report?["deadSegmentsDeleted"] == 0, "\(first.raw)")
        #expect(segmentFiles(m) == live, "the orphan goes, both live segments stay")

        // b's segment dies with b and is deleted; a's stays untouched.
        expectOK(Shell.run("rm '\(m.path("b"))'"), "rm b")
        let second = CompactOutput(Shell.run("'\(bin)' compact --state '\(m.state)' --json", timeout: 60))
        #expect(second.ok && second.report?["deadSegmentsDeleted"] == 1 && second.report?["segmentsRewritten"] == 0, "\(second.raw)")
        let left = segmentFiles(m)
        #expect(left.count == 1 && left.isSubset(of: live), "\(left)")
        #expect((second.status?["segments"] ?? -1) == 1 && (second.status?["reclaimableBytes"] ?? -1) == 0, "\(second.raw)")

        try restartCold(m)
        expectOK(Shell.run("cmp '\(m.dir.path)/a.ref' '\(m.path("a"))' && test ! -e '\(m.path("b"))'"), "a reads back cold")
    }

    /// A pass killed at some moment (while it reads, while it waits for its
    /// byte budget, about when it stores and commits) loses nothing; the
    /// next pass finishes the job and collects what the killed one left.
    @Test(.timeLimit(.minutes(3)))
    func killDuringCompactionLosesNothing() throws {
        let bin = try GranaryBinary.require()
        let m = try MountFixture(uploadIdle: 30, extraArguments: ["--compact-rate", "4M", "--compact-interval", "0"])
        defer { m.stop() }
        expectOK(Shell.run("""
            set -e; cd '\(m.dir.path)'
            for i in 0 1 2 3 4 5 6 7; do head -c 4194304 /dev/urandom > f$i.ref; cp f$i.ref '\(m.mountpoint)'/f$i; done
            '\(bin)' flush --state '\(m.state)'
            rm '\(m.mountpoint)'/f2 '\(m.mountpoint)'/f3 '\(m.mountpoint)'/f4 '\(m.mountpoint)'/f5 '\(m.mountpoint)'/f6 '\(m.mountpoint)'/f7
            """), "write, flush, delete three quarters")
        // Copying 8 MiB at 4 MiB/s takes about 2 s of reads, 2 s of budget
        // for the write, then the put and the commit; kill at several points.
        for delay in [1.0, 3.5, 4.2] {
            let pass = Thread { Shell.run("'\(bin)' compact --state '\(m.state)'", timeout: 60) }
            pass.start()
            Thread.sleep(forTimeInterval: delay)
            m.crash()
            m.forceUnmount()
            Shell.run("rm -rf '\(m.state)/cache/clean'/* '\(m.state)/cache/slab-clean'")
            try m.start()
            expectOK(Shell.run("cd '\(m.dir.path)' && cmp f0.ref '\(m.path("f0"))' && cmp f1.ref '\(m.path("f1"))'"), "live files after a kill at \(delay) s")
        }
        let after = CompactOutput(Shell.run("'\(bin)' compact --state '\(m.state)' --json", timeout: 60))
        #expect(after.ok, "\(after.raw)")
        // Every segment file is one meta.db knows: orphans of the kill are gone.
        #expect(after.status?["segments"] == segmentFiles(m).count, "\(after.raw) vs \(segmentFiles(m))")
        #expect(segmentBytes(m) < 10 << 20, "about 8 MiB live remain stored, not 32: \(segmentBytes(m))")
        try restartCold(m)
        expectOK(Shell.run("cd '\(m.dir.path)' && cmp f0.ref '\(m.path("f0"))' && cmp f1.ref '\(m.path("f1"))'"), "live files cold after compaction")
    }

    @Test(.timeLimit(.minutes(1)))
    func badCompactionOptionsAndNoMountFailClearly() throws {
        let bin = try GranaryBinary.require()
        let dir = TemporaryDirectory("granary-gc-bad")
        let base = "'\(bin)' mount '\(dir.path)/mnt' --state '\(dir.path)/state' --local-segments '\(dir.path)/seg'"
        let threshold = Shell.run(base + " --compact-threshold 1.5", timeout: 30)
        #expect(threshold.status != 0 && threshold.output.contains("--compact-threshold"), "\(threshold.output)")
        let rate = Shell.run(base + " --compact-rate fast", timeout: 30)
        #expect(rate.status != 0 && rate.output.contains("--compact-rate"), "\(rate.output)")
        let none = Shell.run("'\(bin)' compact --state '\(dir.path)/nothing'", timeout: 30)
        #expect(none.status != 0 && none.output.contains("no mount is running"), "\(none.output)")
    }

    @Test(.timeLimit(.minutes(4)))
    func resticForgetPruneFreesSegmentSpace() throws {
        let bin = try GranaryBinary.require()
        guard Shell.run("command -v restic").status == 0 else { throw TestSupportError.missing("restic is not installed") }
        let m = try MountFixture(uploadIdle: 30, extraArguments: ["--compact-rate", "0", "--compact-interval", "0"])
        defer { m.stop() }
        let src = m.dir.sub("src"), repo = m.path("repo")
        let restic = "RESTIC_PASSWORD=granary-test restic --repo '\(repo)' --no-cache -q"
        expectOK(Shell.run("""
            set -e
            \(restic) init
            for i in 1 2 3 4 5 6; do head -c 4000000 /dev/urandom > '\(src)'/old$i; done
            \(restic) backup '\(src)'
            rm '\(src)'/old*; for i in 1 2; do head -c 4000000 /dev/urandom > '\(src)'/new$i; done
            \(restic) backup '\(src)'
            '\(bin)' flush --state '\(m.state)'
            """, timeout: 180), "restic init and two backups")
        let before = segmentBytes(m)
        expectOK(Shell.run("\(restic) forget --keep-last 1 --prune && '\(bin)' flush --state '\(m.state)'", timeout: 120), "forget --prune")
        let compact = CompactOutput(Shell.run("'\(bin)' compact --state '\(m.state)' --json", timeout: 120))
        #expect(compact.ok, "\(compact.raw)")
        let after = segmentBytes(m)
        // 24 MB of the first backup are no longer referenced; about 8 MB remain.
        #expect(after < before / 2, "segments hold \(after) bytes after prune and compaction, \(before) before")
        try restartCold(m)
        expectOK(Shell.run("\(restic) check --read-data", timeout: 120), "restic check --read-data after compaction, cold")
    }
}

/// `granary compact --json`'s (or `status --json`'s) answer: numeric fields
/// of its report and status, and the network's extra facts.
struct CompactOutput {
    let raw: String
    var ok = false
    var report: [String: Int]?
    var status: [String: Int]?
    var extra: [String: String]?

    init(_ r: Shell.Result, requireDone: Bool = true) {
        raw = "\(r.status): \(r.output.suffix(3000))"
        guard let line = r.output.split(separator: "\n").last(where: { $0.hasPrefix("{") }),
              let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return }
        ok = r.status == 0 && (!requireDone || (object["done"] as? NSNumber)?.boolValue == true)
        func numbers(_ any: Any?) -> [String: Int]? {
            (any as? [String: Any])?.compactMapValues { ($0 as? NSNumber)?.intValue }
        }
        report = numbers(object["compaction"])
        status = numbers(object["status"])
        extra = object["extra"] as? [String: String]
    }
}
