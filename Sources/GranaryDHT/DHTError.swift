import GranaryCore
import GranaryWire

/// Why a DHT operation or an incoming datagram failed. Each case says what
/// was wrong in words an operator can act on.
public enum DHTError: Error, Equatable, CustomStringConvertible {
    case oversized(bytes: Int, limit: Int)
    case malformed(String)
    case envelope(EnvelopeError)
    case identity(IdentityError)
    case idDoesNotMatchKey
    case staleTimestamp(skewSeconds: Int64)
    case replay
    case recordRejected(String)
    case timeout(String)
    case badAddress(String)
    case noContacts
    case bootstrapFailed([String])
    case transport(String)
    case stopped
    case storage(String)

    public var description: String {
        switch self {
        case let .oversized(bytes, limit): return "datagram of \(bytes) bytes exceeds the \(limit)-byte limit"
        case let .malformed(why): return "malformed datagram: \(why)"
        case let .envelope(e): return e.description
        case let .identity(e): return e.description
        case .idDoesNotMatchKey: return "sender node ID is not BLAKE2b-256 of its public key"
        case let .staleTimestamp(skew): return "timestamp \(skew) s away from our clock (limit 60 s)"
        case .replay: return "replayed datagram (nonce already seen)"
        case let .recordRejected(why): return "record rejected: \(why)"
        case let .timeout(what): return "no answer from \(what) in time"
        case let .badAddress(text): return "\(text) is not a HOST:PORT address"
        case .noContacts: return "the routing table is empty: give a reachable --bootstrap HOST:PORT"
        case let .bootstrapFailed(addrs): return "no bootstrap node answered (\(addrs.joined(separator: ", "))): check the addresses and that a seed is running"
        case let .transport(why): return "UDP transport: \(why)"
        case .stopped: return "the DHT node is stopped"
        case let .storage(why): return "routing table database: \(why)"
        }
    }

    /// A short stable name for statistics and log fields.
    public var reason: String {
        switch self {
        case .oversized: return "oversized"
        case .malformed: return "malformed"
        case let .envelope(e):
            switch e {
            case .badSignature: return "bad-signature"
            case .identity(.insufficientProofOfWork): return "short-pow"
            case .identity: return "identity"
            default: return "bad-envelope"
            }
        case .identity(.insufficientProofOfWork): return "short-pow"
        case .identity: return "identity"
        case .idDoesNotMatchKey: return "id-mismatch"
        case .staleTimestamp: return "stale"
        case .replay: return "replay"
        case .recordRejected: return "record-rejected"
        case .timeout: return "timeout"
        case .badAddress: return "bad-address"
        case .noContacts: return "no-contacts"
        case .bootstrapFailed: return "bootstrap-failed"
        case .transport: return "transport"
        case .stopped: return "stopped"
        case .storage: return "storage"
        }
    }
}
