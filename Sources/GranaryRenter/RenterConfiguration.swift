import Foundation
import GranaryCore

/// The renter engine's knobs. Defaults suit the embedded 10-farmer network;
/// tests shorten the time-based ones instead of sleeping through them.
public struct RenterConfiguration: Sendable {
    public var scheme: RedundancyScheme = .embeddedDefault
    /// Terms asked for when forming contracts.
    public var terms = ContractTerms()
    /// Live contracts the pool keeps (at least n, so placement has spares).
    public var targetContracts = 10
    /// Renew a contract once less than this fraction of its duration remains.
    public var renewWhenRemaining = 0.25
    /// How long the market collects bids for one offer.
    public var bidWindow: Double = 2
    /// A piece transfer fails once no byte moved for `transferTimeoutBase`
    /// seconds, and in any case after that base plus its size at
    /// `minimumTransferRate`. The floor is low because a renter sends about
    /// eight pieces at once: on a 2 Mbit/s uplink each moves at 31 KB/s, and
    /// a whole-transfer deadline at 1 MiB/s failed every upload there.
    public var transferTimeoutBase: Double = 10
    public var minimumTransferRate: Double = 16_384
    /// A read served from data pieces widens to k + 1 pieces when they have
    /// not all arrived after base + bytes / rate seconds (hedged request),
    /// or twice a read's time at the recent rate when that is longer.
    /// Widening a one-piece read costs k times its bytes, so the delay is
    /// generous: it is for a stuck farmer, not a busy machine.
    public var readHedgeBase: Double = 2
    public var readHedgeRate: Double = 5_000_000
    /// An upload starts s pieces; the other n − s start only if the s are
    /// not all stored after base + piece bytes / rate seconds (or one fails
    /// with no spare farmer left): long-tail protection without sending
    /// n − s pieces' bytes on every healthy upload.
    public var uploadHedgeBase: Double = 2
    public var uploadHedgeRate: Double = 5_000_000
    /// Deadline for small requests (audit, delete, voucher, renewal).
    public var requestTimeout: Double = 10
    /// A farmer failing every contact for this long counts as offline: its
    /// pieces stop counting as healthy and are repaired.
    public var offlineGrace: Double = 30 * 60
    /// Maximum bytes per second the repairer moves (download + upload).
    public var repairBytesPerSecond: Double = 33_554_432
    /// Whether audits that pass are paid (a test turns this off to see
    /// farmers apply tit for tat).
    public var payForAudits = true
    /// Run the background loops (contract pool, audits, repair, deletes).
    public var runBackgroundLoops = true
    /// Seconds between background maintenance rounds.
    public var maintenanceInterval: Double = 5
    /// UDP address of the renter's DHT node (port 0: any), and the address
    /// farmers should send bids to when it differs (NAT, 0.0.0.0 listen).
    /// Nil: 127.0.0.1:0 when every bootstrap node is on loopback, else 0.0.0.0:0.
    public var dhtListen: String?
    public var dhtAdvertise: String?
    /// Proof-of-work bits required of every node (GRANARY_POW_BITS by default).
    public var difficulty = NodeIdentity.configuredDifficulty

    public init(scheme: RedundancyScheme = .embeddedDefault) { self.scheme = scheme }
}

/// Time as the engine sees it: injectable, so tests make audit intervals
/// and grace periods pass without sleeping through them.
public protocol RenterClock: Sendable {
    func now() -> Date
}

public struct SystemClock: RenterClock {
    public init() {}
    public func now() -> Date { Date() }
}

/// A clock tests move by hand.
public final class ManualClock: RenterClock, @unchecked Sendable {
    // A lock, not an actor: `now()` is called from synchronous code.
    private let lock = NSLock()
    private var current: Date
    public init(_ start: Date = Date()) { current = start }
    public func now() -> Date { lock.lock(); defer { lock.unlock() }; return current }
    public func advance(by seconds: Double) { lock.lock(); current += seconds; lock.unlock() }
}

/// Random choices (which piece and leaf to audit, jitter, placement spread): injectable.
public protocol RandomSource: Sendable {
    /// A uniform integer in 0..<upperBound.
    func next(below upperBound: Int) -> Int
    /// A uniform double in 0..<1.
    func unit() -> Double
}

public struct SystemRandomSource: RandomSource {
    public init() {}
    public func next(below upperBound: Int) -> Int { upperBound <= 1 ? 0 : Int.random(in: 0..<upperBound) }
    public func unit() -> Double { Double.random(in: 0..<1) }
}

/// SplitMix64 from a seed, for deterministic tests.
public final class SeededRandomSource: RandomSource, @unchecked Sendable {
    // A lock, not an actor: callers are synchronous.
    private let lock = NSLock()
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    private func step() -> UInt64 {
        lock.lock(); defer { lock.unlock() }
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    public func next(below upperBound: Int) -> Int { upperBound <= 1 ? 0 : Int(step() % UInt64(upperBound)) }
    public func unit() -> Double { Double(step() >> 11) / Double(1 << 53) }
}
