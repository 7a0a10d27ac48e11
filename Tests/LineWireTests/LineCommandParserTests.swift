import LineWire
import SwitchboardTesting
import Testing

@Suite struct LineCommandParserTests {
    static let valid: [(String, LineCommand)] = [
        ("AUTH alice s3cret", .auth(user: "alice", password: "s3cret")),
        ("AUTH alice correct horse battery", .auth(user: "alice", password: "correct horse battery")),
        ("AUTH alice  leading", .auth(user: "alice", password: " leading")),
        ("AUTH Alice pw\\n", .auth(user: "Alice", password: "pw\\n")),  // passwords are not unescaped
        ("JOIN lobby", .join(room: "lobby", since: nil)),
        ("JOIN lobby 0", .join(room: "lobby", since: 0)),
        ("JOIN lobby 0042", .join(room: "lobby", since: 42)),
        ("JOIN lobby 18446744073709551615", .join(room: "lobby", since: UInt64.max)),
        ("PART lobby", .part(room: "lobby")),
        ("SAY lobby hello", .say(room: "lobby", text: "hello")),
        ("SAY lobby hello  world ", .say(room: "lobby", text: "hello  world ")),
        ("SAY lobby  indented", .say(room: "lobby", text: " indented")),
        ("SAY lobby a\\nb\\r\\\\c\\td\\", .say(room: "lobby", text: "a\nb\r\\c\\td\\")),
        ("SAY lobby ☃ \u{301}x", .say(room: "lobby", text: "☃ \u{301}x")),
        ("SAY lobby \u{301}combining", .say(room: "lobby", text: "\u{301}combining")),
        ("TELL bob hi there", .tell(user: "bob", text: "hi there")),
        ("TELL bob line1\\nline2", .tell(user: "bob", text: "line1\nline2")),
        ("HISTORY lobby", .history(room: "lobby", limit: nil)),
        ("HISTORY lobby 1", .history(room: "lobby", limit: 1)),
        ("HISTORY lobby 1000", .history(room: "lobby", limit: 1000)),
        ("HISTORY dm.alice.bob 050", .history(room: "dm.alice.bob", limit: 50)),
        ("WHO lobby", .who(room: "lobby")),
        ("ROOMS", .rooms),
        ("PING", .ping(token: nil)),
        ("PING ", .ping(token: nil)),
        ("PING abc", .ping(token: "abc")),
        ("PING abc def ", .ping(token: "abc def ")),
        ("QUIT", .quit),
        // Arguments are passed on as they are; names are validated by the listener.
        ("JOIN LOBBY", .join(room: "LOBBY", since: nil)),
        ("WHO r\u{301}", .who(room: "r\u{301}")),
    ]

    @Test(arguments: valid)
    func parsesValidCommands(line: String, command: LineCommand) {
        #expect(LineCommandParser.parse(line) == .success(command))
    }

    @Test(arguments: [
        "say lobby hi", "Say lobby hi", "sAY lobby hi", "SAY lobby hi",
    ])
    func commandWordIsCaseInsensitive(line: String) {
        #expect(LineCommandParser.parse(line) == .success(.say(room: "lobby", text: "hi")))
    }

    @Test func everyCommandIsCaseInsensitive() {
        #expect(LineCommandParser.parse("auth a b") == .success(.auth(user: "a", password: "b")))
        #expect(LineCommandParser.parse("join r 5") == .success(.join(room: "r", since: 5)))
        #expect(LineCommandParser.parse("part r") == .success(.part(room: "r")))
        #expect(LineCommandParser.parse("tell u t") == .success(.tell(user: "u", text: "t")))
        #expect(LineCommandParser.parse("history r 3") == .success(.history(room: "r", limit: 3)))
        #expect(LineCommandParser.parse("who r") == .success(.who(room: "r")))
        #expect(LineCommandParser.parse("rooms") == .success(.rooms))
        #expect(LineCommandParser.parse("Ping t") == .success(.ping(token: "t")))
        #expect(LineCommandParser.parse("quit") == .success(.quit))
    }

