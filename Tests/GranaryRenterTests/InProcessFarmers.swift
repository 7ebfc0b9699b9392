import Foundation
import GranaryCore
import GranaryRenter

/// Farmers inside the test process, behind the same `FarmerLink` seam the
/// real transfer protocol implements: they keep pieces in memory with their
/// Merkle trees and answer ranged reads and audits with real proofs. Used
/// only by the fast unit tests of the engine's decisions (placement, long
/// tail, audit verdicts, repair); `RealNetworkTests` runs the same
/// scenarios against `granary farm` processes.
final class InProcessFarmers: FarmerLink, ContractSource, @unchecked Sendable {
    enum Behaviour { case normal, offline, hang, corrupt, slow }

    // A lock: the seam's methods run concurrently from many tasks.
    private let lock = NSLock()
    private var pieces: [Hash256: [Hash256: (bytes: [UInt8], tree: MerkleTree)]] = [:]
    private var behaviour: [Hash256: Behaviour] = [:]
    private(set) var contacts: [FarmerContact] = []
    private var paid: [Hash256: UInt64] = [:]

    init(count: Int) {
        for i in 0..<count {
            let id = NodeIdentity(seed: Array(repeating: UInt8(i + 1), count: 32))
            contacts.append(FarmerContact(id: id.id, publicKey: id.publicKey.bytes, address: "127.0.0.1:\(20000 + i)"))
        }
    }

    func set(_ farmer: Hash256, _ b: Behaviour) { lock.withLock { behaviour[farmer] = b } }
    func pieceCount(_ farmer: Hash256) -> Int { lock.withLock { pieces[farmer]?.count ?? 0 } }
    func paidTotal(_ contract: Hash256) -> UInt64 { lock.withLock { paid[contract] ?? 0 } }
    /// Range reads served per farmer.
    private(set) var reads: [Hash256: Int] = [:]
    func readCount(_ farmer: Hash256) -> Int { lock.withLock { reads[farmer] ?? 0 } }
    /// Piece stores started and range bytes asked for, over all farmers.
    private(set) var storesStarted = 0
    private(set) var bytesAskedFor = 0
    var storeCount: Int { lock.withLock { storesStarted } }
    var readBytes: Int { lock.withLock { bytesAskedFor } }

    private func check(_ farmer: Hash256) async throws {
        switch lock.withLock({ behaviour[farmer] ?? .normal }) {
        case .offline: throw FarmerLinkError.unreachable("connection refused")
        case .hang: try await Task.sleep(nanoseconds: 3_600_000_000_000)
        case .slow: try await Task.sleep(nanoseconds: 300_000_000)
        default: break
        }
    }

    func store(pieceID: Hash256, root: Hash256, bytes: ArraySlice<UInt8>, contract: ContractRecord) async throws {
        lock.withLock { storesStarted += 1 }
        try await check(contract.farmer.id)
        let tree = MerkleTree(data: Array(bytes))
        guard tree.root == root else { throw FarmerLinkError.refused("root mismatch") }
        lock.withLock { pieces[contract.farmer.id, default: [:]][pieceID] = (Array(bytes), tree) }
    }

    private func piece(_ farmer: Hash256, _ id: Hash256) throws -> (bytes: [UInt8], tree: MerkleTree) {
        guard var p = lock.withLock({ pieces[farmer]?[id] }) else { throw FarmerLinkError.pieceNotFound(id) }
        if lock.withLock({ behaviour[farmer] }) == .corrupt { for i in stride(from: 0, to: p.bytes.count, by: 1000) { p.bytes[i] ^= 0xff } }
        return p
    }

    func read(pieceID: Hash256, root: Hash256, pieceSize: Int, range: Range<Int>, contract: ContractRecord) async throws -> [UInt8] {
        lock.withLock { bytesAskedFor += range.count }
        try await check(contract.farmer.id)
        lock.withLock { reads[contract.farmer.id, default: 0] += 1 }
        let p = try piece(contract.farmer.id, pieceID)
        let leaves = MerkleTree.leaves(covering: range)
        let start = leaves.lowerBound * MerkleTree.leafSize
        let data = Array(p.bytes[start..<min(p.bytes.count, leaves.upperBound * MerkleTree.leafSize)])
        guard let proof = p.tree.proof(leaves: leaves), MerkleTree.verify(proof, leafData: data, root: root) else {
            throw FarmerLinkError.badProof("range does not verify")
        }
        return Array(data[(range.lowerBound - start)..<(range.upperBound - start)])
    }

    func delete(pieceID: Hash256, contract: ContractRecord) async throws {
        try await check(contract.farmer.id)
        let existed = lock.withLock { pieces[contract.farmer.id]?.removeValue(forKey: pieceID) != nil }
        if !existed { throw FarmerLinkError.pieceNotFound(pieceID) }
    }

    func audit(pieceID: Hash256, leaf: Int, contract: ContractRecord) async throws -> AuditAnswer {
        try await check(contract.farmer.id)
        let p = try piece(contract.farmer.id, pieceID)
        let start = leaf * MerkleTree.leafSize
        return AuditAnswer(leafData: Array(p.bytes[start..<min(p.bytes.count, start + MerkleTree.leafSize)]), proof: p.tree.proof(leaf: leaf)!)
    }

    func pay(contract: ContractRecord, cumulative: UInt64, sequence: UInt64) async throws {
        try await check(contract.farmer.id)
        lock.withLock { paid[contract.id] = cumulative }
    }

    func renew(contract: ContractRecord, newEnd: Date) async throws -> ContractRecord {
        try await check(contract.farmer.id)
        var c = contract
        c.end = newEnd
        return c
    }

    func reset(farmer: Hash256) async {}
    func shutdown() async {}

    /// How long a market round takes (`formContracts`).
    var roundDuration: Duration {
        get { lock.withLock { round } }
        set { lock.withLock { round = newValue } }
    }
    private var round: Duration = .zero

    func formContracts(count: Int, terms: ContractTerms, excluding: Set<Hash256>) async throws -> [ContractRecord] {
        try await Task.sleep(for: roundDuration)
        let now = Date()
        let states = lock.withLock { behaviour }
        return contacts.filter { c in !excluding.contains(c.id) && (states[c.id] ?? .normal) != .offline }
            .prefix(count).map {
                ContractRecord(id: .random(), farmer: $0, allowance: terms.allowance, pricePerAudit: 10,
                               auditInterval: terms.auditInterval, start: now, end: now + terms.duration, signedBytes: [1])
            }
    }
}
