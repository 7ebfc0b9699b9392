import GranaryWire

/// Why the farmer refused a request. Each maps to a wire error code and a
/// message the renter's operator can act on.
public struct FarmerError: Error, Sendable, CustomStringConvertible {
    public let code: Granary_TransferError.Code
    public let message: String

    public init(_ code: Granary_TransferError.Code, _ message: String) {
        self.code = code; self.message = message
    }

    public var description: String { "\(code): \(message)" }
    public var wire: Granary_TransferError { Granary_TransferError(code, message) }

    static func `internal`(_ what: String, _ error: any Error) -> FarmerError {
        FarmerError(.internal, "\(what): \(error)")
    }
}