    static let badArguments: [(String, String)] = [
        ("AUTH", "usage: AUTH <user> <password>"),
        ("AUTH alice", "usage: AUTH <user> <password>"),
        ("AUTH alice ", "usage: AUTH <user> <password>"),
        ("AUTH  pw", "usage: AUTH <user> <password>"),
        ("JOIN", "usage: JOIN <room> [<since-seq>]"),
        ("JOIN ", "usage: JOIN <room> [<since-seq>]"),
        ("JOIN lobby ", "usage: JOIN <room> [<since-seq>]"),
        ("JOIN  lobby", "usage: JOIN <room> [<since-seq>]"),
        ("JOIN lobby  5", "usage: JOIN <room> [<since-seq>]"),
        ("JOIN lobby 5 6", "usage: JOIN <room> [<since-seq>]"),
        ("JOIN lobby x", "<since-seq> must be a decimal sequence number; usage: JOIN <room> [<since-seq>]"),
        ("JOIN lobby -1", "<since-seq> must be a decimal sequence number; usage: JOIN <room> [<since-seq>]"),
        ("JOIN lobby +1", "<since-seq> must be a decimal sequence number; usage: JOIN <room> [<since-seq>]"),
        ("JOIN lobby 1.5", "<since-seq> must be a decimal sequence number; usage: JOIN <room> [<since-seq>]"),
        ("JOIN lobby ４", "<since-seq> must be a decimal sequence number; usage: JOIN <room> [<since-seq>]"),
        (
            "JOIN lobby 18446744073709551616",
            "<since-seq> must be a decimal sequence number; usage: JOIN <room> [<since-seq>]"
        ),
        ("PART", "usage: PART <room>"),
        ("PART a b", "usage: PART <room>"),
        ("PART a ", "usage: PART <room>"),
        ("SAY", "usage: SAY <room> <text>"),
        ("SAY lobby", "usage: SAY <room> <text>"),
        ("SAY lobby ", "usage: SAY <room> <text>"),
        ("SAY  text", "usage: SAY <room> <text>"),
        ("TELL", "usage: TELL <user> <text>"),
        ("TELL bob", "usage: TELL <user> <text>"),
        ("TELL bob ", "usage: TELL <user> <text>"),
        ("HISTORY", "usage: HISTORY <room> [<limit>]"),
        ("HISTORY lobby 5 6", "usage: HISTORY <room> [<limit>]"),
        ("HISTORY lobby ", "usage: HISTORY <room> [<limit>]"),
        ("HISTORY lobby 0", "<limit> must be a number from 1 to 1000; usage: HISTORY <room> [<limit>]"),
        ("HISTORY lobby 1001", "<limit> must be a number from 1 to 1000; usage: HISTORY <room> [<limit>]"),
        ("HISTORY lobby -5", "<limit> must be a number from 1 to 1000; usage: HISTORY <room> [<limit>]"),
        ("HISTORY lobby ten", "<limit> must be a number from 1 to 1000; usage: HISTORY <room> [<limit>]"),
        (
            "HISTORY lobby 99999999999999999999999",
            "<limit> must be a number from 1 to 1000; usage: HISTORY <room> [<limit>]"
        ),
        ("WHO", "usage: WHO <room>"),
        ("WHO a b", "usage: WHO <room>"),
        ("ROOMS x", "usage: ROOMS"),
        ("ROOMS ", "usage: ROOMS"),
        ("QUIT x", "usage: QUIT"),
        ("quit now", "usage: QUIT"),
    ]

    @Test(arguments: badArguments)
    func rejectsBadArguments(line: String, message: String) {
        #expect(LineCommandParser.parse(line) == .failure(LineParseError(code: "bad_arguments", message: message)))
    }

    static let expected = "expected one of AUTH, JOIN, PART, SAY, TELL, HISTORY, WHO, ROOMS, PING, QUIT"

    static let unknownCommands: [(String, String)] = [
        ("", "missing command; \(expected)"),
        (" SAY lobby hi", "missing command; \(expected)"),
        ("HELLO", "unknown command \"HELLO\"; \(expected)"),
        ("nick bob", "unknown command \"nick\"; \(expected)"),
        ("SAYX lobby hi", "unknown command \"SAYX\"; \(expected)"),
        ("SAY\tlobby hi", "unknown command \"SAY\tlobby\"; \(expected)"),
        // Only ASCII letters fold: "ſ" (long s) upper-cases to "S" in Unicode, but is not "S" here.
        ("ſay lobby hi", "unknown command \"ſay\"; \(expected)"),
        ("ＳＡＹ lobby hi", "unknown command \"ＳＡＹ\"; \(expected)"),
        ("A\rB x", "unknown command \"A B\"; \(expected)"),
        (String(repeating: "Z", count: 40), "unknown command \"\(String(repeating: "Z", count: 32))...\"; \(expected)"),
    ]

    @Test(arguments: unknownCommands)
    func rejectsUnknownCommands(line: String, message: String) {
        #expect(LineCommandParser.parse(line) == .failure(LineParseError(code: "unknown_command", message: message)))
    }

    @Test func errorMessagesAreSingleLine() {
        for (line, _) in Self.badArguments + Self.unknownCommands {
            guard case .failure(let error) = LineCommandParser.parse(line) else {
                Issue.record("\(line) parsed")
                continue
            }
            #expect(!error.message.contains("\n") && !error.message.contains("\r"))
        }
    }

    @Test func errorCodes() {
        #expect(LineParseError.Code.unknownCommand == "unknown_command")
        #expect(LineParseError.Code.badArguments == "bad_arguments")
        #expect(LineParseError.badArguments("m") == LineParseError(code: "bad_arguments", message: "m"))
        #expect(LineParseError.unknownCommand("m") == LineParseError(code: "unknown_command", message: "m"))
    }

    @Test(arguments: valid)
    func nameIsTheUpperCaseCommandWord(line: String, command: LineCommand) {
        let word = line.prefix { $0 != " " }
        #expect(command.name == word)
        #expect(LineCommandParser.commandNames.contains(command.name))
    }

    @Test func limitConstants() {
        #expect(LineCommand.defaultHistoryLimit == 50)
        #expect(LineCommand.historyLimitRange == 1...1000)
    }

    @Test(arguments: 0..<50)
    func sayTextRoundTripsThroughEscaping(seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        let text = "x" + randomText(using: &generator)  // SAY text must not be empty
        let line = "SAY lobby " + LineText.escape(text)
        #expect(LineCommandParser.parse(line) == .success(.say(room: "lobby", text: text)))
    }
}
