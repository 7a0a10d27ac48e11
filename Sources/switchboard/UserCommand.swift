import ArgumentParser
import Foundation
import SwitchboardCore
import SwitchboardStore

#if canImport(Glibc)
import Glibc
#endif

/// `switchboard user add|del|list|passwd`.
struct UserCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user",
        abstract: "Manage accounts (passwords are stored only as salted PBKDF2/SCRAM keys and SIP digests).",
        subcommands: [Add.self, Delete.self, List.self, Passwd.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an account.")
        @OptionGroup var config: ConfigOptions
        @Argument(help: "User name: 1–32 of a-z 0-9 _ -.") var name: String
        @Flag(help: "Read the password from the first line of standard input.") var passwordStdin = false

        func run() async throws {
            let configuration = try config.load()
            let user = try parseUser(name)
            let password = try readPassword(fromStdin: passwordStdin)
            let credentials = try deriveCredentials(user, password, configuration)
            let store = try openStore(configuration)
            do {
                try await store.createAccount(credentials, now: Int64(Date().timeIntervalSince1970 * 1000))
            } catch let error as SwitchboardError {
                throw CommandError(error.message)
            }
            print("user \(user) added")
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "del", abstract: "Delete an account.")
        @OptionGroup var config: ConfigOptions
        @Argument(help: "User name.") var name: String

        func run() async throws {
            let configuration = try config.load()
            let user = try parseUser(name)
            guard try await openStore(configuration).deleteAccount(user) else {
                throw CommandError("no user named \(user)")
            }
            print("user \(user) deleted")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List accounts, one per line.")
        @OptionGroup var config: ConfigOptions

        func run() async throws {
            let configuration = try config.load()
            for account in try await openStore(configuration).listAccounts() {
                print(account.user.rawValue)
            }
        }
    }

    struct Passwd: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change an account's password.")
        @OptionGroup var config: ConfigOptions
        @Argument(help: "User name.") var name: String
        @Flag(help: "Read the new password from the first line of standard input.") var passwordStdin = false

        func run() async throws {
            let configuration = try config.load()
            let user = try parseUser(name)
            let store = try openStore(configuration)
            guard try await store.credentials(for: user) != nil else { throw CommandError("no user named \(user)") }
            let password = try readPassword(fromStdin: passwordStdin)
            let credentials = try deriveCredentials(user, password, configuration)
            guard try await store.updateCredentials(credentials) else { throw CommandError("no user named \(user)") }
            print("password of \(user) changed")
        }
    }
}

func parseUser(_ name: String) throws -> UserName {
    guard let user = UserName(name), user.rawValue == name.lowercased() else {
        throw CommandError("'\(name)' is not a valid user name (1–32 characters of a-z 0-9 _ -)")
    }
    return user
}

func deriveCredentials(_ user: UserName, _ password: String, _ configuration: SwitchboardConfiguration) throws -> StoredCredentials {
    do {
        return try StoredCredentials.derive(
            user: user, password: password, realm: configuration.string("server", "domain"),
            iterations: configuration.int("accounts", "pbkdf2_iterations"))
    } catch let error as SwitchboardError {
        throw CommandError(error.message)
    }
}

/// The password from stdin's first line, or typed at the terminal without echo.
func readPassword(fromStdin: Bool) throws -> String {
    if fromStdin {
        guard let line = readLine(strippingNewline: true), !line.isEmpty else {
            throw CommandError("no password on standard input")
        }
        return line
    }
    guard isatty(STDIN_FILENO) == 1 else {
        throw CommandError("standard input is not a terminal; pass --password-stdin to read the password from it")
    }
    guard let first = getpass("Password: ").map({ String(cString: $0) }), !first.isEmpty else {
        throw CommandError("empty password")
    }
    guard let second = getpass("Again: ").map({ String(cString: $0) }), second == first else {
        throw CommandError("the passwords do not match")
    }
    return first
}
