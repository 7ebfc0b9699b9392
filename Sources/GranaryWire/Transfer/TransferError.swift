import Foundation

/// Why a transfer request failed, as the client (renter) sees it. `refused`
/// carries the farmer's own error code and words; the other cases are local
/// findings. Every case names what happened in plain words.
public enum TransferError: Error, Sendable, CustomStringConvertible {
    /// The farmer answered with an error.
    case refused(code: Granary_TransferError.Code, message: String)
    /// The voucher was not above the farmer's highest for its contract,
    /// which the farmer returned (the renter's ledger is behind it).
    case staleVoucher(lastAccepted: VoucherReceipt, message: String)
    /// The session could not be set up or broke (see SessionError).
    case session(SessionError)
    /// Could not connect.
    case connect(String)
    /// No answer within the time limit; the connection was closed.
    case timedOut(String)
    /// The farmer sent bytes that do not verify against the piece's root.
    case badProof(String)
    /// The farmer broke the protocol (wrong message, sizes out of bounds).
    case protocolViolation(String)
    /// The client was used after `close()` or a failure that ended the session.
    case closed

    /// The farmer answered the request (with a refusal): the session stays usable.
    public var isFarmersAnswer: Bool {
        switch self {
        case .refused, .staleVoucher: return true
        default: return false
        }
    }

    /// The farmer's error code when it refused the request.
    public var code: Granary_TransferError.Code? {
        switch self {
        case let .refused(code, _): return code
        case .staleVoucher: return .staleVoucher
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case let .refused(code, message): return "farmer refused (\(code)): \(message)"
        case let .staleVoucher(last, message):
            return "farmer refused (staleVoucher): \(message); its highest is amount \(last.cumulativeAmount), sequence \(last.sequence)"
        case let .session(e): return e.description
        case let .connect(why): return "cannot connect: \(why)"
        case let .timedOut(what): return "timed out: \(what)"
        case let .badProof(why): return "farmer's data failed verification: \(why)"
        case let .protocolViolation(why): return "farmer broke the protocol: \(why)"
        case .closed: return "the transfer session is closed"
        }
    }
}

extension Granary_TransferError {
    public init(_ code: Code, _ message: String) {
        self.init()
        self.code = code
        self.message = message
    }
}
