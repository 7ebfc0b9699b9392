import GranaryWire

/// Why the farmer refused a request. Each maps to a wire error code and a
/// message the renter's operator can act on.
public struct FarmerError: Error, Sendable, CustomStringConvertible {
    public let code: Granary_TransferError.Code
    public let message: String
    /// With `.staleVoucher`: the contract's highest accepted voucher.
    public var lastVoucher: Granary_VoucherAccepted?

    public init(_ code: Granary_TransferError.Code, _ message: String) {
        self.code = code; self.message = message
    }

    public var description: String { "\(code): \(message)" }
    public var wire: Granary_TransferError {
        var e = Granary_TransferError(code, message)
        if let lastVoucher { e.lastVoucher = lastVoucher }
        return e
    }

    static func `internal`(_ what: String, _ error: any Error) -> FarmerError {
        FarmerError(.internal, "\(what): \(error)")
    }
}
