import ArgumentParser
import Foundation
import GranaryCore
import GranaryRenter
import Logging

/// `granary bench network`: 1 GiB of random data through the renter engine
/// and 10 farmer processes on loopback. Upload = seal 4 MiB chunks, pack
/// them into segments, erasure code, hash, upload until durable; cold
/// download = read every chunk back from the farmers (verified ranges) and
/// open it. Baseline from the same run: writing the same amount to a local
/// file in 1 MiB blocks with fsync at the end (`dd bs=1M conv=fsync`).
/// Rates are MB/s (10^6 bytes) of plaintext.
///
/// With --bootstrap it uses an existing network instead of starting one;
/// with --upload-only it stops after the upload, printing one line per
/// durable segment (tests kill it mid-upload to check crash recovery).
struct NetworkBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "network", abstract: "Upload and cold download through farmer processes on loopback, next to a local copy.")

    @Flag(help: "Print one JSON object.") var json = false
    @Option(help: "MiB of data.") var size = 1024
    @Option(help: "Farmer processes to start.") var farmers = 10
    @Option(help: "Redundancy k/r/s/n.") var scheme = "4/5/7/8"
    @Option(help: "Segment size in MiB (at most 64).") var segment = 64
    @Option(help: "Segments uploaded at once.") var parallel = 2
    @Option(help: "Chunk reads in flight during the download.") var readers = 8
    @Option(help: "Use this network (HOST:PORT of a seed) instead of starting one.") var bootstrap: String?
    @Option(help: "Contract directly with these farmers (HOST:PORT of their transfer endpoints, comma separated) instead of through the market.")
    var farmer: [String] = []
    @Option(help: "Renter state folder (default: a temporary one).") var state: String?
    @Option(help: "Seed of the generated data.") var seed: UInt64 = 1
    @Flag(help: "Stop after the upload.") var uploadOnly = false

    static let chunkSize = 4 << 20

    func run() async throws {
        HeapTuning.keepFreedMemory()  // as the mount does: the renter's figures are the mount's
        let log = Logger(label: "granary.bench")
        let scheme = try RedundancyScheme(parsing: self.scheme)
        guard (1...64).contains(segment) else { throw ValidationError("--segment must be 1...64 MiB") }
        let work = NSTemporaryDirectory() + "/granary-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let totalBytes = size << 20

        // Baseline: local copy with fsync at the end. This VM's disk swings
        // 2x within a minute, so it is copied three times (here and twice at
        // the end) and the median is the baseline.
        var localSamples = [try Self.localCopy(bytes: totalBytes, path: work + "/local-copy")]
        log.info("local copy: \(String(format: "%.1f", Double(totalBytes) / localSamples[0] / 1e6)) MB/s")

        // The network.
        var children: [ManagedChild] = []
        defer { ManagedChild.stopAll(children, grace: 5) }
        let seedAddress: String
        var spawnedDirect: [String] = []
        if let bootstrap {
            seedAddress = bootstrap
        } else {
            let seedNode = try ManagedChild.start(arguments: ["seed", "--listen", "127.0.0.1:0"], log: work + "/seed.log")
            children.append(seedNode)
            guard let udp = try seedNode.waitForListeningFields(timeout: 30)["udp"] else {
                throw ValidationError("the seed's listening line has no udp= address (see \(work)/seed.log)")
            }
            seedAddress = udp
            let capacity = "\(max(1, (totalBytes * 2 / farmers) >> 30 + 2))GiB"
            for i in 0..<farmers {
                let dir = work + "/farmer\(i)"
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                children.append(try ManagedChild.start(arguments: ["farm", "--storage", dir, "--capacity", capacity,
                                                                   "--listen", "127.0.0.1:0", "--bootstrap", seedAddress],
                                                       log: work + "/farmer\(i).log"))
            }
            for (i, c) in children.dropFirst().enumerated() {
                let fields = try c.waitForListeningFields(timeout: 60)
                guard let tcp = fields["tcp"] else { throw ValidationError("farmer \(i) printed no tcp= address (see \(work)/farmer\(i).log)") }
                // Farmers that do not bid in the market (no udp= address) get direct contracts.
                if fields["udp"] == nil { spawnedDirect.append(tcp) }
            }
        }

        // The renter.
        let stateDir = state ?? work + "/renter"
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true)
        var config = RenterConfiguration(scheme: scheme)
        config.runBackgroundLoops = false
        config.terms = ContractTerms(allowance: Int64(max(1 << 30, totalBytes * 2 / max(1, farmers))), duration: 86_400,
                                     maxPricePerAudit: 1_000, auditInterval: 3_600)
        config.targetContracts = max(scheme.n + 2, min(farmers, 12))
        let identity = try NodeIdentity.loadOrCreate(at: stateDir + "/identity.key", difficulty: config.difficulty)
        let direct = farmer.flatMap { $0.split(separator: ",").map(String.init) } + spawnedDirect
        let engine = direct.isEmpty
            ? try await RenterEngine.start(stateDirectory: stateDir, identity: identity, bootstrap: [seedAddress],
                                           configuration: config, contractTimeout: 120)
            : try await RenterEngine.start(stateDirectory: stateDir, identity: identity, farmers: direct,
                                           configuration: config, contractTimeout: 120)
        let keys = RenterKeys(master: Blake2b.hash256(withUnsafeBytes(of: seed.littleEndian) { Array($0) }).bytes)
        let sealer = keys.chunkSealer()

        // Upload: chunks sealed and packed into segments, `parallel` segments in flight.
        let chunksPerSegment = max(1, (segment << 20) / ChunkSealer.sealedSize(plaintextCount: Self.chunkSize))
        let chunkCount = (totalBytes + Self.chunkSize - 1) / Self.chunkSize
        let segmentCount = (chunkCount + chunksPerSegment - 1) / chunksPerSegment
        let sealClock = StageClock(), chunkIDClock = StageClock(), generateClock = StageClock()
        let farmerPIDs = children.dropFirst().map(\.pid)
        let cpuBeforeUpload = CPUSample(farmers: farmerPIDs)
        let uploadStart = Date()
        let layouts = try await withThrowingTaskGroup(of: SegmentLayout.self) { group in
            var out: [SegmentLayout] = []
            var nextSegment = 0
            func add() {
                let s = nextSegment
                nextSegment += 1
                group.addTask {
                    let first = s * chunksPerSegment, last = min(chunkCount, first + chunksPerSegment)
                    let lengths = (first..<last).map { min(Self.chunkSize, totalBytes - $0 * Self.chunkSize) }
                    let sealedSizes = lengths.map { ChunkSealer.sealedSize(plaintextCount: $0, algorithm: sealer.algorithm) }
                    var chunks: [(Hash256, Range<Int>)] = []
                    // Chunks are sealed straight into the segment (no per-chunk copy).
                    var plain = [UInt8](repeating: 0, count: Self.chunkSize)
                    let bytes = try [UInt8](unsafeUninitializedCapacity: sealedSizes.reduce(0, +)) { out, initialized in
                        for (i, c) in (first..<last).enumerated() {
                            generateClock.measure { Self.fill(&plain, seed: seed, chunk: c, length: lengths[i]) }
                            let id = try plain.withUnsafeBytes { whole in
                                let p = UnsafeRawBufferPointer(rebasing: whole[..<lengths[i]])
                                let id = chunkIDClock.measure { sealer.chunkID(of: p) }
                                let dst = UnsafeMutableRawBufferPointer(start: out.baseAddress! + initialized, count: sealedSizes[i])
                                _ = try sealClock.measure { try sealer.seal(p, chunkID: id, into: dst) }
                                return id
                            }
                            chunks.append((id, initialized..<(initialized + sealedSizes[i])))
                            initialized += sealedSizes[i]
                        }
                    }
                    let id = SegmentID(bytes: Blake2b.hash256(Array("bench-\(seed)-\(s)".utf8)).bytes)!
                    try await engine.segments.put(id, bytes: bytes)
                    if uploadOnly {
                        // Only here: hashing every segment again would be a
                        // fourth pass over the data inside the timed upload.
                        let line = "durable segment \(id.hex) bytes=\(bytes.count) blake2b=\(Blake2b.hash256(bytes).hex)\n"
                        _ = line.withCString { write(STDOUT_FILENO, $0, strlen($0)) }
                    }
                    return SegmentLayout(id: id, chunks: chunks)
                }
            }
            for _ in 0..<min(parallel, segmentCount) { add() }
            while let done = try await group.next() {
                out.append(done)
                if nextSegment < segmentCount { add() }
            }
            return out
        }
        let uploadSeconds = Date().timeIntervalSince(uploadStart)
        let cpuAfterUpload = CPUSample(farmers: farmerPIDs)
        log.info("upload: \(String(format: "%.1f", Double(totalBytes) / uploadSeconds / 1e6)) MB/s")
        if uploadOnly {
            await engine.stop()
            return
        }

        // Cold download: every chunk read from the farmers (verified) and opened.
        let openClock = StageClock()
        let reads = layouts.flatMap { l in l.chunks.map { (l.id, $0.0, $0.1) } }
        let downloadStart = Date()
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            func add() {
                let (segmentID, chunkID, range) = reads[next]
                next += 1
                group.addTask {
                    let sealed = try await engine.segments.read(segmentID, offset: range.lowerBound, length: range.count)
                    _ = try openClock.measure { try sealer.open(sealed, chunkID: chunkID) }
                }
            }
            for _ in 0..<min(readers, reads.count) { add() }
            while try await group.next() != nil { if next < reads.count { add() } }
        }
        let downloadSeconds = Date().timeIntervalSince(downloadStart)
        let cpuAfterDownload = CPUSample(farmers: farmerPIDs)
        let timings = engine.store.timings.snapshot
        let status = engine.status()
        await engine.stop()
        for _ in 0..<2 { localSamples.append(try Self.localCopy(bytes: totalBytes, path: work + "/local-copy")) }
        let localSeconds = localSamples.sorted()[1]

        let mb = Double(totalBytes) / 1e6
        var breakdown: [String: Double] = [
            "seal": sealClock.seconds, "open": openClock.seconds,
            "upload_wall": uploadSeconds, "download_wall": downloadSeconds, "local_copy": localSeconds,
        ]
        for (k, v) in timings { breakdown[k] = v }
        breakdown["generate"] = generateClock.seconds
        breakdown["chunk_id_hash"] = chunkIDClock.seconds
        // CPU seconds per phase: the renter (this process), the farmer
        // processes, and what the whole machine had (cores × wall) and used.
        for (phase, a, b) in [("upload", cpuBeforeUpload, cpuAfterUpload), ("download", cpuAfterUpload, cpuAfterDownload)] {
            breakdown["\(phase)_cpu_renter"] = b.renter - a.renter
            breakdown["\(phase)_cpu_farmers"] = b.farmers - a.farmers
            breakdown["\(phase)_cpu_machine_busy"] = b.machineBusy - a.machineBusy
            breakdown["\(phase)_cpu_machine_total"] = b.machineTotal - a.machineTotal
        }
        let result: [String: Any] = [
            "upload_mbps": mb / uploadSeconds, "cold_download_mbps": mb / downloadSeconds, "local_copy_mbps": mb / localSeconds,
            "local_copy_samples_mbps": localSamples.map { (mb / $0 * 10).rounded() / 10 },
            // The issue's goals: upload >= 0.3 and cold download >= 0.4 of the local copy.
            "upload_ratio": localSeconds / uploadSeconds, "cold_download_ratio": localSeconds / downloadSeconds,
            "size_mib": size, "farmers": status.farmers.count, "scheme": scheme.description, "segments": segmentCount,
            "breakdown": breakdown.mapValues { ($0 * 1000).rounded() / 1000 },
        ]
        if json {
            let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(String(format: "upload         %8.1f MB/s  (%.0f%% of local copy)", mb / uploadSeconds, 100 * localSeconds / uploadSeconds))
            print(String(format: "cold download  %8.1f MB/s  (%.0f%% of local copy)", mb / downloadSeconds, 100 * localSeconds / downloadSeconds))
            print(String(format: "local copy     %8.1f MB/s", mb / localSeconds))
            for (k, v) in breakdown.sorted(by: { $0.key < $1.key }) { print(String(format: "  %-24@ %8.2f s", k as NSString, v)) }
        }
    }

    struct SegmentLayout: Sendable {
        let id: SegmentID
        let chunks: [(Hash256, Range<Int>)]
    }

    /// Deterministic pseudo-random plaintext of one chunk (SplitMix64).
    static func data(seed: UInt64, chunk: Int, length: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: length)
        fill(&out, seed: seed, chunk: chunk, length: length)
        return out
    }

    /// Writes the first `length` bytes of chunk `chunk`'s plaintext into `out`.
    static func fill(_ out: inout [UInt8], seed: UInt64, chunk: Int, length: Int) {
        precondition(out.count >= length)
        var state = seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(chunk) &* 0xD1B5_4A32_D192_ED03
        out.withUnsafeMutableBytes { buf in
            let words = length / 8
            let p = buf.baseAddress!
            for i in 0..<words {
                state &+= 0x9E37_79B9_7F4A_7C15
                var z = state
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                p.storeBytes(of: z ^ (z >> 31), toByteOffset: i * 8, as: UInt64.self)
            }
        }
    }

    /// `dd bs=1M conv=fsync`: seconds to write `bytes` in 1 MiB blocks and fsync.
    static func localCopy(bytes: Int, path: String) throws -> Double {
        let block = data(seed: 99, chunk: 0, length: 1 << 20)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ValidationError("cannot create \(path)") }
        defer { close(fd); unlink(path) }
        let start = Date()
        var written = 0
        while written < bytes {
            let n = min(block.count, bytes - written)
            let w = block.withUnsafeBytes { write(fd, $0.baseAddress, n) }
            guard w == n else { throw ValidationError("write to \(path) failed") }
            written += n
        }
        guard fsync(fd) == 0 else { throw ValidationError("fsync of \(path) failed") }
        return Date().timeIntervalSince(start)
    }
}

