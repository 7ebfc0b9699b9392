import GranaryCore
import Testing

@Suite struct MerkleTreeTests {
    /// Non-periodic bytes: no two leaves are equal.
    static func data(_ n: Int, seed: UInt64 = 1) -> [UInt8] { ErasureCoderTests.bytes(n, seed: seed) }
    static func leaf(_ data: [UInt8], _ i: Int) -> [UInt8] {
        Array(data[(i * 4096)..<min(data.count, (i + 1) * 4096)])
    }

    @Test(arguments: [0, 1, 4096, 4097, 3 * 4096, 5 * 4096 + 17, 13 * 4096])
    func everyLeafProofVerifies(size: Int) {
        let d = Self.data(size)
        let tree = MerkleTree(data: d)
        #expect(tree.leafCount == MerkleTree.leafCount(byteCount: size))
        for i in 0..<tree.leafCount {
            let proof = tree.proof(leaf: i)!
            #expect(MerkleTree.verify(proof, leafData: Self.leaf(d, i), root: tree.root), "leaf \(i) of \(size)")
        }
        #expect(tree.proof(leaf: tree.leafCount) == nil)
    }

    /// The construction every farmer and renter must agree on (transfer
    /// protocol 2), computed independently with b3sum and Python's BLAKE2b:
    /// leaf = BLAKE3 keyed with BLAKE2b-256("granary.merkle.leaf.v2"), node =
    /// BLAKE3 keyed with BLAKE2b-256("granary.merkle.node.v2") over both children.
    @Test func knownRoots() {
        let pattern = { (n: Int) in (0..<n).map { UInt8($0 % 251) } }
        #expect(MerkleTree(data: pattern(10)).root.hex == "96e101143315c6359b674f0377863145ed00017cec3603321a4f855bb23e5a9c")
        #expect(MerkleTree(data: pattern(4096 + 100)).root.hex == "7cd9a5115265f257d3b6162794af50cf802bc4154ba91c9ca0b4a7f0dd9138a5")
    }

    @Test func tamperedProofsFail() {
        let d = Self.data(7 * 4096 + 100)
        let other = MerkleTree(data: Self.data(7 * 4096 + 100, seed: 2))
        let tree = MerkleTree(data: d)
        let proof = tree.proof(leaf: 3)!
        let leaf = Self.leaf(d, 3)
        // A flipped byte in the leaf or in any proof hash.
        var badLeaf = leaf; badLeaf[100] ^= 1
        #expect(!MerkleTree.verify(proof, leafData: badLeaf, root: tree.root))
        for h in 0..<proof.hashes.count {
            var bad = proof
            var bytes = bad.hashes[h].bytes; bytes[0] ^= 0x80
            bad.hashes[h] = Hash256(bytes: bytes)!
            #expect(!MerkleTree.verify(bad, leafData: leaf, root: tree.root))
        }
        // The wrong index, the wrong depth, another piece's leaf or root.
        var wrongIndex = proof; wrongIndex.leaves = 2..<3
        #expect(!MerkleTree.verify(wrongIndex, leafData: leaf, root: tree.root), "wrong index")
        var shorter = proof; shorter.hashes.removeLast()
        #expect(!MerkleTree.verify(shorter, leafData: leaf, root: tree.root))
        var longer = proof; longer.hashes.append(.zero)
        #expect(!MerkleTree.verify(longer, leafData: leaf, root: tree.root))
        #expect(!MerkleTree.verify(proof, leafData: leaf, root: other.root))
        #expect(!MerkleTree.verify(proof, leafData: Self.leaf(Self.data(8 * 4096, seed: 3), 3), root: tree.root), "another piece's leaf")
    }

    @Test func innerNodeCannotPassAsLeaf() {
        let d = Self.data(8 * 4096)
        let tree = MerkleTree(data: d)
        // Level 1 node 0 is H(leaf0 || leaf1); present its children as a "leaf".
        let children = Array(tree.levels[0][0..<64])
        var proof = tree.proof(leaf: 0)!
        proof.hashes.removeFirst()   // depth of an inner node
        proof.leafCount = 4
        #expect(!MerkleTree.verify(proof, leafData: children, root: tree.root))
        proof.leafCount = 8
        #expect(!MerkleTree.verify(proof, leafData: children, root: tree.root))
    }

    @Test func rangeProofs() {
        let d = Self.data(11 * 4096 + 5)
        let tree = MerkleTree(data: d)
        for lo in 0..<tree.leafCount {
            for hi in (lo + 1)...tree.leafCount {
                let proof = tree.proof(leaves: lo..<hi)!
                let bytes = Array(d[(lo * 4096)..<min(d.count, hi * 4096)])
                #expect(MerkleTree.verify(proof, leafData: bytes, root: tree.root), "\(lo)..<\(hi)")
                if hi - lo > 1 {
                    #expect(!MerkleTree.verify(proof, leafData: Array(bytes.dropLast(4096)), root: tree.root))
                }
            }
        }
        #expect(MerkleTree.leaves(covering: 4095..<4097) == 0..<2)
        #expect(MerkleTree.leaves(covering: 8192..<8193) == 2..<3)
    }

    @Test func builderAndSerializationMatch() {
        let d = Self.data(9 * 4096 + 1234)
        let tree = MerkleTree(data: d)
        var builder = MerkleTreeBuilder()
        var offset = 0
        for step in [1, 4095, 1, 10_000, 7, 100_000] where offset < d.count {
            let end = min(d.count, offset + step)
            builder.append(Array(d[offset..<end]))
            offset = end
        }
        builder.append(Array(d[offset...]))
        #expect(builder.finish().root == tree.root)
        let restored = MerkleTree(serialized: tree.serialized, leafCount: tree.leafCount)
        #expect(restored?.root == tree.root)
        #expect(MerkleTree(serialized: Array(tree.serialized.dropLast()), leafCount: tree.leafCount) == nil)
        var empty = MerkleTreeBuilder()
        #expect(empty.finish().root == MerkleTree(data: []).root)
    }
}
