import GranaryCore
import GranaryWire

/// Why a contract, voucher or proposal was refused. Each case says what to fix.
public enum ContractError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A field is missing, of the wrong length, or out of bounds.
    case malformed(String)
    /// The envelope failed its checks (signature, key, proof of work, kind).
    case envelope(EnvelopeError)
    /// The farmer's countersignature does not verify over the contract bytes.
    case badFarmerSignature
    /// The IDs inside the contract are not those of the keys that signed it.
    case signerMismatch(String)
    /// The farmer's policy refuses these terms.
    case rejectedByPolicy(String)

    public var description: String {
        switch self {
        case let .malformed(why): return "malformed contract data: \(why)"
        case let .envelope(e): return "contract envelope refused: \(e.description)"
        case .badFarmerSignature: return "farmer countersignature does not verify over the contract bytes"
        case let .signerMismatch(why): return "contract signer mismatch: \(why)"
        case let .rejectedByPolicy(why): return "contract rejected by the farmer's policy: \(why)"
        }
    }
}

/// Reads a 32-byte ID field, naming the field when it is not 32 bytes.
func hash256(_ bytes: some Collection<UInt8>, field: String) throws(ContractError) -> Hash256 {
    guard let h = Hash256(bytes: bytes) else { throw .malformed("\(field) must be 32 bytes, got \(bytes.count)") }
    return h
}
