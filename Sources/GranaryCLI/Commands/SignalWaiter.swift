import Dispatch
import Foundation

/// Turns SIGINT/SIGTERM into an awaitable event (the default handlers are
/// replaced so the process can shut down cleanly: save state, close sockets).
final class SignalWaiter: @unchecked Sendable {
    // @unchecked: the sources are created once in init and only cancelled;
    // the stream's continuation is thread-safe.
    private var sources: [DispatchSourceSignal] = []
    private let stream: AsyncStream<Int32>

    init(_ signals: [Int32]) {
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        self.stream = stream
        for s in signals {
            signal(s, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: s, queue: .global())
            source.setEventHandler { continuation.yield(s) }
            source.resume()
            sources.append(source)
        }
    }

    /// The next signal delivered (0 once cancelled). One waiter at a time.
    func wait() async -> Int32 {
        for await s in stream { return s }
        return 0
    }

    func cancel() { sources.forEach { $0.cancel() } }
}
