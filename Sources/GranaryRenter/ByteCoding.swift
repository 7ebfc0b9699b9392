import Foundation
import GranaryCore

/// Appends fixed-width little-endian integers and length-prefixed bytes:
/// the compact formats of snapshot manifests and pointers.
struct ByteWriter {
    private(set) var bytes: [UInt8] = []

    mutating func u8(_ v: Int) { bytes.append(UInt8(truncatingIfNeeded: v)) }
    mutating func u16(_ v: Int) { withUnsafeBytes(of: UInt16(truncatingIfNeeded: v).littleEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func raw(_ b: [UInt8]) { bytes += b }
    mutating func hash(_ h: Hash256) { bytes += h.bytes }
    /// Up to 65,535 bytes, prefixed with their count.
    mutating func short(_ b: [UInt8]) { u16(b.count); bytes += b }
    /// Any length, prefixed with a 64-bit count.
    mutating func long(_ b: [UInt8]) { u64(UInt64(b.count)); bytes += b }
}

/// Why bytes could not be decoded (too short, bad magic, bad value).
public struct ByteCodingError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

/// Reads what `ByteWriter` wrote, refusing to run past the end.
struct ByteReader {
    private let bytes: [UInt8]
    private(set) var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { offset == bytes.count }

    mutating func take(_ n: Int) throws(ByteCodingError) -> ArraySlice<UInt8> {
        guard n >= 0, n <= bytes.count - offset else {
            throw ByteCodingError("truncated: \(n) bytes needed at offset \(offset) of \(bytes.count)")
        }
        defer { offset += n }
        return bytes[offset..<(offset + n)]
    }

    mutating func u8() throws(ByteCodingError) -> Int { Int(try take(1).first!) }
    mutating func u16() throws(ByteCodingError) -> Int {
        let s = try take(2)
        return Int(s[s.startIndex]) | Int(s[s.startIndex + 1]) << 8
    }
    mutating func u64() throws(ByteCodingError) -> UInt64 {
        var v: UInt64 = 0
        for (i, b) in try take(8).enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
        return v
    }
    mutating func raw(_ n: Int) throws(ByteCodingError) -> [UInt8] { Array(try take(n)) }
    mutating func hash() throws(ByteCodingError) -> Hash256 { Hash256(bytes: try take(32))! }
    mutating func short() throws(ByteCodingError) -> [UInt8] { try raw(try u16()) }
    mutating func long() throws(ByteCodingError) -> [UInt8] {
        let n = try u64()
        guard n <= UInt64(Int.max) else { throw ByteCodingError("length \(n) is impossible") }
        return try raw(Int(n))
    }
    mutating func expect(_ magic: [UInt8], what: String) throws(ByteCodingError) {
        guard Array(try take(magic.count)) == magic else { throw ByteCodingError("not a \(what) (wrong header)") }
    }
}
