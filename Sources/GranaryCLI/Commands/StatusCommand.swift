import ArgumentParser

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the running mount's state.")

    func run() async throws {
        throw NotBuiltYet(command: "status", issue: "see the open issues")
    }
}
