import Foundation
import GranaryContracts
import GranaryCore
import GranaryWire
import Logging
import NIOCore

/// Answers the requests of one authenticated session, one at a time
/// (Protos/transfer.proto, REQUESTS). A refused request gets an error
/// answer and the session goes on; a broken session (bad frame, replay,
/// disconnect) ends only that session.
struct FarmerService: Sendable {
    let identity: NodeIdentity
    let store: PieceStore
    let contracts: ContractBook
    let clock: any FarmerClock
    let logger: Logger

    func serve(_ session: TransferSession) async {
        let peer = session.peer
        var log = logger
        log[metadataKey: "renter"] = "\(peer.id.short)"
        while true {
            let request: Granary_Request
            do {
                guard let next = try await session.receive(Granary_Request.self) else { return }
                request = next
            } catch {
                log.warning("session ended", metadata: ["reason": "\(error.description)"])
                // Say why, sealed, when the session keys still work.
                if case let .frame(frameError) = error {
                    let code: Granary_TransferError.Code = if case .tooLong = frameError { .frameTooLarge } else { .malformed }
                    try? await session.send(Self.response(0, .error(Granary_TransferError(code, frameError.description))))
                }
                return
            }
            do {
                try await handle(request, session: session, log: log)
            } catch let error as FarmerError {
                log.info("request refused", metadata: ["code": "\(error.code)", "reason": "\(error.message)"])
                do { try await session.send(Self.response(request.requestID, .error(error.wire))) } catch { return }
                if error.code == .protocolViolation { return }
            } catch {
                log.warning("session ended", metadata: ["reason": "\(error)"])
                return
            }
        }
    }

    static func response(_ id: UInt64, _ body: Granary_Response.OneOf_Body) -> Granary_Response {
        var r = Granary_Response()
        r.requestID = id
        r.body = body
        return r
    }

    static func id(_ data: Data, _ field: String) throws(FarmerError) -> Hash256 {
        guard let h = Hash256(bytes: data) else { throw FarmerError(.malformed, "\(field) must be 32 bytes, got \(data.count)") }
        return h
    }

    /// The piece, if it belongs to a contract of this renter.
    func ownedPiece(_ data: Data, renter: Hash256) throws(FarmerError) -> PieceRecord {
        let pieceID = try Self.id(data, "piece_id")
        let record: PieceRecord?
        do { record = try store.record(of: pieceID) } catch { throw .internal("index lookup", error) }
        guard let record else { throw FarmerError(.notFound, "no piece \(pieceID.short) here") }
        let owner: ContractRecord?
        do { owner = try contracts.contract(record.contractID) } catch { throw .internal("contract lookup", error) }
        guard owner?.contract.renterID == renter else { throw FarmerError(.notFound, "no piece \(pieceID.short) under your contracts") }
        return record
    }

