import ArgumentParser

struct FarmCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "farm", abstract: "Run a farmer.")

    func run() async throws {
        throw NotBuiltYet(command: "farm", issue: "see the open issues")
    }
}
