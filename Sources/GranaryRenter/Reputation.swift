import Foundation

/// A farmer's standing with this renter.
///
/// Audits are a beta distribution with forgetting, as in Storj v3:
/// α ← λα + (1+v)/2, β ← λβ + (1−v)/2 with v = +1 for a pass and −1 for a
/// failure; the score is α/(α+β). A new farmer starts at α=1, β=0 (score 1):
/// trusted until it fails, and because λ < 1 bounds α+β by 1/(1−λ), one
/// failure of a new farmer weighs heavily while a long record absorbs a few.
/// Uptime is a second beta of the same form over contact attempts (v = +1
/// reached, −1 not), and latency an exponential moving average.
public struct Reputation: Sendable, Hashable, Codable {
    public static let lambda = 0.95
    /// Audit score below which a farmer is disqualified.
    public static let disqualificationThreshold = 0.6
    /// Uptime score below which a farmer is treated as offline.
    public static let offlineThreshold = 0.5

    public var alpha = 1.0
    public var beta = 0.0
    public var upAlpha = 1.0
    public var upBeta = 0.0
    /// Moving average of request latency in milliseconds (nil: never measured).
    public var latencyMs: Double?
    public var auditsPassed = 0
    public var auditsFailed = 0

    public init() {}

    public var auditScore: Double { alpha + beta > 0 ? alpha / (alpha + beta) : 1 }
    public var uptimeScore: Double { upAlpha + upBeta > 0 ? upAlpha / (upAlpha + upBeta) : 1 }

    public mutating func recordAudit(passed: Bool) {
        let v = passed ? 1.0 : -1.0
        alpha = Self.lambda * alpha + (1 + v) / 2
        beta = Self.lambda * beta + (1 - v) / 2
        if passed { auditsPassed += 1 } else { auditsFailed += 1 }
    }

    public mutating func recordContact(reached: Bool) {
        let v = reached ? 1.0 : -1.0
        upAlpha = Self.lambda * upAlpha + (1 + v) / 2
        upBeta = Self.lambda * upBeta + (1 - v) / 2
    }

    public mutating func recordLatency(milliseconds ms: Double) {
        latencyMs = latencyMs.map { 0.8 * $0 + 0.2 * ms } ?? ms
    }

    public var shouldDisqualify: Bool { auditScore < Self.disqualificationThreshold }

    /// One number for ranking farmers for placement and reads: audits and
    /// uptime multiply; latency divides gently (100 ms halves nothing, a
    /// second-slow farmer ranks well below a fast one).
    public var rank: Double {
        let latency = latencyMs ?? 50
        return auditScore * uptimeScore / (1 + latency / 200)
    }
}
