import ArgumentParser
import GranaryStore

/// What a mount does in the background besides uploading: compaction and
/// metadata snapshots. Shared by `mount` and `up` (which passes them on).
struct BackgroundWorkOptions: ParsableArguments {
    @Option(name: .customLong("compact-threshold"), help: "Rewrite segments whose live fraction falls below this (0 to 1).")
    var compactThreshold: Double = 0.5
    @Option(name: .customLong("compact-rate"), help: "Compaction budget in bytes per second, e.g. 8M (0: unlimited).")
    var compactRate: String = "8M"
    @Option(name: .customLong("compact-interval"), help: "Seconds between background compaction passes (0: only on `granary compact`).")
    var compactInterval: Double = 600
    @Option(name: .customLong("metadata-backup-interval"),
            help: "Seconds between metadata snapshots when something changed (0: only on `granary flush` and at unmount).")
    var metadataBackupInterval: Double = 600

    func compaction() throws -> CompactionConfiguration {
        guard compactThreshold >= 0, compactThreshold <= 1 else {
            throw ValidationError("--compact-threshold \(compactThreshold) is not a fraction: use a number from 0 to 1, e.g. 0.5")
        }
        guard let rate = ByteSize.parse(compactRate) else {
            throw ValidationError("--compact-rate \(compactRate) is not a size: use a number with an optional K, M, G or T suffix (0: unlimited)")
        }
        guard compactInterval >= 0 else { throw ValidationError("--compact-interval must be 0 or more seconds") }
        guard metadataBackupInterval >= 0 else { throw ValidationError("--metadata-backup-interval must be 0 or more seconds") }
        var c = CompactionConfiguration()
        c.threshold = compactThreshold
        c.bytesPerSecond = rate
        c.interval = compactInterval
        return c
    }

    /// The same options, for a `granary mount` child.
    var arguments: [String] {
        ["--compact-threshold", "\(compactThreshold)", "--compact-rate", compactRate,
         "--compact-interval", "\(compactInterval)", "--metadata-backup-interval", "\(metadataBackupInterval)"]
    }
}
