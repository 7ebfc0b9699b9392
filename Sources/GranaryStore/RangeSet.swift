/// Sorted, merged, non-overlapping half-open byte ranges within a chunk:
/// what has been written over a base that is not cached yet.
struct RangeSet: Equatable {
    private(set) var ranges: [(Int, Int)] = []

    static func == (a: RangeSet, b: RangeSet) -> Bool {
        a.ranges.count == b.ranges.count && zip(a.ranges, b.ranges).allSatisfy { $0 == $1 }
    }

    mutating func insert(_ start: Int, _ end: Int) {
        guard end > start else { return }
        var s = start, e = end
        var out: [(Int, Int)] = []
        out.reserveCapacity(ranges.count + 1)
        var placed = false
        for r in ranges {
            if r.1 < s { out.append(r) }
            else if r.0 > e {
                if !placed { out.append((s, e)); placed = true }
                out.append(r)
            } else { s = min(s, r.0); e = max(e, r.1) }
        }
        if !placed { out.append((s, e)) }
        ranges = out
    }

    /// Drops everything at or beyond `limit`.
    mutating func clip(_ limit: Int) {
        ranges = ranges.compactMap { r in r.0 >= limit ? nil : (r.0, min(r.1, limit)) }
    }

    func covers(_ start: Int, _ end: Int) -> Bool {
        if end <= start { return true }
        for r in ranges where r.0 <= start && r.1 >= end { return true }
        return false
    }

    /// The gaps in [0, limit): where base bytes still belong.
    func gaps(below limit: Int) -> [(Int, Int)] {
        var out: [(Int, Int)] = []
        var pos = 0
        for r in ranges {
            if r.0 >= limit { break }
            if r.0 > pos { out.append((pos, r.0)) }
            pos = max(pos, r.1)
        }
        if pos < limit { out.append((pos, limit)) }
        return out
    }

    var encoded: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(ranges.count * 16)
        for r in ranges {
            withUnsafeBytes(of: Int64(r.0).littleEndian) { out.append(contentsOf: $0) }
            withUnsafeBytes(of: Int64(r.1).littleEndian) { out.append(contentsOf: $0) }
        }
        return out
    }

    init() {}
    init(encoded: [UInt8]) {
        var i = 0
        while i + 16 <= encoded.count {
            var a: Int64 = 0, b: Int64 = 0
            withUnsafeMutableBytes(of: &a) { $0.copyBytes(from: encoded[i..<i + 8]) }
            withUnsafeMutableBytes(of: &b) { $0.copyBytes(from: encoded[i + 8..<i + 16]) }
            ranges.append((Int(Int64(littleEndian: a)), Int(Int64(littleEndian: b))))
            i += 16
        }
    }
}
