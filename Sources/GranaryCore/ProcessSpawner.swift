import Foundation

/// Starts child processes from one thread that lives as long as this
/// process. Granary's children arm PR_SET_PDEATHSIG, and the kernel sends
/// that signal when the *thread* that created the child exits, not the
/// process: Dispatch's and the cooperative pool's worker threads exit when
/// idle, so a farmer started from one of them could be killed while `up`
/// runs on.
public enum ProcessSpawner {
    /// Runs `process` (`Process.run()`) on the spawner thread.
    public static func run(_ process: Process) throws {
        let box = UncheckedBox(process)
        try thread.perform { try box.value.run() }
    }

    private static let thread = SpawnerThread()
}

/// Hands a non-Sendable value to the spawner thread, which alone touches
/// it while the caller waits.
private final class UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// One never-ending thread running submitted jobs in order.
private final class SpawnerThread: @unchecked Sendable {  // `condition` guards `jobs`
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []

    init() {
        let t = Thread { [self] in self.loop() }
        t.name = "granary-spawner"
        t.start()
    }

    private func loop() {
        while true {
            condition.lock()
            while jobs.isEmpty { condition.wait() }
            let job = jobs.removeFirst()
            condition.unlock()
            job()
        }
    }

    /// Runs `body` on the thread and waits for it.
    func perform(_ body: @escaping @Sendable () throws -> Void) throws {
        final class Outcome: @unchecked Sendable {  // written before `done` is signalled, read after
            var error: Error?
        }
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        condition.lock()
        jobs.append {
            do { try body() } catch { outcome.error = error }
            done.signal()
        }
        condition.signal()
        condition.unlock()
        done.wait()
        if let error = outcome.error { throw error }
    }
}
