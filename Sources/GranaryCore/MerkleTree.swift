/// A proof that some consecutive leaves belong to a tree with a known root.
/// `hashes` are the sibling hashes, bottom level first, left before right.
public struct MerkleProof: Sendable, Equatable {
    public var leaves: Range<Int>
    public var leafCount: Int
    public var hashes: [Hash256]

    public init(leaves: Range<Int>, leafCount: Int, hashes: [Hash256]) {
        self.leaves = leaves; self.leafCount = leafCount; self.hashes = hashes
    }

    /// The number of sibling hashes a valid proof of this shape carries: a
    /// proof of any other depth is refused without hashing.
    public static func expectedHashCount(leaves: Range<Int>, leafCount: Int) -> Int? {
        guard leafCount > 0, !leaves.isEmpty, leaves.lowerBound >= 0, leaves.upperBound <= leafCount else { return nil }
        var lo = leaves.lowerBound, hi = leaves.upperBound, c = leafCount, count = 0
        while c > 1 {
            if lo % 2 == 1 { count += 1; lo -= 1 }
            if hi % 2 == 1 && hi < c { count += 1; hi += 1 }
            lo /= 2; hi = (hi + 1) / 2; c = (c + 1) / 2
        }
        return count
    }
}

/// Binary Merkle tree over 4 KiB leaves with BLAKE3, leaf and inner hashes
/// domain-separated by BLAKE3's keyed mode (free: the key is the initial
/// chaining value, no extra block), an odd node at the end of a level
/// promoted unchanged. Wire version 2; version 1 used BLAKE2b.
///
/// The renter keeps only the root; a farmer keeps the leaf hashes in its
/// index (32 bytes per 4 KiB) and rebuilds the inner levels in memory, to
/// answer audits and range proofs without rereading the piece.
public struct MerkleTree: Sendable {
    public static let leafSize = 4096
    static let leafKey = Blake3.Key(domain: "granary.merkle.leaf.v2")
    static let nodeKey = Blake3.Key(domain: "granary.merkle.node.v2")

    /// levels[0] holds leaf hashes, the last level holds the root; each is a
    /// flat array of 32-byte hashes.
    public private(set) var levels: [[UInt8]]

    public var leafCount: Int { levels[0].count / 32 }
    public var root: Hash256 { levels[levels.count - 1].withUnsafeBytes { Hash256(unsafeBytes: $0.baseAddress!) } }

    /// Leaves in a piece of `byteCount` bytes (an empty piece has one empty leaf).
    public static func leafCount(byteCount: Int) -> Int { max(1, (byteCount + leafSize - 1) / leafSize) }

    public init(data: UnsafeRawBufferPointer) {
        let count = Self.leafCount(byteCount: data.count)
        let leaves = [UInt8](unsafeUninitializedCapacity: count * 32) { out, initialized in
            Blake3.leaves(data, leafSize: Self.leafSize, key: Self.leafKey, into: out.baseAddress!)
            initialized = count * 32
        }
        self.init(leafHashes: leaves)
    }

    public init(data: [UInt8]) { self = data.withUnsafeBytes { MerkleTree(data: $0) } }

    /// Builds the inner levels over already-hashed leaves.
    public init(leafHashes: [UInt8]) {
        precondition(leafHashes.count >= 32 && leafHashes.count % 32 == 0)
        var levels = [leafHashes]
        let key = Self.nodeKey
        while levels[levels.count - 1].count > 32 {
            let below = levels[levels.count - 1]
            let c = below.count / 32
            var above = [UInt8](repeating: 0, count: ((c + 1) / 2) * 32)
            below.withUnsafeBytes { b in
                above.withUnsafeMutableBytes { a in
                    for j in 0..<(c / 2) {
                        Blake3.hash256(b.baseAddress! + j * 64, count: 64, key: key, into: a.baseAddress! + j * 32)
                    }
                    if c % 2 == 1 { (a.baseAddress! + (c / 2) * 32).copyMemory(from: b.baseAddress! + (c - 1) * 32, byteCount: 32) }
                }
            }
            levels.append(above)
        }
        self.levels = levels
    }

    /// Restores a tree from its serialised levels (as stored by a farmer).
    public init?(serialized: [UInt8], leafCount: Int) {
        guard leafCount > 0 else { return nil }
        var sizes: [Int] = []
        var c = leafCount
        while true { sizes.append(c * 32); if c == 1 { break }; c = (c + 1) / 2 }
        guard sizes.reduce(0, +) == serialized.count else { return nil }
        var levels: [[UInt8]] = []
        var offset = 0
        for s in sizes { levels.append(Array(serialized[offset..<(offset + s)])); offset += s }
        self.levels = levels
    }

    public var serialized: [UInt8] { levels.flatMap { $0 } }

    /// Hash of the node at `index` of `level`.
    func node(_ level: Int, _ index: Int) -> Hash256 {
        levels[level].withUnsafeBytes { Hash256(unsafeBytes: $0.baseAddress! + index * 32) }
    }

    /// Proof for leaves `range` (a single audit leaf is `i..<i+1`).
    public func proof(leaves range: Range<Int>) -> MerkleProof? {
        guard MerkleProof.expectedHashCount(leaves: range, leafCount: leafCount) != nil else { return nil }
        var hashes: [Hash256] = []
        var lo = range.lowerBound, hi = range.upperBound, c = leafCount, level = 0
        while c > 1 {
            if lo % 2 == 1 { hashes.append(node(level, lo - 1)); lo -= 1 }
            if hi % 2 == 1 && hi < c { hashes.append(node(level, hi)); hi += 1 }
            lo /= 2; hi = (hi + 1) / 2; c = (c + 1) / 2; level += 1
        }
        return MerkleProof(leaves: range, leafCount: leafCount, hashes: hashes)
    }

