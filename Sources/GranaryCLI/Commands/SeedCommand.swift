import ArgumentParser

struct SeedCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "seed", abstract: "Run a DHT bootstrap node.")

    func run() async throws {
        throw NotBuiltYet(command: "seed", issue: "see the open issues")
    }
}
