import ArgumentParser

struct FlushCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "flush", abstract: "Wait until every dirty byte is durable on the network.")

    func run() async throws {
        throw NotBuiltYet(command: "flush", issue: "see the open issues")
    }
}
