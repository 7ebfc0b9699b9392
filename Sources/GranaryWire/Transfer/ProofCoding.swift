import Foundation
import GranaryCore

extension Granary_MerkleProof {
    /// Largest piece (in leaves) a proof may describe: 1 GiB of 4 KiB leaves.
    public static let maxTreeLeafCount = 1 << 18

    public init(_ proof: MerkleProof) {
        self.init()
        firstLeaf = UInt64(proof.leaves.lowerBound)
        leafCountCovered = UInt64(proof.leaves.count)
        treeLeafCount = UInt64(proof.leafCount)
        var bytes = [UInt8](repeating: 0, count: proof.hashes.count * 32)
        bytes.withUnsafeMutableBytes { p in for (i, h) in proof.hashes.enumerated() { h.write(to: p.baseAddress! + i * 32) } }
        hashes = Data(bytes)
    }

    /// The proof, with every count bounded and the number of hashes exactly
    /// what a proof of this shape needs; nil otherwise.
    public func decoded() -> MerkleProof? {
        guard treeLeafCount > 0, treeLeafCount <= UInt64(Self.maxTreeLeafCount),
              leafCountCovered > 0, firstLeaf < treeLeafCount, leafCountCovered <= treeLeafCount - firstLeaf,
              hashes.count % 32 == 0 else { return nil }
        let leaves = Int(firstLeaf)..<Int(firstLeaf + leafCountCovered)
        guard let expected = MerkleProof.expectedHashCount(leaves: leaves, leafCount: Int(treeLeafCount)),
              expected == hashes.count / 32 else { return nil }
        let list = hashes.withUnsafeBytes { raw in
            (0..<expected).map { Hash256(unsafeBytes: raw.baseAddress! + $0 * 32) }
        }
        return MerkleProof(leaves: leaves, leafCount: Int(treeLeafCount), hashes: list)
    }
}
