import GranaryCore

/// What a farmer is willing to sign, from its configuration. Free capacity
/// is what the farmer's disk budget has left (capacity minus stored and
/// reserved bytes); a contract never gets more allowance than that.
public struct ContractPolicy: Sendable, Hashable {
    /// Lowest acceptable price per passed audit.
    public var minPricePerAudit: UInt64
    /// Longest acceptable contract, in seconds.
    public var maxDurationSeconds: UInt64
    /// Shortest acceptable audit interval, in seconds (audits cost the farmer).
    public var minAuditIntervalSeconds: UInt64
    /// How far a contract's start may lie from the farmer's clock, in seconds.
    public var maxClockSkewSeconds: UInt64

    public init(minPricePerAudit: UInt64 = 0, maxDurationSeconds: UInt64 = 366 * 86_400,
                minAuditIntervalSeconds: UInt64 = 1, maxClockSkewSeconds: UInt64 = 3_600) {
        self.minPricePerAudit = minPricePerAudit; self.maxDurationSeconds = maxDurationSeconds
        self.minAuditIntervalSeconds = minAuditIntervalSeconds; self.maxClockSkewSeconds = maxClockSkewSeconds
    }

    /// Throws `.rejectedByPolicy` with the reason when the farmer should not
    /// sign (or renew) `contract`. `now` is Unix seconds.
    public func check(_ contract: Contract, farmerID: Hash256, now: UInt64, freeCapacity: UInt64) throws(ContractError) {
        guard contract.farmerID == farmerID else {
            throw .rejectedByPolicy("contract is for farmer \(contract.farmerID.short), not this one")
        }
        guard contract.pricePerAudit >= minPricePerAudit else {
            throw .rejectedByPolicy("price per audit \(contract.pricePerAudit) is below the minimum \(minPricePerAudit)")
        }
        guard contract.durationSeconds <= maxDurationSeconds else {
            throw .rejectedByPolicy("duration \(contract.durationSeconds)s exceeds the maximum \(maxDurationSeconds)s")
        }
        guard contract.auditIntervalSeconds >= minAuditIntervalSeconds else {
            throw .rejectedByPolicy("audit interval \(contract.auditIntervalSeconds)s is below the minimum \(minAuditIntervalSeconds)s")
        }
        guard contract.endTime > now else { throw .rejectedByPolicy("contract already ended at \(contract.endTime)") }
        guard contract.startTime <= now + maxClockSkewSeconds else {
            throw .rejectedByPolicy("contract starts at \(contract.startTime), too far after now (\(now))")
        }
        guard contract.allowanceBytes <= freeCapacity else {
            throw .rejectedByPolicy("allowance \(contract.allowanceBytes) bytes exceeds free capacity \(freeCapacity) bytes")
        }
    }
}

