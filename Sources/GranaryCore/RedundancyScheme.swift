/// Why a redundancy scheme or an erasure-code call was refused.
public enum ErasureCodeError: Error, Equatable, CustomStringConvertible {
    case invalidScheme(String)
    case notEnoughPieces(have: Int, need: Int)
    case pieceSizeMismatch(index: Int, expected: Int, actual: Int)
    case pieceIndexOutOfRange(Int)
    case rangeOutOfBounds(offset: Int, length: Int, segmentLength: Int)
    case singularMatrix

    public var description: String {
        switch self {
        case let .invalidScheme(why): return "invalid redundancy scheme: \(why)"
        case let .notEnoughPieces(have, need): return "need \(need) pieces to decode, have \(have)"
        case let .pieceSizeMismatch(i, e, a): return "piece \(i) has \(a) bytes, expected \(e)"
        case let .pieceIndexOutOfRange(i): return "piece index \(i) out of range"
        case let .rangeOutOfBounds(o, l, s): return "range \(o)+\(l) outside segment of \(s) bytes"
        case .singularMatrix: return "decode matrix is singular"
        }
    }
}

/// Storj v3's four numbers: `k` pieces rebuild a segment, repair starts
/// below `r` healthy pieces, an upload succeeds once `s` are stored (the
/// slowest n−s are cancelled), `n` pieces are generated.
public struct RedundancyScheme: Hashable, Sendable, Codable, CustomStringConvertible {
    public let k: Int
    public let r: Int
    public let s: Int
    public let n: Int

    /// The embedded network's default: survives the loss of any 3 farmers.
    public static let embeddedDefault = try! RedundancyScheme(k: 4, r: 5, s: 7, n: 8)

    public init(k: Int, r: Int, s: Int, n: Int) throws(ErasureCodeError) {
        guard k >= 1 else { throw .invalidScheme("k must be at least 1") }
        guard k <= r, r <= s, s <= n else { throw .invalidScheme("need k ≤ r ≤ s ≤ n, got \(k)/\(r)/\(s)/\(n)") }
        guard n <= 255 else { throw .invalidScheme("n must be at most 255 (GF(256))") }
        self.k = k; self.r = r; self.s = s; self.n = n
    }

    /// Parses "k/r/s/n".
    public init(parsing text: String) throws(ErasureCodeError) {
        let parts = text.split(separator: "/").compactMap { Int($0) }
        guard parts.count == 4 else { throw .invalidScheme("expected k/r/s/n, got \(text)") }
        try self.init(k: parts[0], r: parts[1], s: parts[2], n: parts[3])
    }

    public var parityCount: Int { n - k }

    /// Bytes in each piece of a segment of `segmentLength` bytes: the data
    /// pieces are its contiguous slices, the last zero-padded.
    public func pieceSize(segmentLength: Int) -> Int { (segmentLength + k - 1) / k }

    public var description: String { "\(k)/\(r)/\(s)/\(n)" }
}
