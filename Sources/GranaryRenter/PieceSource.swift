import Foundation
import GranaryCore

/// A segment's n pieces, made on demand by the tasks that upload them: the
/// code is systematic, so data piece i is a slice of the segment, ready at
/// once; parity is computed by one task started up front, which the parity
/// uploads await. Each piece's Merkle root is hashed by its own task. So
/// the data pieces' transfers start while parity is still being computed
/// and other pieces hashed, instead of after all of it.
final class PieceSource: Sendable {
    let segment: [UInt8]
    let scheme: RedundancyScheme
    let pieceSize: Int
    let timings: StageTimings
    private let parity: Task<[[UInt8]], Never>

    init(segment: [UInt8], scheme: RedundancyScheme, timings: StageTimings) {
        self.segment = segment
        self.scheme = scheme
        self.timings = timings
        let size = scheme.pieceSize(segmentLength: segment.count)
        pieceSize = size
        parity = Task {
            timings.measure("erasure_code") {
                let count = scheme.n - scheme.k
                guard size > 0, count > 0 else { return [] }
                let buffers = (0..<count).map { _ in UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64) }
                defer { buffers.forEach { $0.deallocate() } }
                segment.withUnsafeBytes { ErasureCoder(scheme: scheme).encodeParity($0, into: buffers) }
                return buffers.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) }
            }
        }
    }

    /// Piece `index` (0..<n) and its Merkle root.
    @Sendable func piece(_ index: Int) async -> (bytes: [UInt8], root: Hash256) {
        let bytes: [UInt8]
        if index < scheme.k {
            let start = min(segment.count, index * pieceSize), end = min(segment.count, start + pieceSize)
            var p = [UInt8]()
            p.reserveCapacity(pieceSize)
            p.append(contentsOf: segment[start..<end])
            if p.count < pieceSize { p.append(contentsOf: repeatElement(0, count: pieceSize - p.count)) }
            bytes = p
        } else {
            bytes = await parity.value[index - scheme.k]
        }
        let root = timings.measure("merkle_hash") { MerkleTree(data: bytes).root }
        return (bytes, root)
    }
}
