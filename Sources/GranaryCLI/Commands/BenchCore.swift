import ArgumentParser
import CISAL
import CSodium
import Foundation
import GranaryCore

/// `granary bench core`: the Swift layer against the raw C call doing the
/// same work on the same bytes, so every figure is a ratio to its baseline.
struct CoreBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "core", abstract: "Hashing, sealing, erasure coding and Merkle trees against raw libsodium / ISA-L.")

    @Flag(help: "Print one JSON object.") var json = false
    @Option(name: .customLong("segment-mib"), help: "Segment size in MiB for erasure coding and Merkle trees.") var segmentMiB = 64
    @Option(help: "Runs per figure (the best is kept).") var runs = 5

    func run() throws {
        var report = BenchReport()
        let chunk = 4 << 20
        let segment = segmentMiB << 20
        let data = UnsafeMutableRawBufferPointer.allocate(byteCount: segment, alignment: 64)
        defer { data.deallocate() }
        randombytes_buf(data.baseAddress!, segment)
        let chunks = segment / chunk
        let keys = RenterKeys.generate()
        let sealer = keys.chunkSealer()
        let sealedSize = ChunkSealer.sealedSize(plaintextCount: chunk)
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: sealedSize, alignment: 64)
        defer { out.deallocate() }

        // Chunk IDs: keyed BLAKE3 over each 4 MiB chunk.
        report.add("chunk_id_mbps", BenchClock.bestMBps(bytes: segment, runs: runs) {
            for c in 0..<chunks { _ = sealer.chunkID(of: UnsafeRawBufferPointer(rebasing: data[(c * chunk)..<((c + 1) * chunk)])) }
        })

        // Sealing without the hashing, against the raw AEAD on the same bytes.
        let id = Hash256.random()
        let key = SecureRandom.bytes(32), nonce = SecureRandom.bytes(24), ad = id.bytes
        let aes = sealer.algorithm == .aes256gcm
        let seal = try BenchClock.bestPairMBps(bytes: segment, runs: runs, {
            for c in 0..<chunks {
                _ = try sealer.seal(UnsafeRawBufferPointer(rebasing: data[(c * chunk)..<((c + 1) * chunk)]), chunkID: id, into: out)
            }
        }, baseline: {
            var clen: UInt64 = 0
            for c in 0..<chunks {
                let m = (data.baseAddress! + c * chunk).assumingMemoryBound(to: UInt8.self)
                let o = out.baseAddress!.assumingMemoryBound(to: UInt8.self)
                if aes {
                    crypto_aead_aes256gcm_encrypt(o, &clen, m, UInt64(chunk), ad, 32, nil, nonce, key)
                } else {
                    crypto_aead_xchacha20poly1305_ietf_encrypt(o, &clen, m, UInt64(chunk), ad, 32, nil, nonce, key)
                }
            }
        })
        report.add("seal_mbps", seal.measured)
        report.add("raw_aead_mbps", seal.baseline)
        let sealedLength = try sealer.seal(UnsafeRawBufferPointer(rebasing: data[0..<chunk]), chunkID: id, into: out)
        let opened = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 64)
        defer { opened.deallocate() }
        report.add("open_mbps", try BenchClock.bestMBps(bytes: segment, runs: runs) {
            for _ in 0..<chunks { _ = try sealer.open(UnsafeRawBufferPointer(rebasing: out[0..<sealedLength]), chunkID: id, into: opened) }
        })

        // Reed-Solomon.
        let rs44 = try RedundancyScheme(k: 4, r: 4, s: 8, n: 8)
        let rs = encodeMBps(rs44, data: UnsafeRawBufferPointer(data))
        report.add("rs_encode_4_4_mbps", rs.measured)
        report.add("raw_isal_4_4_mbps", rs.baseline)
        report.add("rs_encode_10_6_mbps", encodeMBps(try RedundancyScheme(k: 10, r: 10, s: 16, n: 16), data: UnsafeRawBufferPointer(data)).measured)
        report.add("rs_decode_4_4_mbps", try decodeMBps(rs44, data: UnsafeRawBufferPointer(data)))

        // Merkle root against one BLAKE3 pass over the same bytes; BLAKE2b
        // (what protocol 1 hashed with) for comparison.
        let merkle = BenchClock.bestPairMBps(bytes: segment, runs: runs, { _ = MerkleTree(data: UnsafeRawBufferPointer(data)).root },
                                             baseline: { _ = Blake3.hash256(UnsafeRawBufferPointer(data)) })
        report.add("merkle_mbps", merkle.measured)
        report.add("raw_blake3_mbps", merkle.baseline)
        report.add("raw_blake2b_mbps", BenchClock.bestMBps(bytes: segment, runs: runs) { _ = Blake2b.hash256(UnsafeRawBufferPointer(data)) })
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: segment, alignment: 64)
        defer { copy.deallocate() }
        report.add("memcpy_mbps", BenchClock.bestMBps(bytes: segment, runs: runs) {
            copy.baseAddress!.copyMemory(from: data.baseAddress!, byteCount: segment)
        })
        print(report.render(json: json))
    }

    private func parityBuffers(_ count: Int, size: Int) -> [UnsafeMutableRawPointer] {
        (0..<count).map { _ in
            let p = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
            p.initializeMemory(as: UInt8.self, repeating: 0, count: size)
            return p
        }
    }

    /// Our encoder against ISA-L called directly with the same matrix on the
    /// same bytes, measured in alternation.
    private func encodeMBps(_ scheme: RedundancyScheme, data: UnsafeRawBufferPointer) -> (measured: Double, baseline: Double) {
        let coder = ErasureCoder(scheme: scheme)
        let (k, m) = (scheme.k, scheme.parityCount)
        let size = scheme.pieceSize(segmentLength: data.count)
        let parity = parityBuffers(m, size: size)
        defer { parity.forEach { $0.deallocate() } }
        var matrix = [UInt8](repeating: 0, count: (k + m) * k)
        gf_gen_cauchy1_matrix(&matrix, Int32(k + m), Int32(k))
        var tables = [UInt8](repeating: 0, count: k * m * 32)
        matrix.withUnsafeMutableBufferPointer { ec_init_tables(Int32(k), Int32(m), $0.baseAddress! + k * k, &tables) }
        var sources = (0..<k).map { Optional(UnsafeMutablePointer(mutating: (data.baseAddress! + $0 * size).assumingMemoryBound(to: UInt8.self))) }
        var outputs = parity.map { Optional($0.assumingMemoryBound(to: UInt8.self)) }
        return BenchClock.bestPairMBps(bytes: data.count, runs: runs, { coder.encodeParity(data, into: parity) }, baseline: {
            ec_encode_data(Int32(size), Int32(k), Int32(m), &tables, &sources, &outputs)
        })
    }

    /// Decode with every data piece missing: all k rebuilt from parity.
    private func decodeMBps(_ scheme: RedundancyScheme, data: UnsafeRawBufferPointer) throws -> Double {
        let coder = ErasureCoder(scheme: scheme)
        let size = scheme.pieceSize(segmentLength: data.count)
        let parity = parityBuffers(scheme.parityCount, size: size)
        let rebuilt = parityBuffers(scheme.k, size: size)
        defer { (parity + rebuilt).forEach { $0.deallocate() } }
        coder.encodeParity(data, into: parity)
        var available = [Int: UnsafeRawBufferPointer]()
        for (j, p) in parity.enumerated() { available[scheme.k + j] = UnsafeRawBufferPointer(start: p, count: size) }
        return try BenchClock.bestMBps(bytes: data.count, runs: runs) {
            try coder.reconstruct(targets: Array(0..<scheme.k), from: available, length: size, into: rebuilt)
        }
    }
}
