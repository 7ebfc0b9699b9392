import ArgumentParser
import Foundation
import GranaryContracts
import GranaryCore
import GranaryWire
import NIOCore

/// `granary bench transfer`: piece upload (farmer hashes, checks the root,
/// fsyncs) and ranged download (renter checks the range proof) between this
/// process and a `granary farm` child on loopback, with 1 and 8 concurrent
/// streams (one session each), next to two baselines from the same run: a
/// plain TCP copy of the same bytes and the one-core Merkle hashing rate,
/// which bounds a farmer on a 2-core machine. Rates are MB/s (10^6 bytes/s).
struct TransferBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transfer", abstract: "Benchmark piece upload and ranged download against a local farmer.")

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    @Option(name: .customLong("piece-size"), help: "Piece size in MiB (a 64 MiB segment at k=4 gives 16).")
    var pieceSizeMiB = 16

    @Option(help: "Pieces moved per measurement.")
    var pieces = 16

    @Option(name: .customLong("range-size"), help: "Download range size in MiB (a chunk is 4 MiB).")
    var rangeSizeMiB = 4

    func run() async throws {
        let pieceSize = pieceSizeMiB << 20
        let total = pieceSize * pieces
        let data = SecureRandom.bytes(pieceSize)
        let root = MerkleTree(data: data).root
        let buffer = ByteBuffer(bytes: data)

        let hashRate = Self.measure(bytes: total) {
            for _ in 0..<pieces { _ = MerkleTree(data: data).root }
        }
        let tcpRate = try Self.tcpBaseline(data: data, repeats: pieces)
        let diskRate = try Self.diskBaseline(data: data, repeats: pieces)
        let diskRate8 = try Self.diskBaseline(data: data, repeats: pieces, streams: 8)

        let farm = try BenchFarmer.start()
        defer { farm.stop() }
        let difficulty = BenchFarmer.difficulty
        let renter = NodeIdentity.generate(difficulty: difficulty)
        func connect() async throws -> TransferClient {
            try await TransferClient.connect(to: "127.0.0.1", port: farm.port, identity: renter, expectedPeer: farm.node,
                                             difficulty: difficulty, requestTimeout: .seconds(120))
        }
        let control = try await connect()
        let start = UInt64(Date().timeIntervalSince1970)
        let contract = try await control.proposeContract(
            Contract(renterID: renter.id, farmerID: farm.node, allowanceBytes: UInt64(total) * 3, startTime: start,
                     endTime: start + 3600, pricePerAudit: 1, auditIntervalSeconds: 60, paymentChannelID: .random())
                .proposal(signedBy: renter), difficulty: difficulty)

        var results: [String: Double] = ["hash_bound_mbps": hashRate, "tcp_baseline_mbps": tcpRate, "disk_fsync_mbps": diskRate,
                                         "disk_fsync_8_mbps": diskRate8,
                                         // What really bounds a durable upload here: hashing or the disk.
                                         "farmer_bound_mbps": min(hashRate, diskRate8)]
        for streams in [1, 8] {
            let clients = try await (0..<streams).asyncMap { _ in try await connect() }
            let ids = (0..<pieces).map { _ in Hash256.random() }
            let upStart = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (s, client) in clients.enumerated() {
                    group.addTask {
                        for i in stride(from: s, to: ids.count, by: streams) {
                            _ = try await client.storePiece(contract: contract.id, pieceID: ids[i], root: root, buffer: buffer)
                        }
                    }
                }
                try await group.waitForAll()
            }
            results["upload_\(streams)_mbps"] = Self.rate(total, since: upStart)

            let rangeSize = min(rangeSizeMiB << 20, pieceSize)
            let ranges = ids.flatMap { id in stride(from: 0, to: pieceSize, by: rangeSize).map { (id, $0..<min($0 + rangeSize, pieceSize)) } }
            let downStart = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (s, client) in clients.enumerated() {
                    group.addTask {
                        for i in stride(from: s, to: ranges.count, by: streams) {
                            let (id, range) = ranges[i]
                            let got = try await client.readRange(pieceID: id, root: root, pieceSize: pieceSize, range: range)
                            precondition(got.count == range.count)
                        }
                    }
                }
                try await group.waitForAll()
            }
            results["download_\(streams)_mbps"] = Self.rate(total, since: downStart)
            for id in ids { try await control.deletePiece(pieceID: id) }
            for client in clients { await client.close() }
        }
        await control.close()

        let order = ["upload_1_mbps", "upload_8_mbps", "download_1_mbps", "download_8_mbps", "tcp_baseline_mbps", "hash_bound_mbps",
                     "disk_fsync_mbps", "disk_fsync_8_mbps", "farmer_bound_mbps"]
        if json {
            let fields = order.map { "\"\($0)\": \(String(format: "%.1f", results[$0] ?? 0))" }
            print("{" + fields.joined(separator: ", ") + ", \"piece_bytes\": \(pieceSize), \"bytes_per_run\": \(total)}")
        } else {
            print("transfer benchmark: \(pieces) pieces of \(pieceSizeMiB) MiB per run, MB/s")
            for key in order {
                let ratio = (results[key] ?? 0) / max(hashRate, 1) * 100
                let name = key.padding(toLength: 20, withPad: " ", startingAt: 0)
                print("  " + name + String(format: "%9.1f   %5.1f%% of hash bound", results[key] ?? 0, ratio))
            }
        }
    }

    static func rate(_ bytes: Int, since start: ContinuousClock.Instant) -> Double {
        let d = ContinuousClock.now - start
        let seconds = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
        return Double(bytes) / max(seconds, 1e-9) / 1e6
    }

    static func measure(bytes: Int, _ body: () -> Void) -> Double {
        let start = ContinuousClock.now
        body()
        return rate(bytes, since: start)
    }

    /// Writing the same bytes as piece files with an fsync each, in the
    /// same temporary folder the farmer stores into, from `streams` threads
    /// at once: what a durable upload can reach on this disk, whatever the
    /// hashing rate.
    static func diskBaseline(data: [UInt8], repeats: Int, streams: Int = 1) throws -> Double {
        let dir = NSTemporaryDirectory() + "/granary-bench-disk-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let failed = ManagedAtomicFlag()
        let start = ContinuousClock.now
        DispatchQueue.concurrentPerform(iterations: streams) { s in
            for i in stride(from: s, to: repeats, by: streams) {
                let fd = open("\(dir)/\(i)", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
                guard fd >= 0 else { failed.set(); return }
                _ = data.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
                fsync(fd)
                close(fd)
            }
        }
        if failed.isSet { throw ValidationError("cannot write in \(dir)") }
        return rate(data.count * repeats, since: start)
    }

    /// A plain TCP copy of the same bytes over loopback (blocking sockets,
    /// a sender thread and a receiver thread, 1 MiB writes).
    static func tcpBaseline(data: [UInt8], repeats: Int) throws -> Double {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, len) == 0 && listen(listener, 1) == 0 && getsockname(listener, $0, &len) == 0
            }
        }
        guard ok else { throw ValidationError("cannot open a loopback socket for the TCP baseline") }
        let total = data.count * repeats
        let receiver = Thread {
            let fd = accept(listener, nil, nil)
            var buf = [UInt8](repeating: 0, count: 1 << 20)
            var got = 0
            while got < total {
                let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
                if n <= 0 { break }
                got += n
            }
            close(fd)
        }
        receiver.start()
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        let connected = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, len) == 0 } }
        guard connected else { throw ValidationError("cannot connect the TCP baseline") }
        let start = ContinuousClock.now
        for _ in 0..<repeats {
            var off = 0
            while off < data.count {
                let n = data.withUnsafeBytes { send(fd, $0.baseAddress! + off, min(1 << 20, data.count - off), Int32(MSG_NOSIGNAL)) }
                if n <= 0 { break }
                off += n
            }
        }
        shutdown(fd, Int32(SHUT_WR))
        while !receiver.isFinished { usleep(200) }
        return rate(total, since: start)
    }
}

