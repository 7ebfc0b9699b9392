import Foundation
import GRDB

/// Namespace and attribute changes applied in memory and not yet in
/// meta.db, committed together a few milliseconds later (group commit):
/// creates, links, unlinks, renames, chmod/chown/utimens and xattrs.
///
/// A create cost one SQLite transaction, about a third of the mount's work
/// per file in a small-file copy; `cp -a` paid two more per file for its
/// chown and utimens. Deferring their rows keeps meta.db a prefix
/// of what the mount did: every other write runs the pending statements
/// first, in the same transaction, so no row ever lands before the rows it
/// depends on. What a crash can lose is the last few milliseconds of
/// creates nobody fsynced, as with any file system's page cache; fsync and
/// fsyncdir commit them first.
///
/// A batch that fails to commit (disk full) is kept, in order, for the next
/// attempt, and new deferred changes are refused until one succeeds, so the
/// memory state never runs far ahead of the database.
final class DeferredMetaWrites: @unchecked Sendable {
    typealias Statement = @Sendable (Database) throws -> Void
    /// Work that may run only once a statement queued before it is
    /// committed: freeing the cache bytes of a deleted file, which a crash
    /// before the commit would bring back with its rows.
    typealias Action = @Sendable () -> Void

    /// What one transaction takes from the queue.
    struct Batch {
        var statements: [Statement] = []
        var actions: [Action] = []
        var isEmpty: Bool { statements.isEmpty && actions.isEmpty }
    }

    // A lock, not an actor: appended to under metaLock on FUSE threads and
    // drained inside a GRDB write on whichever thread writes next.
    private let lock = NSLock()
    private var pending = Batch()
    private var scheduled = false
    private var failure: (any Error)?

    /// Delay before a batch commits on its own: long enough to gather a
    /// burst of creates, short enough that a crash loses little.
    static let delay: DispatchTimeInterval = .milliseconds(5)

    /// Queues `statement`, and `action` to run after the transaction that
    /// runs it commits; returns true when the caller should schedule a
    /// commit (the first statement of a batch).
    func append(_ statement: @escaping Statement, afterCommit action: Action? = nil) -> Bool {
        lock.lock(); defer { lock.unlock() }
        pending.statements.append(statement)
        if let action { pending.actions.append(action) }
        if scheduled { return false }
        scheduled = true
        return true
    }

    /// The error of the last failed commit, while no commit has succeeded since.
    var lastFailure: (any Error)? { lock.lock(); defer { lock.unlock() }; return failure }

    var isEmpty: Bool { lock.lock(); defer { lock.unlock() }; return pending.isEmpty }

    /// Takes the pending statements for a transaction about to run them.
    func take() -> Batch {
        lock.lock(); defer { lock.unlock() }
        let taken = pending
        pending = Batch()
        scheduled = false
        return taken
    }

    /// Puts back statements whose transaction rolled back, ahead of any
    /// queued since, and remembers why.
    func restore(_ taken: Batch, after error: (any Error)?) {
        lock.lock(); defer { lock.unlock() }
        pending.statements = taken.statements + pending.statements
        pending.actions = taken.actions + pending.actions
        if let error { failure = error }
    }

    func committed() {
        lock.lock(); defer { lock.unlock() }
        failure = nil
    }

    /// Marks a retry as scheduled; false when one already is.
    func scheduleRetry() -> Bool {
        lock.lock(); defer { lock.unlock() }
        if scheduled || pending.isEmpty { return false }
        scheduled = true
        return true
    }
}
