import ArgumentParser

struct MountCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "mount", abstract: "Mount a renter against a network.")

    func run() async throws {
        throw NotBuiltYet(command: "mount", issue: "see the open issues")
    }
}
