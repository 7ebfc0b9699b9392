import Foundation

/// Where the farmer reads the time (Unix seconds). Injectable so tests of
/// grace periods and expiry need not wait.
public protocol FarmerClock: Sendable {
    func now() -> UInt64
}

/// The system clock.
public struct SystemClock: FarmerClock {
    public init() {}
    public func now() -> UInt64 { UInt64(Date().timeIntervalSince1970) }
}

/// A clock tests move by hand. Thread-safe: guarded by a lock.
public final class ManualClock: FarmerClock, @unchecked Sendable {
    private let lock = NSLock()
    private var current: UInt64

    public init(_ start: UInt64 = UInt64(Date().timeIntervalSince1970)) { current = start }
    public func now() -> UInt64 { lock.withLock { current } }
    public func advance(by seconds: UInt64) { lock.withLock { current += seconds } }
    public func set(_ value: UInt64) { lock.withLock { current = value } }
}
