import Foundation
import GranaryContracts
import GranaryCore
import GranaryWire
import Logging
import NIOCore

/// `FarmerLink` over the farmer's transfer protocol (`TransferClient`).
///
/// A session carries one request at a time, so the link keeps a small pool
/// of idle sessions per farmer: a request takes one (or connects), and
/// gives it back when it ends cleanly. A request cancelled or timed out
/// closes its own session only, which also aborts a half-sent piece on the
/// farmer's side.
public actor TransferFarmerLink: FarmerLink {
    let identity: NodeIdentity
    let difficulty: Int
    let requestTimeout: Duration
    /// A piece upload or read fails once no byte moved for this long; its
    /// whole duration is the caller's to bound (a slow link needs minutes).
    let transferStallTimeout: Duration
    private var idle: [Hash256: [TransferClient]] = [:]
    private var parsed: [Hash256: SignedContract] = [:]
    private let maxIdlePerFarmer = 8
    /// Farmers reached at another address than their contracts name.
    private var movedTo: [Hash256: String] = [:]
    private var resolve: (@Sendable (Hash256) async -> String?)?
    private var addressChanged: (@Sendable (FarmerContact) -> Void)?
    /// Room for the pieces of about one segment in flight (4/5/7/8 of 64 MiB: 7 × 16 MiB).
    private nonisolated let sendBuffers = SendBufferPool(maxBytes: 128 << 20)
    private let log = Logger(label: "granary.renter")
    /// Bytes received on every session so far, counted as they arrive.
    public nonisolated let received = ByteCounter()
    public nonisolated var bytesReceived: UInt64 { received.total }

    public init(identity: NodeIdentity, difficulty: Int = NodeIdentity.configuredDifficulty, requestTimeout: Duration = .seconds(120),
                transferStallTimeout: Duration = .seconds(10)) {
        self.identity = identity
        self.difficulty = difficulty
        self.requestTimeout = requestTimeout
        self.transferStallTimeout = transferStallTimeout
    }

    static func split(_ address: String) -> (String, Int)? {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else { return nil }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }

    /// An idle session to `farmer` (`reused`), else a new one. A farmer that
    /// refuses or does not answer at its address is looked up in the DHT
    /// (`findMovedFarmers`) and, found elsewhere, connected to there.
    private func checkout(_ farmer: FarmerContact) async throws -> (client: TransferClient, reused: Bool) {
        while var list = idle[farmer.id], let client = list.popLast() {
            idle[farmer.id] = list
            if await client.isUsable { return (client, true) }
        }
        let address = movedTo[farmer.id] ?? farmer.address
        do {
            return (try await connect(farmer, at: address), false)
        } catch let error as TransferError {
            guard case .connect = error, let resolve, let found = await resolve(farmer.id), found != address,
                  movedTo[farmer.id] ?? farmer.address == address else { throw Self.map(error) }
            log.notice("farmer \(farmer.id.short) moved from \(address) to \(found) (its address record in the DHT)")
            movedTo[farmer.id] = found
            var contact = farmer
            contact.address = found
            addressChanged?(contact)
            do { return (try await connect(farmer, at: found), false) } catch { throw Self.map(error) }
        }
    }

    private func connect(_ farmer: FarmerContact, at address: String) async throws -> TransferClient {
        guard let (host, port) = Self.split(address) else { throw FarmerLinkError.unreachable("bad address \(address)") }
        return try await TransferClient.connect(to: host, port: port, identity: identity, expectedPeer: farmer.id,
                                                difficulty: difficulty, connectTimeout: .seconds(5), requestTimeout: requestTimeout,
                                                received: received)
    }

    /// Lets the link find farmers that moved: `resolve` gives a farmer's
    /// current address (nil when unknown), `changed` is told each contact
    /// found at a new address, to record it.
    public func findMovedFarmers(resolve: @escaping @Sendable (Hash256) async -> String?,
                                 changed: @escaping @Sendable (FarmerContact) -> Void) {
        self.resolve = resolve
        self.addressChanged = changed
    }

    private func checkin(_ client: TransferClient, farmer: Hash256) async {
        guard await client.isUsable, (idle[farmer]?.count ?? 0) < maxIdlePerFarmer else { await client.close(); return }
        idle[farmer, default: []].append(client)
    }

    /// Runs `body` on a pooled session; the session is closed if the caller
    /// is cancelled. An idle session the farmer closed meanwhile (it
    /// restarted) fails at once: the request is then sent once more on a
    /// new one.
    private func withClient<T: Sendable>(_ farmer: FarmerContact, piece: Hash256 = .zero,
                                         _ body: @Sendable (TransferClient) async throws -> T) async throws -> T {
        var (session, reused) = try await checkout(farmer)
        while true {
            let client = session
            do {
                let result = try await withTaskCancellationHandler {
                    try await body(client)
                } onCancel: {
                    Task { await client.close() }
                }
                await checkin(client, farmer: farmer.id)
                return result
            } catch {
                await client.close()
                guard reused, Self.closedBeforeAnswer(error), !Task.isCancelled else { throw Self.map(error, piece: piece) }
                // Its other idle sessions went with it.
                for stale in idle.removeValue(forKey: farmer.id) ?? [] { await stale.close() }
                (session, reused) = try await checkout(farmer)
            }
        }
    }

    /// The session was found closed: nothing of the request reached a farmer that answers.
    static func closedBeforeAnswer(_ error: Error) -> Bool {
        switch error as? TransferError {
        case .closed?, .session(.closed)?: return true
        default: return false
        }
    }

    static func map(_ error: Error, piece: Hash256 = .zero) -> Error {
        guard let e = error as? TransferError else { return error }
        switch e {
        case let .refused(code, message):
            if code == .notFound { return FarmerLinkError.pieceNotFound(piece) }
            return FarmerLinkError.refused("\(code): \(message)")
        case .connect, .timedOut, .session, .closed: return FarmerLinkError.unreachable(e.description)
        case let .badProof(why): return FarmerLinkError.badProof(why)
        case let .staleVoucher(last, _): return FarmerLinkError.staleVoucher(cumulative: last.cumulativeAmount, sequence: last.sequence)
        case let .protocolViolation(why): return FarmerLinkError.refused("protocol violation: \(why)")
        }
    }

    private func signedContract(_ c: ContractRecord) throws -> SignedContract {
        if let s = parsed[c.id], s.serialized == c.signedBytes { return s }
        let s = try SignedContract(serialized: c.signedBytes, difficulty: difficulty)
        parsed[c.id] = s
        return s
    }

    public nonisolated func store(pieceID: Hash256, root: Hash256, bytes: ArraySlice<UInt8>, contract: ContractRecord) async throws {
        let buffer = sendBuffers.buffer(with: bytes)
        defer { sendBuffers.recycle(buffer) }
        let stall = transferStallTimeout
        _ = try await withClient(contract.farmer) { client in
            try await client.storePiece(contract: contract.id, pieceID: pieceID, root: root, buffer: buffer, stallTimeout: stall)
        }
    }

    public nonisolated func read(pieceID: Hash256, root: Hash256, pieceSize: Int, range: Range<Int>, contract: ContractRecord) async throws -> [UInt8] {
        let stall = transferStallTimeout
        return try await withClient(contract.farmer, piece: pieceID) { client in
            try await client.readRange(pieceID: pieceID, root: root, pieceSize: pieceSize, range: range, stallTimeout: stall)
        }
    }

    /// Reads a piece range from a farmer known only by its contact (a
    /// restore, before network.db exists); the farmer serves it because this
    /// link's identity is the renter of the piece's contract.
    public nonisolated func read(pieceID: Hash256, root: Hash256, pieceSize: Int, range: Range<Int>, farmer: FarmerContact) async throws -> [UInt8] {
        let stall = transferStallTimeout
        return try await withClient(farmer, piece: pieceID) { client in
            try await client.readRange(pieceID: pieceID, root: root, pieceSize: pieceSize, range: range, stallTimeout: stall)
        }
    }

    public nonisolated func delete(pieceID: Hash256, contract: ContractRecord) async throws {
        let existed = try await withClient(contract.farmer, piece: pieceID) { client in try await client.deletePiece(pieceID: pieceID) }
        if !existed { throw FarmerLinkError.pieceNotFound(pieceID) }
    }

    public nonisolated func audit(pieceID: Hash256, leaf: Int, contract: ContractRecord) async throws -> AuditAnswer {
        let (data, proof) = try await withClient(contract.farmer, piece: pieceID) { client in try await client.audit(pieceID: pieceID, leaf: leaf) }
        return AuditAnswer(leafData: data, proof: proof)
    }

    public func pay(contract: ContractRecord, cumulative: UInt64, sequence: UInt64) async throws {
        let signed = try signedContract(contract)
        let voucher = try PaymentVoucher(contractID: contract.id, paymentChannelID: signed.contract.paymentChannelID,
                                         cumulativeAmount: cumulative, sequence: sequence).signed(by: identity)
        _ = try await withClient(contract.farmer) { client in try await client.sendVoucher(voucher) }
    }

    public func renew(contract: ContractRecord, newEnd: Date) async throws -> ContractRecord {
        var terms = try signedContract(contract).contract
        terms.revision += 1
        terms.endTime = UInt64(newEnd.timeIntervalSince1970)
        let proposal = try terms.proposal(signedBy: identity)
        let difficulty = self.difficulty
        let renewed = try await withClient(contract.farmer) { client in try await client.renewContract(proposal, difficulty: difficulty) }
        parsed[contract.id] = renewed
        return Self.record(renewed, farmer: contract.farmer)
    }

    /// The renter's record of a countersigned contract.
    static func record(_ s: SignedContract, farmer: FarmerContact) -> ContractRecord {
        let c = s.contract
        return ContractRecord(id: c.id, farmer: farmer, allowance: Int64(clamping: c.allowanceBytes), pricePerAudit: c.pricePerAudit,
                              auditInterval: Double(c.auditIntervalSeconds), start: Date(timeIntervalSince1970: Double(c.startTime)),
                              end: Date(timeIntervalSince1970: Double(c.endTime)), signedBytes: s.serialized)
    }

    /// Proposes a new contract to a farmer; returns it countersigned.
    func propose(_ terms: Contract, farmer: FarmerContact) async throws -> ContractRecord {
        let proposal = try terms.proposal(signedBy: identity)
        let difficulty = self.difficulty
        let signed = try await withClient(farmer) { client in try await client.proposeContract(proposal, difficulty: difficulty) }
        parsed[signed.id] = signed
        return Self.record(signed, farmer: farmer)
    }

    public func reset(farmer: Hash256) async {
        for c in idle.removeValue(forKey: farmer) ?? [] { await c.close() }
    }

    public func shutdown() async {
        for (_, list) in idle { for c in list { await c.close() } }
        idle.removeAll()
    }
}
