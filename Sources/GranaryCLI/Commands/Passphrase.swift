import ArgumentParser
import Foundation
import GranaryCore

/// Where a key file's passphrase comes from, in this order: the file named
/// by `--passphrase-file` (its first line), the environment variable
/// GRANARY_PASSPHRASE, or a prompt without echo when stdin is a terminal.
/// A script without a terminal that gives neither gets a clear error, never
/// a hang.
struct PassphraseSource {
    var file: String?
    var environmentName = "GRANARY_PASSPHRASE"

    static let environmentName = "GRANARY_PASSPHRASE"

    /// Whether a passphrase can be had without a prompt.
    var isGivenNonInteractively: Bool { file != nil || ProcessInfo.processInfo.environment[environmentName] != nil }

    /// A passphrase to open an existing key, or nil when none can be had.
    func forUnlocking(_ what: String) throws -> [UInt8]? {
        if let given = try given() { return given }
        guard TerminalPrompt.isAvailable else { return nil }
        return try TerminalPrompt.secret("Passphrase for \(what): ")
    }

    /// A passphrase for a new key file, asked twice on a terminal; nil
    /// when none can be had.
    func forNewKey(_ what: String) throws -> [UInt8]? {
        if let given = try given() { return given }
        guard TerminalPrompt.isAvailable else { return nil }
        let first = try TerminalPrompt.secret("New passphrase for \(what): ")
        let again = try TerminalPrompt.secret("Same passphrase again: ")
        guard first == again else { throw ValidationError("the two passphrases differ; nothing was written") }
        return first
    }

    private func given() throws -> [UInt8]? {
        var text: String?
        var origin = ""
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw ValidationError("cannot read the passphrase file \(file)")
            }
            text = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init)
            origin = file
        } else if let env = ProcessInfo.processInfo.environment[environmentName] {
            text = env
            origin = environmentName
        }
        guard var text else { return nil }
        if text.hasSuffix("\r") { text.removeLast() }
        guard !text.isEmpty else { throw ValidationError("the passphrase from \(origin) is empty") }
        return Array(text.utf8)
    }
}

/// Reads a line from the terminal on stdin without echoing it.
enum TerminalPrompt {
    static var isAvailable: Bool { isatty(STDIN_FILENO) == 1 }

    static func secret(_ prompt: String) throws -> [UInt8] {
        FileHandle.standardError.write(Data(prompt.utf8))
        var saved = termios()
        let haveTerm = tcgetattr(STDIN_FILENO, &saved) == 0
        if haveTerm {
            var quiet = saved
            quiet.c_lflag &= ~tcflag_t(ECHO)
            quiet.c_lflag |= tcflag_t(ECHONL)
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet)
        }
        defer { if haveTerm { tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved) } }
        guard let line = readLine(strippingNewline: true) else { throw ValidationError("no passphrase given (end of input)") }
        guard !line.isEmpty else { throw ValidationError("an empty passphrase protects nothing; to keep a key without one, say --plain") }
        return Array(line.utf8)
    }

    /// A line typed at the terminal (echoed), e.g. a recovery phrase.
    static func line(_ prompt: String) -> String? {
        FileHandle.standardError.write(Data(prompt.utf8))
        return readLine(strippingNewline: true)
    }
}
