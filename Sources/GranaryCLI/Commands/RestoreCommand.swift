import ArgumentParser

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "restore", abstract: "Rebuild a folder on a new machine from the key alone.")

    func run() async throws {
        throw NotBuiltYet(command: "restore", issue: "see the open issues")
    }
}
