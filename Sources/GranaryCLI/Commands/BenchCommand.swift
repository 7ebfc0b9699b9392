import ArgumentParser

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "The project's benchmarks; every figure next to a baseline from the same run.",
        subcommands: [TransferBench.self, DHTBench.self, NetworkBench.self])

    func run() async throws { throw NotBuiltYet(command: "bench", issue: "see the open issues") }
}
