import GranaryCore

/// A 2048-bit Bloom filter of topics with 4 hash functions taken from
/// BLAKE2b(topic). Sized for the few hundred topic strings the market uses:
/// with 300 distinct topics the false-positive rate stays near 1%.
public struct BloomFilter: Hashable, Sendable {
    public static let bitCount = 2048
    public static let byteCount = bitCount / 8
    static let hashCount = 4

    public private(set) var bytes: [UInt8]

    public init() { bytes = [UInt8](repeating: 0, count: Self.byteCount) }

    /// Accepts exactly `byteCount` bytes from the wire.
    public init?(bytes: [UInt8]) {
        guard bytes.count == Self.byteCount else { return nil }
        self.bytes = bytes
    }

    static func positions(_ topic: String) -> [Int] {
        let h = Blake2b.hash256(Array(topic.utf8)).bytes
        return (0..<hashCount).map { i in (Int(h[2 * i]) << 8 | Int(h[2 * i + 1])) % bitCount }
    }

    public mutating func insert(_ topic: String) {
        for p in Self.positions(topic) { bytes[p / 8] |= UInt8(1) << UInt8(p % 8) }
    }

    public func mightContain(_ topic: String) -> Bool {
        Self.positions(topic).allSatisfy { bytes[$0 / 8] & (UInt8(1) << UInt8($0 % 8)) != 0 }
    }

    public mutating func formUnion(_ other: BloomFilter) {
        for i in 0..<Self.byteCount { bytes[i] |= other.bytes[i] }
    }

    public var isEmpty: Bool { bytes.allSatisfy { $0 == 0 } }
}

/// Quasar's attenuated Bloom filter: level i summarises the topics of the
/// subscribers i hops beyond the node that sent it (level 0: its own).
public struct AttenuatedBloomFilter: Hashable, Sendable {
    public static let depth = 3
    public var levels: [BloomFilter]

    public init() { levels = Array(repeating: BloomFilter(), count: Self.depth) }

    public init?(levels raw: [[UInt8]]) {
        guard raw.count == Self.depth else { return nil }
        var levels: [BloomFilter] = []
        for r in raw {
            guard let f = BloomFilter(bytes: r) else { return nil }
            levels.append(f)
        }
        self.levels = levels
    }

    /// The shallowest level matching any of `topics`, or nil.
    public func matchLevel(_ topics: [String]) -> Int? {
        for (i, level) in levels.enumerated() where topics.contains(where: level.mightContain) { return i }
        return nil
    }
}
