import CISAL

/// Systematic Reed-Solomon over ISA-L with a Cauchy matrix. Pieces 0..<k are
/// the segment's contiguous slices (the last zero-padded), k..<n are parity.
///
/// Holds encode tables, a cache of decode tables and a padding buffer that
/// are reused across calls, so it is not thread-safe: one coder per task.
public final class ErasureCoder {
    public let scheme: RedundancyScheme
    private let k: Int
    private let n: Int
    /// n×k generator matrix; rows 0..<k are the identity.
    private var matrix: [UInt8]
    private var encodeTables: [UInt8]
    private var decodeCache: [DecodeKey: [UInt8]] = [:]
    private var padding: UnsafeMutableRawBufferPointer

    private struct DecodeKey: Hashable { let sources: [Int]; let targets: [Int] }

    public init(scheme: RedundancyScheme) {
        self.scheme = scheme
        k = scheme.k
        n = scheme.n
        let (k, n) = (scheme.k, scheme.n)
        var matrix = [UInt8](repeating: 0, count: n * k)
        gf_gen_cauchy1_matrix(&matrix, Int32(n), Int32(k))
        var tables = [UInt8](repeating: 0, count: max(1, k * (n - k) * 32))
        if n > k {
            matrix.withUnsafeMutableBufferPointer { m in
                ec_init_tables(Int32(k), Int32(n - k), m.baseAddress! + k * k, &tables)
            }
        }
        self.matrix = matrix
        encodeTables = tables
        padding = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 64)
    }

    deinit { padding.deallocate() }

    private func paddingBuffer(_ count: Int) -> UnsafeMutableRawPointer {
        if padding.count < count {
            padding.deallocate()
            padding = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 64)
        }
        return padding.baseAddress!
    }

    // MARK: encode

    /// Computes the n−k parity pieces of `segment` into `parity` (each at
    /// least `pieceSize` bytes). The data pieces are read in place; only a
    /// short last slice is copied into a reused, zero-padded buffer.
    public func encodeParity(_ segment: UnsafeRawBufferPointer, into parity: [UnsafeMutableRawPointer]) {
        precondition(parity.count == n - k, "need \(n - k) parity buffers")
        let size = scheme.pieceSize(segmentLength: segment.count)
        guard size > 0, n > k else { return }
        var data = [UnsafeMutablePointer<UInt8>?](repeating: nil, count: k)
        // Slices that run past the end are gathered into one padded buffer.
        let fullSlices = segment.count / size
        let pad = paddingBuffer((k - fullSlices) * size)
        for i in 0..<k {
            if i < fullSlices {
                data[i] = UnsafeMutablePointer(mutating: segment.baseAddress!.assumingMemoryBound(to: UInt8.self) + i * size)
            } else {
                let dst = pad + (i - fullSlices) * size
                let start = i * size
                let avail = max(0, min(size, segment.count - start))
                if avail > 0 { dst.copyMemory(from: segment.baseAddress! + start, byteCount: avail) }
                if avail < size { (dst + avail).initializeMemory(as: UInt8.self, repeating: 0, count: size - avail) }
                data[i] = dst.assumingMemoryBound(to: UInt8.self)
            }
        }
        var coding = parity.map { Optional($0.assumingMemoryBound(to: UInt8.self)) }
        ec_encode_data(Int32(size), Int32(k), Int32(n - k), &encodeTables, &data, &coding)
    }

    /// All n pieces of `segment`, each `pieceSize` bytes.
    public func encode(_ segment: [UInt8]) -> [[UInt8]] {
        let size = scheme.pieceSize(segmentLength: segment.count)
        var pieces: [[UInt8]] = (0..<k).map { i in
            let start = min(segment.count, i * size), end = min(segment.count, start + size)
            var p = Array(segment[start..<end])
            p.append(contentsOf: repeatElement(0, count: size - p.count))
            return p
        }
        var parity = [[UInt8]](repeating: [UInt8](repeating: 0, count: size), count: n - k)
        if size > 0 {
            let ptrs = (0..<(n - k)).map { _ in UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64) }
            defer { ptrs.forEach { $0.deallocate() } }
            segment.withUnsafeBytes { encodeParity($0, into: ptrs) }
            for j in 0..<(n - k) { parity[j] = Array(UnsafeRawBufferPointer(start: ptrs[j], count: size)) }
        }
        pieces.append(contentsOf: parity)
        return pieces
    }

    // MARK: reconstruct

    /// Rebuilds the pieces `targets` from any k of `available` (index → the
    /// same byte range of each piece, all `length` bytes), writing each into
    /// the matching `outputs` buffer. This one call serves decode, ranged
    /// reads and repair.
    public func reconstruct(targets: [Int], from available: [Int: UnsafeRawBufferPointer], length: Int,
                            into outputs: [UnsafeMutableRawPointer]) throws(ErasureCodeError) {
        precondition(targets.count == outputs.count)
        for t in targets where t < 0 || t >= n { throw .pieceIndexOutOfRange(t) }
        for (i, buf) in available {
            guard i >= 0, i < n else { throw .pieceIndexOutOfRange(i) }
            guard buf.count == length else { throw .pieceSizeMismatch(index: i, expected: length, actual: buf.count) }
        }
        guard available.count >= k else { throw .notEnoughPieces(have: available.count, need: k) }
        guard !targets.isEmpty, length > 0 else { return }
        // Data pieces first: when all are present, data targets are copies.
        let sources = Array(available.keys.sorted().prefix(k))
        var pending: [Int] = []
        var pendingOut: [UnsafeMutableRawPointer] = []
        for (t, out) in zip(targets, outputs) {
            if let src = available[t] { out.copyMemory(from: src.baseAddress!, byteCount: length) } else {
                pending.append(t); pendingOut.append(out)
            }
        }
        guard !pending.isEmpty else { return }
        var tables = try decodeTables(sources: sources, targets: pending)
        var data = sources.map { UnsafeMutablePointer(mutating: available[$0]!.baseAddress!.assumingMemoryBound(to: UInt8.self)) as UnsafeMutablePointer<UInt8>? }
        var coding = pendingOut.map { Optional($0.assumingMemoryBound(to: UInt8.self)) }
        ec_encode_data(Int32(length), Int32(k), Int32(pending.count), &tables, &data, &coding)
    }

    /// Tables mapping the k `sources` pieces to each target: row(target) =
    /// G[target] · (G restricted to sources)⁻¹ over GF(256).
    private func decodeTables(sources: [Int], targets: [Int]) throws(ErasureCodeError) -> [UInt8] {
        let key = DecodeKey(sources: sources, targets: targets)
        if let cached = decodeCache[key] { return cached }
        var sub = [UInt8](repeating: 0, count: k * k)
        for (r, s) in sources.enumerated() { for c in 0..<k { sub[r * k + c] = matrix[s * k + c] } }
        var inv = [UInt8](repeating: 0, count: k * k)
        guard gf_invert_matrix(&sub, &inv, Int32(k)) == 0 else { throw .singularMatrix }
        var rows = [UInt8](repeating: 0, count: targets.count * k)
        for (r, t) in targets.enumerated() {
            for c in 0..<k {
                var acc: UInt8 = 0
                for l in 0..<k { acc ^= gf_mul(matrix[t * k + l], inv[l * k + c]) }
                rows[r * k + c] = acc
            }
        }
        var tables = [UInt8](repeating: 0, count: k * targets.count * 32)
        ec_init_tables(Int32(k), Int32(targets.count), &rows, &tables)
        if decodeCache.count > 256 { decodeCache.removeAll(keepingCapacity: true) }
        decodeCache[key] = tables
        return tables
    }

    /// Rebuilds the whole segment from any k pieces.
    public func decode(_ pieces: [Int: [UInt8]], segmentLength: Int) throws(ErasureCodeError) -> [UInt8] {
        try decodeRange(pieces, pieceRange: 0..<scheme.pieceSize(segmentLength: segmentLength),
                        segmentLength: segmentLength, offset: 0, length: segmentLength)
    }

    /// The range of bytes within every piece that covers `offset..<offset+length`
    /// of the segment: fetch this range from any k pieces, then call `decodeRange`.
    public func pieceRange(segmentLength: Int, offset: Int, length: Int) throws(ErasureCodeError) -> Range<Int> {
        guard offset >= 0, length >= 0, offset + length <= segmentLength else {
            throw .rangeOutOfBounds(offset: offset, length: length, segmentLength: segmentLength)
        }
        let size = scheme.pieceSize(segmentLength: segmentLength)
        guard length > 0, size > 0 else { return 0..<0 }
        let first = offset / size, last = (offset + length - 1) / size
        if first == last { return (offset - first * size)..<(offset + length - first * size) }
        // A range spanning pieces needs the tail of one and the head of the
        // next at the same offsets of every piece: the whole piece width.
        return 0..<size
    }

    /// Rebuilds `offset..<offset+length` of the segment from the bytes
    /// `pieceRange` (see `pieceRange`) of any k pieces.
    public func decodeRange(_ pieces: [Int: [UInt8]], pieceRange: Range<Int>, segmentLength: Int,
                            offset: Int, length: Int) throws(ErasureCodeError) -> [UInt8] {
        guard offset >= 0, length >= 0, offset + length <= segmentLength else {
            throw .rangeOutOfBounds(offset: offset, length: length, segmentLength: segmentLength)
        }
        guard length > 0 else { return [] }
        let size = scheme.pieceSize(segmentLength: segmentLength)
        let first = offset / size, last = (offset + length - 1) / size
        let width = pieceRange.count
        var out = [UInt8](repeating: 0, count: length)
        var buffers = [Int: UnsafeMutableRawPointer]()
        defer { buffers.values.forEach { $0.deallocate() } }
        for d in first...last { buffers[d] = UnsafeMutableRawPointer.allocate(byteCount: max(width, 1), alignment: 64) }
        try withPointers(pieces) { (avail) throws(ErasureCodeError) in
            let targets = Array(first...last)
            try reconstruct(targets: targets, from: avail, length: width, into: targets.map { buffers[$0]! })
        }
        // Copy each data piece's share of the requested range.
        var written = 0
        for d in first...last {
            let segStart = max(offset, d * size), segEnd = min(offset + length, (d + 1) * size)
            let inPiece = segStart - d * size - pieceRange.lowerBound
            precondition(inPiece >= 0 && inPiece + (segEnd - segStart) <= width, "pieceRange does not cover the request")
            out.withUnsafeMutableBytes { o in
                (o.baseAddress! + written).copyMemory(from: buffers[d]! + inPiece, byteCount: segEnd - segStart)
            }
            written += segEnd - segStart
        }
        return out
    }

    /// Rebuilds piece `index` in full from any k pieces (repair).
    public func rebuildPiece(_ index: Int, from pieces: [Int: [UInt8]], pieceSize: Int) throws(ErasureCodeError) -> [UInt8] {
        let out = UnsafeMutableRawPointer.allocate(byteCount: max(pieceSize, 1), alignment: 64)
        defer { out.deallocate() }
        try withPointers(pieces) { (avail) throws(ErasureCodeError) in
            try reconstruct(targets: [index], from: avail, length: pieceSize, into: [out])
        }
        return Array(UnsafeRawBufferPointer(start: out, count: pieceSize))
    }

    private func withPointers(_ pieces: [Int: [UInt8]],
                              _ body: ([Int: UnsafeRawBufferPointer]) throws(ErasureCodeError) -> Void) throws(ErasureCodeError) {
        // Nested withUnsafeBytes keeps every array's storage pinned for the call.
        var result: Result<Void, ErasureCodeError> = .success(())
        var views = [Int: UnsafeRawBufferPointer]()
        func recurse(_ idx: Int, _ keys: [Int]) {
            if idx == keys.count {
                do throws(ErasureCodeError) { try body(views) } catch { result = .failure(error) }
                return
            }
            pieces[keys[idx]]!.withUnsafeBytes { buf in
                views[keys[idx]] = buf
                recurse(idx + 1, keys)
            }
        }
        recurse(0, Array(pieces.keys))
        try result.get()
    }
}
