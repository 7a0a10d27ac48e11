/// Parses one line from a line-protocol client into a ``LineCommand``.
///
/// The command word is case-insensitive (ASCII only: `join` and `JOIN` are the same command).
/// Arguments are separated by single spaces, so an empty argument (two spaces in a row, or a
/// trailing space) is a ``LineParseError/Code/badArguments`` error. A `<text…>` or password
/// argument is the rest of the line after exactly one space; it may contain spaces and must not be
/// empty. `SAY` and `TELL` text is unescaped with ``LineText/unescape(_:)``.
///
/// ```swift
/// switch LineCommandParser.parse(line) {
/// case .success(let command): …
/// case .failure(let error): reply(.err(code: error.code, message: error.message))
/// }
/// ```
public enum LineCommandParser {
    /// At most this many characters of an unknown command word are quoted in the error message.
    public static let maxQuotedCommandLength = 32

    /// The command words of the protocol, in the order they are listed in error messages.
    public static let commandNames = [
        "AUTH", "JOIN", "PART", "SAY", "TELL", "HISTORY", "WHO", "ROOMS", "PING", "QUIT",
    ]

    /// Parses `line`, which must not contain its line ending.
    ///
    /// - Returns: the command, or a ``LineParseError`` with code `unknown_command` or
    ///   `bad_arguments` and a message that gives the expected syntax.
    public static func parse(_ line: String) -> Result<LineCommand, LineParseError> {
        let (word, rest) = Self.splitAtFirstSpace(Array(line.utf8)[...])
        let name = Self.asciiUppercased(word)
        switch name {
        case "AUTH":
            guard let (user, password) = Self.nameAndRest(rest) else {
                return .failure(Self.usageError(name))
            }
            return .success(.auth(user: Self.string(user), password: Self.string(password)))

        case "SAY", "TELL":
            guard let (targetBytes, textBytes) = Self.nameAndRest(rest) else {
                return .failure(Self.usageError(name))
            }
            let target = Self.string(targetBytes)
            let text = LineText.unescape(Self.string(textBytes))
            return .success(name == "SAY" ? .say(room: target, text: text) : .tell(user: target, text: text))

        case "JOIN":
            guard let fields = Self.fields(rest, count: 1...2) else {
                return .failure(Self.usageError(name))
            }
            var since: UInt64?
            if fields.count == 2 {
                guard let value = Self.decimal(fields[1]) else {
                    return .failure(Self.usageError(name, reason: "<since-seq> must be a decimal sequence number"))
                }
                since = value
            }
            return .success(.join(room: Self.string(fields[0]), since: since))

        case "HISTORY":
            guard let fields = Self.fields(rest, count: 1...2) else {
                return .failure(Self.usageError(name))
            }
            var limit: Int?
            if fields.count == 2 {
                let range = LineCommand.historyLimitRange
                guard let value = Self.decimal(fields[1]), value <= UInt64(range.upperBound),
                    range.contains(Int(value))
                else {
                    let reason = "<limit> must be a number from \(range.lowerBound) to \(range.upperBound)"
                    return .failure(Self.usageError(name, reason: reason))
                }
                limit = Int(value)
            }
            return .success(.history(room: Self.string(fields[0]), limit: limit))

        case "PART", "WHO":
            guard let fields = Self.fields(rest, count: 1...1) else {
                return .failure(Self.usageError(name))
            }
            let room = Self.string(fields[0])
            return .success(name == "PART" ? .part(room: room) : .who(room: room))

        case "ROOMS", "QUIT":
            guard rest == nil else {
                return .failure(Self.usageError(name))
            }
            return .success(name == "ROOMS" ? .rooms : .quit)

        case "PING":
            guard let rest, !rest.isEmpty else {
                return .success(.ping(token: nil))
            }
            return .success(.ping(token: Self.string(rest)))

        default:
            return .failure(Self.unknownCommandError(word))
        }
    }

    /// The syntax of each command, as quoted in `bad_arguments` messages.
    static func usage(_ name: String) -> String {
        switch name {
        case "AUTH": "AUTH <user> <password>"
        case "JOIN": "JOIN <room> [<since-seq>]"
        case "PART": "PART <room>"
        case "SAY": "SAY <room> <text>"
        case "TELL": "TELL <user> <text>"
        case "HISTORY": "HISTORY <room> [<limit>]"
        case "WHO": "WHO <room>"
        case "ROOMS": "ROOMS"
        case "PING": "PING [<token>]"
        case "QUIT": "QUIT"
        default: name
        }
    }

    // MARK: - Errors

    private static func usageError(_ name: String, reason: String? = nil) -> LineParseError {
        let usage = "usage: \(Self.usage(name))"
        return .badArguments(reason.map { "\($0); \(usage)" } ?? usage)
    }

    private static func unknownCommandError(_ word: ArraySlice<UInt8>) -> LineParseError {
        let expected = "expected one of \(Self.commandNames.joined(separator: ", "))"
        guard !word.isEmpty else {
            return .unknownCommand("missing command; \(expected)")
        }
        var quoted = Self.string(word)
        if quoted.count > Self.maxQuotedCommandLength {
            quoted = String(quoted.prefix(Self.maxQuotedCommandLength)) + "..."
        }
        return .unknownCommand("unknown command \"\(LineText.singleLine(quoted))\"; \(expected)")
    }

    // MARK: - Tokens
    //
    // The line is split on its UTF-8 bytes: a space is a single byte that never occurs inside a
    // multi-byte sequence, so every piece is valid UTF-8 again, and a space followed by a
    // combining mark still separates arguments (which a split by `Character` would miss).

    /// Splits at the first space: the part before it, and the part after it (`nil` when there is
    /// no space at all).
    private static func splitAtFirstSpace(
        _ bytes: ArraySlice<UInt8>
    ) -> (head: ArraySlice<UInt8>, tail: ArraySlice<UInt8>?) {
        guard let space = bytes.firstIndex(of: .space) else {
            return (bytes, nil)
        }
        return (bytes[..<space], bytes[(space + 1)...])
    }

    /// `<name> <rest…>` with both parts non-empty, as for AUTH, SAY and TELL.
    private static func nameAndRest(
        _ arguments: ArraySlice<UInt8>?
    ) -> (ArraySlice<UInt8>, ArraySlice<UInt8>)? {
        guard let arguments else { return nil }
        let (name, rest) = Self.splitAtFirstSpace(arguments)
        guard !name.isEmpty, let rest, !rest.isEmpty else { return nil }
        return (name, rest)
    }

    /// Space-separated arguments, all non-empty, whose number is in `count`.
    private static func fields(
        _ arguments: ArraySlice<UInt8>?,
        count: ClosedRange<Int>
    ) -> [ArraySlice<UInt8>]? {
        guard let arguments else {
            return count.contains(0) ? [] : nil
        }
        let fields = arguments.split(separator: .space, omittingEmptySubsequences: false)
        guard count.contains(fields.count), !fields.contains(where: \.isEmpty) else { return nil }
        return fields
    }

    /// A non-empty run of ASCII decimal digits that fits in `UInt64`.
    private static func decimal(_ bytes: ArraySlice<UInt8>) -> UInt64? {
        guard !bytes.isEmpty, bytes.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else {
            return nil
        }
        return UInt64(Self.string(bytes))
    }

    private static func asciiUppercased(_ bytes: ArraySlice<UInt8>) -> String {
        String(
            decoding: bytes.map { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) ? $0 - 0x20 : $0 },
            as: UTF8.self
        )
    }

    private static func string(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes, as: UTF8.self)
    }
}
