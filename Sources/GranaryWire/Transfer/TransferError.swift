import Foundation

/// Why a transfer request failed, as the client (renter) sees it. `refused`
/// carries the farmer's own error code and words; the other cases are local
/// findings. Every case names what happened in plain words.
public enum TransferError: Error, Sendable, CustomStringConvertible {
    /// The farmer answered with an error.
    case refused(code: Granary_TransferError.Code, message: String)
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

    /// The farmer's error code when it refused the request.
    public var code: Granary_TransferError.Code? {
        if case let .refused(code, _) = self { return code }
        return nil
    }

    public var description: String {
        switch self {
        case let .refused(code, message): return "farmer refused (\(code)): \(message)"
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
