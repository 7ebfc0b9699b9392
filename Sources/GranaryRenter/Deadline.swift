import Foundation

/// An operation took longer than its deadline.
public struct DeadlineExceeded: Error, CustomStringConvertible {
    public let seconds: Double
    public var description: String { "no answer within \(String(format: "%.1f", seconds)) s" }
}

/// Runs `operation` but returns after `seconds` or on cancellation of the
/// caller, whichever comes first, cancelling the operation and not waiting
/// for it: a hung farmer must never hold up the task that asked it.
public func withDeadline<T: Sendable>(_ seconds: Double, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    let gate = DeadlineGate<T>()
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
            gate.install(continuation)
            let work = Task {
                do { gate.finish(.success(try await operation())) } catch { gate.finish(.failure(error)) }
            }
            let timer = Task {
                try? await Task.sleep(nanoseconds: UInt64(max(0, seconds) * 1e9))
                if gate.finish(.failure(DeadlineExceeded(seconds: seconds))) { work.cancel() }
            }
            gate.onFinish { work.cancel(); timer.cancel() }
        }
    } onCancel: {
        gate.finish(.failure(CancellationError()))
    }
}

/// Resumes a continuation exactly once, whoever gets there first.
/// A lock rather than an actor: `finish` is called from a cancellation
/// handler, which must not suspend.
private final class DeadlineGate<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<T, Error>?
    private var early: Result<T, Error>?
    private var done = false
    private var cleanups: [@Sendable () -> Void] = []

    func install(_ c: CheckedContinuation<T, Error>) {
        lock.lock()
        if let early { lock.unlock(); c.resume(with: early); return }
        continuation = c
        lock.unlock()
    }

    func onFinish(_ body: @escaping @Sendable () -> Void) {
        lock.lock()
        if done { lock.unlock(); body(); return }
        cleanups.append(body)
        lock.unlock()
    }

    @discardableResult
    func finish(_ result: Result<T, Error>) -> Bool {
        lock.lock()
        guard !done else { lock.unlock(); return false }
        done = true
        let c = continuation
        continuation = nil
        if c == nil { early = result }
        let toRun = cleanups
        cleanups = []
        lock.unlock()
        c?.resume(with: result)
        if c != nil || early != nil { toRun.forEach { $0() } }
        return true
    }
}