/// The `granary farm` child the benchmark talks to.
final class BenchFarmer {
    static let difficulty = 4
    let child: ManagedChild
    let port: Int
    let node: Hash256
    let storage: String

    private init(child: ManagedChild, port: Int, node: Hash256, storage: String) {
        self.child = child; self.port = port; self.node = node; self.storage = storage
    }

    static func start() throws -> BenchFarmer {
        let storage = NSTemporaryDirectory() + "/granary-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: storage, withIntermediateDirectories: true)
        let child = try ManagedChild.start(arguments: ["farm", "--storage", storage, "--capacity", "4G", "--listen", "127.0.0.1:0", "--quick-check"],
                                           log: storage + ".log",
                                           environment: ["GRANARY_POW_BITS": String(difficulty), "GRANARY_LOG": "warning"])
        let fields = try child.waitForListeningFields(timeout: 60)
        guard let port = fields["tcp"].flatMap({ Int($0.split(separator: ":").last ?? "") }),
              let node = fields["node"].flatMap(Hash256.init(hex:)) else {
            ManagedChild.stopAll([child], grace: 5)
            throw ValidationError("unexpected farmer line: \(fields)")
        }
        return BenchFarmer(child: child, port: port, node: node, storage: storage)
    }

    func stop() {
        ManagedChild.stopAll([child], grace: 5)
        child.process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: storage)
        try? FileManager.default.removeItem(atPath: storage + ".log")
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for e in self { out.append(try await transform(e)) }
        return out
    }
}

/// A flag set from any thread (the disk baseline's writer threads).
private final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}
