import Foundation
import GranaryCore

/// How the renter reaches a farmer: its identity and its transfer address.
public struct FarmerContact: Sendable, Hashable, CustomStringConvertible {
    public var id: Hash256
    public var publicKey: [UInt8]
    /// HOST:PORT of the farmer's TCP transfer endpoint.
    public var address: String

    public init(id: Hash256, publicKey: [UInt8], address: String) {
        self.id = id; self.publicKey = publicKey; self.address = address
    }

    public var description: String { "\(id.short)@\(address)" }
}

/// A storage contract as the renter keeps it: the exact signed bytes (both
/// signatures) plus the terms the engine acts on, parsed once.
public struct ContractRecord: Sendable, Hashable {
    public var id: Hash256
    public var farmer: FarmerContact
    /// Bytes the farmer agreed to hold for this contract.
    public var allowance: Int64
    /// Price of one passed audit, in the channel's smallest unit.
    public var pricePerAudit: UInt64
    /// Seconds between audits.
    public var auditInterval: Double
    public var start: Date
    public var end: Date
    /// The countersigned contract envelope, exactly as exchanged.
    public var signedBytes: [UInt8]

    public init(id: Hash256, farmer: FarmerContact, allowance: Int64, pricePerAudit: UInt64,
                auditInterval: Double, start: Date, end: Date, signedBytes: [UInt8]) {
        self.id = id; self.farmer = farmer; self.allowance = allowance; self.pricePerAudit = pricePerAudit
        self.auditInterval = auditInterval; self.start = start; self.end = end; self.signedBytes = signedBytes
    }
}

/// What the renter asks for when it looks for contracts.
public struct ContractTerms: Sendable, Hashable {
    public var allowance: Int64
    public var duration: Double
    public var maxPricePerAudit: UInt64
    public var auditInterval: Double

    /// The smallest allowance worth a contract: the market asks for this
    /// much, so farmers with less free space than `allowance` still bid,
    /// and each contract gets min(allowance, the farmer's free space).
    public var minimumAllowance: Int64

    public init(allowance: Int64 = 4 << 30, duration: Double = 30 * 86_400,
                maxPricePerAudit: UInt64 = 1_000, auditInterval: Double = 3_600, minimumAllowance: Int64? = nil) {
        self.allowance = allowance; self.duration = duration
        self.maxPricePerAudit = maxPricePerAudit; self.auditInterval = auditInterval
        self.minimumAllowance = min(allowance, minimumAllowance ?? max(256 << 20, allowance / 16))
    }

    /// These terms with the allowance a farmer with `freeBytes` can take.
    func sized(toFree freeBytes: UInt64) -> ContractTerms {
        var t = self
        t.allowance = min(allowance, max(minimumAllowance, Int64(clamping: freeBytes)))
        return t
    }
}

/// One audit answer: the bytes of a leaf and the Merkle path from it to the piece root.
public struct AuditAnswer: Sendable {
    public var leafData: [UInt8]
    public var proof: MerkleProof
    public init(leafData: [UInt8], proof: MerkleProof) { self.leafData = leafData; self.proof = proof }
}

/// The transfer protocol as the renter uses it: one call per request, the
/// implementation keeping (and reconnecting) its sessions per farmer.
/// Implemented over the farmer's `TransferClient`; every method may throw
/// when the farmer is unreachable or refuses.
public protocol FarmerLink: Sendable {
    /// Stores a piece under a contract; returns once the farmer has checked
    /// its Merkle root and made it durable.
    func store(pieceID: Hash256, root: Hash256, bytes: ArraySlice<UInt8>, contract: ContractRecord) async throws
    /// Reads `range` of a piece, verified against `root` with the farmer's
    /// Merkle range proof; returns exactly `range.count` bytes.
    func read(pieceID: Hash256, root: Hash256, pieceSize: Int, range: Range<Int>, contract: ContractRecord) async throws -> [UInt8]
    func delete(pieceID: Hash256, contract: ContractRecord) async throws
    /// Asks for leaf `leaf` of a piece with its Merkle path (not yet checked).
    func audit(pieceID: Hash256, leaf: Int, contract: ContractRecord) async throws -> AuditAnswer
    /// Sends a renter-signed voucher for the new cumulative amount.
    func pay(contract: ContractRecord, cumulative: UInt64, sequence: UInt64) async throws
    /// Extends a contract to `newEnd`; returns the countersigned renewal.
    func renew(contract: ContractRecord, newEnd: Date) async throws -> ContractRecord
    /// Forgets cached sessions to this farmer (after a timeout, so the next
    /// request reconnects instead of queueing behind a hung one).
    func reset(farmer: Hash256) async
    func shutdown() async
    /// Piece bytes received by reads so far, as they arrive: a reader
    /// waits while this grows. 0 when the link cannot tell.
    var bytesReceived: UInt64 { get }
}

public extension FarmerLink {
    var bytesReceived: UInt64 { 0 }
}

/// Where new contracts come from: the DHT market (offer → bids → proposal
/// → countersigned contract).
public protocol ContractSource: Sendable {
    /// Forms up to `count` new contracts with farmers not in `excluding`.
    func formContracts(count: Int, terms: ContractTerms, excluding: Set<Hash256>) async throws -> [ContractRecord]
    func shutdown() async
}

/// Errors a `FarmerLink` maps the farmer's answers to, so the engine can
/// tell a farmer that lost data (audit failure) from one it cannot reach
/// (uptime).
public enum FarmerLinkError: Error, CustomStringConvertible {
    /// The farmer answered that it does not hold the piece.
    case pieceNotFound(Hash256)
    /// Connection refused, reset, or no answer in time.
    case unreachable(String)
    /// The farmer answered with an error.
    case refused(String)
    /// The farmer's bytes do not match the piece root.
    case badProof(String)
    /// A voucher not above the farmer's highest for the contract, which it
    /// named: the renter's ledger is behind (restored from an older snapshot).
    case staleVoucher(cumulative: UInt64, sequence: UInt64)

    public var description: String {
        switch self {
        case let .pieceNotFound(id): return "farmer does not hold piece \(id.short)"
        case let .unreachable(why): return "farmer unreachable: \(why)"
        case let .refused(why): return "farmer refused: \(why)"
        case let .badProof(why): return "farmer sent bytes that fail their proof: \(why)"
        case let .staleVoucher(c, s): return "farmer already holds a voucher for amount \(c), sequence \(s)"
        }
    }
}
