/// Runs one round of some work at a time: a caller arriving while a round
/// runs waits for that round and gets its result instead of starting a
/// second one beside it.
///
/// The round runs in a task of its own, so a caller that is cancelled does
/// not cancel it for the others (nor a contract proposal halfway through).
actor SingleFlight<Result: Sendable> {
    private var running: Task<Result, Never>?

    func run(_ body: @escaping @Sendable () async -> Result) async -> Result {
        if let running { return await running.value }
        let task = Task { await body() }
        running = task
        let result = await task.value
        running = nil
        return result
    }
}