/// CPU seconds of work summed over tasks.
final class StageClock: @unchecked Sendable {
    // A lock: many tasks add to it.
    private let lock = NSLock()
    private var total: Double = 0
    var seconds: Double { lock.lock(); defer { lock.unlock() }; return total }
    /// Adds the CPU seconds the calling thread spends in `body`.
    func measure<T>(_ body: () throws -> T) rethrows -> T {
        let t0 = StageTimings.threadCPUSeconds()
        defer {
            let s = StageTimings.threadCPUSeconds() - t0
            lock.lock(); total += s; lock.unlock()
        }
        return try body()
    }
}

/// CPU seconds used so far by this process, by the farmer processes, and
/// by the whole machine (busy and total core-seconds, from /proc/stat).
struct CPUSample {
    var renter: Double
    var farmers: Double
    var machineBusy: Double
    var machineTotal: Double

    init(farmers pids: [Int32]) {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        renter = seconds(usage.ru_utime) + seconds(usage.ru_stime)
        let tick = Double(sysconf(Int32(_SC_CLK_TCK)))
        farmers = pids.reduce(0) { sum, pid in
            // Fields after the ")" closing the command name: utime is the 12th, stime the 13th.
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return sum }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) else { return sum }
            return sum + (u + s) / tick
        }
        machineBusy = 0; machineTotal = 0
        if let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
           let line = text.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") }) {
            let v = line.split(separator: " ").dropFirst().compactMap { Double($0) }
            if v.count >= 5 {
                // user nice system idle iowait irq softirq steal (guest is inside user).
                let total = v.prefix(8).reduce(0, +), idle = v[3] + v[4]
                machineTotal = total / tick
                machineBusy = (total - idle) / tick
            }
        }
    }
}