    func handle(_ request: Granary_Request, session: TransferSession, log: Logger) async throws {
        let id = request.requestID
        let peer = session.peer
        let now = clock.now()
        switch request.body {
        case nil:
            throw FarmerError(.malformed, "empty request")

        case let .proposeContract(m)?:
            let signed = try contracts.accept(m.contract, peer: peer, now: now, freeCapacity: store.freeBytes)
            log.info("contract signed", metadata: ["contract": "\(signed.id.short)", "allowance": "\(signed.contract.allowanceBytes)",
                                                   "end": "\(signed.contract.endTime)"])
            var a = Granary_ContractAccepted(); a.contract = signed.message
            try await session.send(Self.response(id, .contractAccepted(a)))

        case let .renewContract(m)?:
            let contractID = (try? ContractProposal(verifying: m.contract, difficulty: 0).contract.id) ?? .zero
            let signed = try contracts.renew(m.contract, peer: peer, now: now, freeCapacity: store.freeBytes,
                                             bytesUsed: store.bytesUsed(byContract: contractID))
            log.info("contract renewed", metadata: ["contract": "\(signed.id.short)", "revision": "\(signed.contract.revision)",
                                                    "end": "\(signed.contract.endTime)"])
            var a = Granary_ContractAccepted(); a.contract = signed.message
            try await session.send(Self.response(id, .contractRenewed(a)))

        case let .storePiece(m)?:
            try await store(m, id: id, session: session, log: log, now: now)

        case let .readRange(m)?:
            let record = try ownedPiece(m.pieceID, renter: peer.id)
            guard m.length > 0 || record.size == 0, m.offset <= UInt64(record.size), m.length <= UInt64(record.size) - m.offset else {
                throw FarmerError(.outOfRange, "range \(m.offset)+\(m.length) is outside piece \(record.id.short) of \(record.size) bytes")
            }
            let range = Int(m.offset)..<Int(m.offset + m.length)
            let leaves = MerkleTree.leaves(covering: range)
            let tree = try store.tree(of: record)
            guard let proof = tree.proof(leaves: leaves) else { throw FarmerError(.outOfRange, "no proof for leaves \(leaves)") }
            let start = leaves.lowerBound * MerkleTree.leafSize
            let end = min(leaves.upperBound * MerkleTree.leafSize, record.size)
            var header = Granary_RangeData()
            header.pieceID = Data(record.id.bytes); header.pieceSize = UInt64(record.size)
            header.proof = Granary_MerkleProof(proof); header.dataLength = UInt64(end - start)
            try await session.send(Self.response(id, .rangeData(header)))
            // Read and send in chunks so a large range never sits in memory whole.
            var offset = start
            let step = 4 * FrameLimits.dataChunk
            while offset < end {
                let n = min(step, end - offset)
                let bytes = try store.readBytes(of: record.id, offset: offset, count: n, allocator: ByteBufferAllocator())
                try await session.sendData(bytes)
                offset += n
            }

        case let .deletePiece(m)?:
            let pieceID = try Self.id(m.pieceID, "piece_id")
            var existed = false
            if let record = try? ownedPiece(m.pieceID, renter: peer.id) {
                do { existed = try store.delete(piece: record.id) } catch { throw FarmerError.internal("delete", error) }
            }
            log.info("piece deleted", metadata: ["piece": "\(pieceID.short)", "existed": "\(existed)"])
            var d = Granary_PieceDeleted(); d.pieceID = m.pieceID; d.existed = existed
            try await session.send(Self.response(id, .pieceDeleted(d)))

        case let .audit(m)?:
            let record = try ownedPiece(m.pieceID, renter: peer.id)
            let leafCount = MerkleTree.leafCount(byteCount: record.size)
            guard m.leafIndex < UInt64(leafCount) else {
                throw FarmerError(.outOfRange, "leaf \(m.leafIndex) is beyond the \(leafCount) leaves of piece \(record.id.short)")
            }
            let leaf = Int(m.leafIndex)
            let tree = try store.tree(of: record)
            guard let proof = tree.proof(leaf: leaf) else { throw FarmerError(.outOfRange, "no proof for leaf \(leaf)") }
            let start = leaf * MerkleTree.leafSize
            let bytes = try store.readBytes(of: record.id, offset: start, count: min(MerkleTree.leafSize, record.size - start),
                                            allocator: ByteBufferAllocator())
            var a = Granary_AuditProof()
            a.pieceID = m.pieceID; a.leaf = Data(bytes.readableBytesView); a.proof = Granary_MerkleProof(proof)
            try await session.send(Self.response(id, .auditProof(a)))

        case let .payVoucher(m)?:
            let v = try contracts.acceptVoucher(m.voucher, peer: peer, now: now)
            log.info("voucher accepted", metadata: ["contract": "\(v.contractID.short)", "amount": "\(v.cumulativeAmount)", "sequence": "\(v.sequence)"])
            var a = Granary_VoucherAccepted()
            a.contractID = Data(v.contractID.bytes); a.cumulativeAmount = v.cumulativeAmount; a.sequence = v.sequence
            try await session.send(Self.response(id, .voucherAccepted(a)))
        }
    }

    /// Piece upload: refuse before any byte is taken (contract, size,
    /// capacity, allowance), then hash and write as bytes arrive, check the
    /// declared root, fsync, rename, index. A root mismatch keeps nothing
    /// and leaves the session usable; a broken session drops the upload.
    func store(_ m: Granary_StorePiece, id: UInt64, session: TransferSession, log: Logger, now: UInt64) async throws {
        let contractID = try Self.id(m.contractID, "contract_id")
        let pieceID = try Self.id(m.pieceID, "piece_id")
        let root = try Self.id(m.merkleRoot, "merkle_root")
        let contract = try contracts.liveContract(contractID, renter: session.peer.id, now: now)
        let upload = try store.beginUpload(piece: pieceID, contract: contractID, size: m.size, root: root, allowance: contract.allowanceBytes)
        defer { upload.abort() }
        var ready = Granary_StoreReady(); ready.pieceID = m.pieceID
        try await session.send(Self.response(id, .storeReady(ready)))
        while upload.remaining > 0 {
            try await upload.append(session.receiveData())
        }
        try await upload.finish(now: clock.now())
        log.info("piece stored", metadata: ["piece": "\(pieceID.short)", "contract": "\(contractID.short)", "size": "\(m.size)"])
        var stored = Granary_PieceStored()
        stored.pieceID = m.pieceID; stored.size = m.size; stored.contractBytesUsed = store.bytesUsed(byContract: contractID)
        try await session.send(Self.response(id, .pieceStored(stored)))
    }
}
