import LineWire
import SwitchboardTesting
import Testing

/// A random string mixing the characters escaping cares about with ordinary and non-ASCII ones.
func randomText(using generator: inout SeededGenerator) -> String {
    let alphabet = [
        "\\", "\\\\", "\n", "\r", "\r\n", "n", "r", "\\n", " ", "a", "Z",
        "é", "e\u{301}", "☃", "😀", "👩‍👩‍👧", "\u{0}", "\t", "\u{2028}",
    ]
    let count = Int.random(in: 0...40, using: &generator)
    return (0..<count).map { _ in alphabet.randomElement(using: &generator)! }.joined()
}

@Suite struct LineTextTests {
    @Test(arguments: [
        ("", ""),
        ("plain text", "plain text"),
        ("a\\b", "a\\\\b"),
        ("line1\nline2", "line1\\nline2"),
        ("cr\rlf\n", "cr\\rlf\\n"),
        ("crlf\r\n", "crlf\\r\\n"),
        ("\\n is not a newline", "\\\\n is not a newline"),
        ("☃\n😀", "☃\\n😀"),
    ])
    func escape(text: String, escaped: String) {
        #expect(LineText.escape(text) == escaped)
        #expect(LineText.unescape(escaped) == text)
    }

    @Test(arguments: [
        ("\\t", "\\t"),
        ("\\", "\\"),
        ("end\\", "end\\"),
        ("\\\\\\", "\\\\"),
        ("\\x\\n", "\\x\n"),
        ("\\N\\R", "\\N\\R"),
        ("\\☃", "\\☃"),
        ("\\\\n", "\\n"),
    ])
    func otherBackslashesAreLiteral(escaped: String, text: String) {
        #expect(LineText.unescape(escaped) == text)
    }

    @Test(arguments: 0..<200)
    func unescapeReversesEscape(seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        let text = randomText(using: &generator)
        let escaped = LineText.escape(text)
        #expect(LineText.unescape(escaped) == text)
        #expect(!escaped.utf8.contains(UInt8(ascii: "\n")))
        #expect(!escaped.utf8.contains(UInt8(ascii: "\r")))
    }

    @Test func unescapeAcceptsSubstrings() {
        let line = "SAY room a\\nb"
        #expect(LineText.unescape(line.dropFirst(9)) == "a\nb")
    }

    @Test func singleLine() {
        #expect(LineText.singleLine("no breaks") == "no breaks")
        #expect(LineText.singleLine("a\nb\rc\r\nd") == "a b c  d")
        // Other control characters are shown as `?` (no NUL or escape sequence reaches a terminal);
        // tab and non-ASCII text stay.
        #expect(LineText.singleLine("PI\u{0}NG \u{1B}[31mred\u{7F}") == "PI?NG ?[31mred?")
        #expect(LineText.singleLine("tab\there, é") == "tab\there, é")
        #expect(LineText.singleLine("☃\n") == "☃ ")
    }
}
