import Dispatch
import Foundation
import GranaryCore
import GranaryRenter
import GranaryStore
import Logging

/// A mount's metadata backups: snapshots on `granary flush` (through the
/// control socket's thread) and every interval, stopped after the unmount.
struct BackupHook: Sendable {
    var afterFlush: @Sendable () throws -> String
    /// One more snapshot after the unmount's flush, so what Ctrl-C flushed
    /// is restorable without a `granary flush` first.
    var final: @Sendable () async throws -> String
    var stop: @Sendable () async -> Void

    /// meta.db and network.db, named as a restore lays them out in the state folder.
    static func start(engine: RenterEngine, store: GranaryStore, keys: RenterKeys, interval: Double) async -> BackupHook? {
        guard let node = engine.dhtNode else { return nil }
        var configuration = MetadataBackupConfiguration()
        configuration.interval = interval
        let backup = MetadataBackup(engine: engine, node: node, keys: keys, sources: [
            SnapshotSource(name: "meta.db") { path in
                let dirty = try store.copyMetadata(to: path)
                if dirty > 0 {
                    Logger(label: "granary.backup").info("\(dirty) chunks were not uploaded yet: the snapshot keeps their last durable version")
                }
            },
            SnapshotSource(name: "network/network.db", volatile: true) { path in try engine.database.copy(to: path) },
        ], configuration: configuration)
        await backup.start()
        return BackupHook(afterFlush: { try AsyncWait.run { try await backup.snapshot().description } },
                          final: { try await backup.snapshot().description },
                          stop: { await backup.stop() })
    }
}

/// Waits on a plain thread for async work (the control socket serves each
/// client on its own thread, never on the cooperative pool).
enum AsyncWait {
    private final class Box<T: Sendable>: @unchecked Sendable {  // written once before the semaphore is signalled
        var result: Result<T, Error>?
    }

    static func run<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) throws -> T {
        let box = Box<T>()
        let done = DispatchSemaphore(value: 0)
        Task {
            do { box.result = .success(try await operation()) } catch { box.result = .failure(error) }
            done.signal()
        }
        done.wait()
        return try box.result!.get()
    }
}
