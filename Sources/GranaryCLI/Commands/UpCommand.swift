import ArgumentParser

struct UpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "up", abstract: "Embedded network plus mount.")

    func run() async throws {
        throw NotBuiltYet(command: "up", issue: "see the open issues")
    }
}
