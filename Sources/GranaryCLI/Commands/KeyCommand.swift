import ArgumentParser

struct KeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key", abstract: "Key custody: export and import the renter's master key.",
        subcommands: [Export.self, Import.self])

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a recovery phrase or write a key file.")
        func run() async throws { throw NotBuiltYet(command: "key export", issue: "see the open issues") }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Rebuild the key file from a recovery phrase or file.")
        func run() async throws { throw NotBuiltYet(command: "key import", issue: "see the open issues") }
    }
}
