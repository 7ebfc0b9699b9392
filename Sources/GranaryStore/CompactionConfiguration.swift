import Foundation

/// When and how fast the compactor rewrites and deletes segments.
public struct CompactionConfiguration: Sendable {
    /// Segments whose live fraction (bytes some file still refers to) is
    /// below this are rewritten; fully dead ones are deleted at any value.
    public var threshold: Double = 0.5
    /// Budget for the bytes compaction moves (read plus written), per
    /// second, so it never starves user traffic; 0 means unlimited.
    public var bytesPerSecond: UInt64 = 8 << 20
    /// Seconds between background passes; 0: only when asked (`granary compact`).
    public var interval: Double = 600
    /// Seconds after the start before the first background pass (which also
    /// collects the orphans a crash left).
    public var firstPassDelay: Double = 60

    public init() {}
}

/// What one compaction pass did (`granary compact` prints it).
public struct CompactionReport: Codable, Sendable {
    public var segmentsBefore = 0
    public var segmentsAfter = 0
    /// Sealed bytes in segments meta.db knows, before and after.
    public var storedBytesBefore: UInt64 = 0
    public var storedBytesAfter: UInt64 = 0
    public var liveBytes: UInt64 = 0
    /// Segments rewritten because their live fraction fell below the threshold.
    public var segmentsRewritten = 0
    /// New segments their live chunks were packed into.
    public var segmentsWritten = 0
    public var bytesCopied: UInt64 = 0
    /// Segments no chunk referred to any more.
    public var deadSegmentsDeleted = 0
    /// Segments in the segment store that meta.db does not know (a crash
    /// between upload and commit, or an interrupted compaction).
    public var orphansDeleted = 0
    public var seconds: Double = 0
    public var errors: [String] = []

    public init() {}
}

/// The segments meta.db knows and how much of them is still referred to.
public struct SegmentUsage: Codable, Sendable {
    public var segments = 0
    public var storedBytes: UInt64 = 0
    public var liveBytes: UInt64 = 0
    public var reclaimableBytes: UInt64 { storedBytes > liveBytes ? storedBytes - liveBytes : 0 }

    public init() {}
}
