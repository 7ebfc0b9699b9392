import ArgumentParser
import Foundation

/// `granary bench mount`: the mount against a folder on the same local
/// disk, with the uploader running, in one run.
struct MountBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Sequential write/read, cold read, small files (copy and delete) and metadata rates (create, stat, chmod, unlink) of the mount against the local disk.",
        discussion: "Runs as root (drops the kernel's caches). Segments go to a local folder (--local-segments) for now.")

    @Flag(help: "Print one JSON object.") var json = false
    @Option(name: .customLong("size-mib"), help: "Size of the sequential file in MiB.") var sizeMiB = 1024
    @Option(help: "Number of small files (1-64 KiB) to copy.") var files = 2000
    @Option(name: .customLong("work-dir"), help: "Folder on the disk to measure (a temporary folder is made in it).") var workDir: String = NSTemporaryDirectory()
    @Option(name: .customLong("local-segments"), help: "Segment folder (default: inside the work folder).") var localSegments: String?
    @Flag(name: .customLong("writeback-cache"), help: .hidden) var writebackCache = false
    @Option(help: "Rounds of each mount/local pair, alternated; figures are medians.") var rounds = 5

    func run() throws {
        let base = (workDir as NSString).appendingPathComponent("granary-bench-\(getpid())")
        let mnt = base + "/mnt", local = base + "/local", state = base + "/state", segs = localSegments ?? base + "/segments"
        for d in [mnt, local] { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
        defer { try? FileManager.default.removeItem(atPath: base) }
        var mount = try BenchMountProcess(mountpoint: mnt, state: state, segments: segs, writeback: writebackCache)
        defer { mount.stop() }
        var report = BenchReport()
        let size = sizeMiB << 20

        // The local disk of these shared VMs swings 2-3x within a minute, so
        // each goal is measured as `rounds` mount/local pairs, alternated:
        // a figure is the median of its samples, a goal's ratio the median of
        // the pairs' ratios (each pair close in time), with its range beside it.
        let rounds = max(1, self.rounds)
        let write = try Self.paired(rounds, mount: { try Self.sequentialWrite(mnt + "/seq", bytes: size) },
                                    local: { try Self.sequentialWrite(local + "/seq", bytes: size) })
        report.add("seq_write_mbps", write.mount)
        report.add("local_write_mbps", write.local)
        let read = try Self.paired(rounds, mount: { Self.dropCaches(); return try Self.sequentialRead(mnt + "/seq") },
                                   local: { Self.dropCaches(); return try Self.sequentialRead(local + "/seq") })
        report.add("warm_read_mbps", read.mount)
        report.add("local_read_mbps", read.local)
        _ = Self.shell("'\(BenchMountProcess.binary)' flush --state '\(state)' >/dev/null 2>&1")
        mount.stop()
        _ = Self.shell("rm -rf '\(state)/cache'")
        mount = try BenchMountProcess(mountpoint: mnt, state: state, segments: segs, writeback: writebackCache)
        Self.dropCaches()
        report.add("cold_read_mbps", try Self.sequentialRead(mnt + "/seq"))

        let src = base + "/small-src"
        try Self.makeSmallFiles(src, count: files)
        // Both copies read the source cold: the second one would otherwise
        // find it in the page cache the first one filled.
        var round = 0
        let small = Self.paired(rounds, mount: {
            round += 1
            Self.dropCaches()
            return Self.time { _ = Self.shell("cp -r '\(src)' '\(mnt)/small\(round)' && sync") }
        }, local: {
            Self.dropCaches()
            return Self.time { _ = Self.shell("cp -r '\(src)' '\(local)/small\(round)' && sync") }
        })
        report.add("small_files_s", small.mount)
        report.add("local_small_files_s", small.local)
        // The uploader seals the small files 2 s after they were written:
        // let it finish, so the metadata rates are not measured beside it.
        _ = Self.shell("'\(BenchMountProcess.binary)' flush --state '\(state)' >/dev/null 2>&1")
        let n = 2000
        try FileManager.default.createDirectory(atPath: mnt + "/meta", withIntermediateDirectories: true)
        let names = (0..<n).map { "\(mnt)/meta/f\($0)" }
        report.add("creates_per_s", Double(n) / Self.time { for p in names { close(open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)) } })
        var st = stat()
        report.add("stats_per_s", Double(n) / Self.time { for p in names { stat(p, &st) } })
        // What cp -a, rsync -a and tar x do to every file they write.
        report.add("chmods_per_s", Double(n) / Self.time { for p in names { chmod(p, 0o600) } })
        report.add("unlinks_per_s", Double(n) / Self.time { for p in names { unlink(p) } })
        // The copies again, deleted (what rsync --delete and a backup
        // tool's prune do): files with data, uploaded by the flush above.
        var removed = 0
        let rm = Self.paired(rounds, mount: {
            removed += 1
            return Self.time { _ = Self.shell("rm -rf '\(mnt)/small\(removed)'") }
        }, local: {
            Self.time { _ = Self.shell("rm -rf '\(local)/small\(removed)'") }
        })
        report.add("rm_small_files_s", rm.mount)
        report.add("local_rm_small_files_s", rm.local)
        // The goals as ratios of this run: >= 0.8, >= 0.6, <= 2.
        for (name, pair) in [("seq_write_ratio", write), ("warm_read_ratio", read), ("small_files_ratio", small)] {
            report.add(name, pair.ratio)
            report.add(name + "_min", pair.ratios.min() ?? 0)
            report.add(name + "_max", pair.ratios.max() ?? 0)
        }
        print(report.render(json: json))
    }

    /// A goal's samples: `rounds` mount/local pairs, alternated.
    struct Paired {
        var mounts: [Double] = [], locals: [Double] = [], ratios: [Double] = []
        var mount: Double { Self.median(mounts) }
        var local: Double { Self.median(locals) }
        /// Median of the pairs' mount/local ratios.
        var ratio: Double { Self.median(ratios) }
        static func median(_ v: [Double]) -> Double {
            let s = v.sorted()
            return s.isEmpty ? 0 : s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        }
    }

    static func paired(_ rounds: Int, mount: () throws -> Double, local: () throws -> Double) rethrows -> Paired {
        var p = Paired()
        for _ in 0..<rounds {
            let m = try mount(), l = try local()
            p.mounts.append(m); p.locals.append(l)
            p.ratios.append(l > 0 ? m / l : 0)
        }
        return p
    }

    static func time(_ body: () throws -> Void) rethrows -> Double {
        let t0 = BenchClock.now()
        try body()
        return BenchClock.now() - t0
    }

    @discardableResult
    static func shell(_ cmd: String) -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", cmd]
        try? p.run()
        p.waitUntilExit()
        return p.terminationStatus
    }

    static func dropCaches() {
        sync()
        if let fd = Optional(open("/proc/sys/vm/drop_caches", O_WRONLY)), fd >= 0 { _ = write(fd, "3\n", 2); close(fd) }
    }

    /// Writes `bytes` of incompressible, non-repeating data in 1 MiB writes,
    /// then fsyncs (as dd bs=1M conv=fsync); returns MB/s.
    static func sequentialWrite(_ path: String, bytes: Int) throws -> Double {
        let block = 1 << 20
        let pool = 64 << 20
        let buf = UnsafeMutableRawPointer.allocate(byteCount: pool, alignment: 4096)
        defer { buf.deallocate() }
        let urandom = open("/dev/urandom", O_RDONLY)
        var filled = 0
        while filled < pool { let n = read(urandom, buf + filled, pool - filled); if n <= 0 { break }; filled += n }
        close(urandom)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ValidationError("cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let t = try time {
            var off = 0
            var counter: UInt64 = 0
            while off < bytes {
                let src = buf + (off % pool)
                counter += 1
                src.storeBytes(of: counter, as: UInt64.self)  // every block unique: no dedupe
                var done = 0
                while done < block {
                    let n = write(fd, src + done, block - done)
                    if n <= 0 { throw ValidationError("write to \(path) failed: \(String(cString: strerror(errno)))") }
                    done += n
                }
                off += block
            }
            guard fsync(fd) == 0 else { throw ValidationError("fsync of \(path) failed") }
        }
        return Double(bytes) / t / 1e6
    }

    static func sequentialRead(_ path: String) throws -> Double {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ValidationError("cannot open \(path)") }
        defer { close(fd) }
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buf.deallocate() }
        var total = 0
        let t = try time {
            while true {
                let n = read(fd, buf, 1 << 20)
                if n < 0 { throw ValidationError("read of \(path) failed: \(String(cString: strerror(errno)))") }
                if n == 0 { break }
                total += n
            }
        }
        return Double(total) / t / 1e6
    }

    static func makeSmallFiles(_ dir: String, count: Int) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var rng = SystemRandomNumberGenerator()
        let buf = [UInt8]((0..<(64 << 10)).map { _ in UInt8.random(in: 0...255, using: &rng) })
        for i in 0..<count {
            let sub = dir + "/d\(i / 100)"
            if i % 100 == 0 { try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true) }
            let size = Int.random(in: (1 << 10)...(64 << 10))
            var data = Array(buf[0..<size])
            withUnsafeBytes(of: i) { b in for (k, x) in b.enumerated() { data[k] = x } }
            _ = FileManager.default.createFile(atPath: sub + "/f\(i)", contents: Data(data))
        }
    }
}

/// A `granary mount --local-segments` child of the benchmark.
struct BenchMountProcess {
    static var binary: String { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0] }
    let process = Process()
    let mountpoint: String

    init(mountpoint: String, state: String, segments: String, writeback: Bool) throws {
        self.mountpoint = mountpoint
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["mount", mountpoint, "--state", state, "--local-segments", segments, "--plain-key"] + (writeback ? ["--writeback-cache"] : [])
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(30)
        var seen = Data()
        while Date() < deadline {
            let d = pipe.fileHandleForReading.availableData
            if d.isEmpty { break }
            seen.append(d)
            if String(decoding: seen, as: UTF8.self).contains("granary mount ready") { return }
        }
        process.terminate()
        throw ValidationError("the mount did not start: \(String(decoding: seen, as: UTF8.self))")
    }

    mutating func stop() {
        guard process.isRunning else { return }
        process.terminate()
        let deadline = Date().addingTimeInterval(60)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        MountBench.shell("fusermount3 -u -z '\(mountpoint)' 2>/dev/null; true")
    }
}
