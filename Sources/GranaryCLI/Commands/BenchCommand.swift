import ArgumentParser

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "The project's benchmarks; every figure next to a baseline measured in the same run.",
        discussion: "Run them on a release build (swift build -c release): debug builds are orders of magnitude slower on hot paths.",
        subcommands: [CoreBench.self, TransferBench.self, DHTBench.self, NetworkBench.self, MountBench.self])
}
