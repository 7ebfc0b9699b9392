import Foundation
import GranaryCore

/// A segment's n pieces, made on demand by the tasks that upload them: the
/// code is systematic, so data piece i is a slice of the segment, handed
/// out in place (no copy; only a short last slice is padded into a new
/// array); parity is computed by one task started up front, straight into
/// the arrays that are uploaded, and the parity uploads await it. Each
/// piece's Merkle root is hashed by its own task, once, only for pieces that
/// are actually uploaded. So the data pieces' transfers start while parity
/// is still being computed and other pieces hashed, instead of after all of it.
final class PieceSource: Sendable {
    let segment: [UInt8]
    let scheme: RedundancyScheme
    let pieceSize: Int
    let timings: StageTimings
    /// All parity pieces back to back, piece j at j * pieceSize.
    private let parity: Task<[UInt8], Never>

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
                // ISA-L writes every parity piece in one pass, straight into
                // the (uninitialised) array whose slices are uploaded.
                return [UInt8](unsafeUninitializedCapacity: count * size) { buffer, initialized in
                    let base = UnsafeMutableRawPointer(buffer.baseAddress!)
                    segment.withUnsafeBytes {
                        ErasureCoder(scheme: scheme).encodeParity($0, into: (0..<count).map { base + $0 * size })
                    }
                    initialized = count * size
                }
            }
        }
    }

    /// Piece `index` (0..<n) and its Merkle root.
    @Sendable func piece(_ index: Int) async -> (bytes: ArraySlice<UInt8>, root: Hash256) {
        let bytes: ArraySlice<UInt8>
        if index < scheme.k {
            let start = min(segment.count, index * pieceSize), end = min(segment.count, start + pieceSize)
            if end - start == pieceSize {
                bytes = segment[start..<end]
            } else {
                var p = [UInt8]()
                p.reserveCapacity(pieceSize)
                p.append(contentsOf: segment[start..<end])
                p.append(contentsOf: repeatElement(0, count: pieceSize - p.count))
                bytes = p[...]
            }
        } else {
            let j = index - scheme.k
            bytes = await parity.value[(j * pieceSize)..<((j + 1) * pieceSize)]
        }
        let root = timings.measure("merkle_hash") { bytes.withUnsafeBytes { MerkleTree(data: $0).root } }
        return (bytes, root)
    }
}