    public func proof(leaf index: Int) -> MerkleProof? { proof(leaves: index..<(index + 1)) }

    /// Leaf range covering bytes `range` of a piece.
    public static func leaves(covering range: Range<Int>) -> Range<Int> {
        let lo = range.lowerBound / leafSize
        let hi = max(lo + 1, (range.upperBound + leafSize - 1) / leafSize)
        return lo..<hi
    }

    /// Verifies that `leafData` (the concatenated bytes of `proof.leaves`:
    /// whole 4 KiB leaves, the piece's last leaf possibly shorter) hashes up
    /// to `root`. Checks the range, the leaf sizes and the exact depth.
    public static func verify(_ proof: MerkleProof, leafData: UnsafeRawBufferPointer, root: Hash256) -> Bool {
        guard let expected = MerkleProof.expectedHashCount(leaves: proof.leaves, leafCount: proof.leafCount),
              expected == proof.hashes.count else { return false }
        let n = proof.leaves.count
        let includesLast = proof.leaves.upperBound == proof.leafCount
        // All leaves are full except possibly the tree's last, which is 1...4096
        // bytes (or 0 bytes only for a one-leaf, empty piece).
        let minBytes = includesLast ? (n - 1) * leafSize + (proof.leafCount == 1 ? 0 : 1) : n * leafSize
        guard leafData.count >= minBytes, leafData.count <= n * leafSize else { return false }
        // The checks above make leafData exactly n leaves.
        var current = withUnsafeTemporaryAllocation(byteCount: n * 32, alignment: 8) { hashes in
            Blake3.leaves(leafData, leafSize: leafSize, key: leafKey, into: hashes.baseAddress!)
            return (0..<n).map { Hash256(unsafeBytes: UnsafeRawPointer(hashes.baseAddress! + $0 * 32)) }
        }
        var out = [UInt8](repeating: 0, count: 32)
        var lo = proof.leaves.lowerBound, hi = proof.leaves.upperBound, c = proof.leafCount
        var next = proof.hashes.makeIterator()
        var pair = [UInt8](repeating: 0, count: 64)
        while c > 1 {
            if lo % 2 == 1 { current.insert(next.next()!, at: 0); lo -= 1 }
            if hi % 2 == 1 && hi < c { current.append(next.next()!); hi += 1 }
            var above: [Hash256] = []
            var i = 0
            while i < current.count {
                if i + 1 < current.count {
                    pair.withUnsafeMutableBytes { p in
                        current[i].write(to: p.baseAddress!)
                        current[i + 1].write(to: p.baseAddress! + 32)
                        out.withUnsafeMutableBytes { o in
                            Blake3.hash256(UnsafeRawPointer(p.baseAddress!), count: 64, key: nodeKey, into: o.baseAddress!)
                            above.append(Hash256(unsafeBytes: o.baseAddress!))
                        }
                    }
                } else {
                    above.append(current[i])  // promoted odd node
                }
                i += 2
            }
            current = above
            lo /= 2; hi = (hi + 1) / 2; c = (c + 1) / 2
        }
        return current.count == 1 && current[0] == root
    }

    public static func verify(_ proof: MerkleProof, leafData: [UInt8], root: Hash256) -> Bool {
        leafData.withUnsafeBytes { verify(proof, leafData: $0, root: root) }
    }
}

/// Builds a piece's Merkle tree from bytes that arrive in parts (a farmer
/// hashing an upload as it streams in). Not thread-safe: one per upload.
public struct MerkleTreeBuilder {
    private var leafHashes: [UInt8] = []
    private var partial: [UInt8] = []
    public private(set) var byteCount = 0

    public init(expectedByteCount: Int = 0) {
        leafHashes.reserveCapacity(MerkleTree.leafCount(byteCount: expectedByteCount) * 32)
        partial.reserveCapacity(MerkleTree.leafSize)
    }

    public mutating func append(_ data: UnsafeRawBufferPointer) {
        guard var p = data.baseAddress else { return }
        var remaining = data.count
        byteCount += remaining
        if !partial.isEmpty {
            let take = min(remaining, MerkleTree.leafSize - partial.count)
            partial.append(contentsOf: UnsafeRawBufferPointer(start: p, count: take))
            p += take; remaining -= take
            if partial.count == MerkleTree.leafSize {
                let full = partial
                full.withUnsafeBytes { hashLeaf($0.baseAddress!, count: MerkleTree.leafSize) }
                partial.removeAll(keepingCapacity: true)
            }
        }
        while remaining >= MerkleTree.leafSize {
            hashLeaf(p, count: MerkleTree.leafSize)
            p += MerkleTree.leafSize; remaining -= MerkleTree.leafSize
        }
        if remaining > 0 { partial.append(contentsOf: UnsafeRawBufferPointer(start: p, count: remaining)) }
    }

    public mutating func append(_ data: [UInt8]) { data.withUnsafeBytes { append($0) } }

    private mutating func hashLeaf(_ p: UnsafeRawPointer, count: Int) {
        let start = leafHashes.count
        leafHashes.append(contentsOf: repeatElement(0, count: 32))
        leafHashes.withUnsafeMutableBytes { out in
            Blake3.hash256(p, count: count, key: MerkleTree.leafKey, into: out.baseAddress! + start)
        }
    }

    public mutating func finish() -> MerkleTree {
        if !partial.isEmpty || leafHashes.isEmpty {
            let last = partial
            last.withUnsafeBytes { buf in
                var dummy: UInt8 = 0
                withUnsafeBytes(of: &dummy) { d in
                    hashLeaf(buf.baseAddress ?? d.baseAddress!, count: last.count)
                }
            }
            partial.removeAll()
        }
        return MerkleTree(leafHashes: leafHashes)
    }
}
