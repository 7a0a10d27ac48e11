import LineWire
import NIOCore
import SwitchboardTesting
import Testing

private func wire(_ reply: LineReply) -> [UInt8] {
    var buffer = ByteBuffer()
    reply.write(into: &buffer)
    return Array(buffer.readableBytesView)
}

@Suite struct LineReplyTests {
    static let golden: [(LineReply, String)] = [
        (.ok(command: "AUTH", details: "alice"), "OK AUTH alice\n"),
        (.ok(command: "QUIT", details: nil), "OK QUIT\n"),
        (.ok(command: "ROOMS", details: ""), "OK ROOMS\n"),
        (.ok(command: "JOIN", details: "lobby 42"), "OK JOIN lobby 42\n"),
        (.ok(command: "WHO", details: "lobby alice/line bob/xmpp"), "OK WHO lobby alice/line bob/xmpp\n"),
        (.ok(command: "SAY", details: "a\r\nb\nc"), "OK SAY a  b c\n"),
        (.err(code: "auth_failed", message: "invalid user or password"), "ERR auth_failed invalid user or password\n"),
        (
            .err(code: "bad_arguments", message: "usage: SAY <room> <text>"),
            "ERR bad_arguments usage: SAY <room> <text>\n"
        ),
        (.err(code: "oops", message: "two\nlines\r"), "ERR oops two lines \n"),
        (.err(code: "flood", message: ""), "ERR flood\n"),
        (
            .msg(room: "lobby", seq: 7, ts: 1_700_000_000_123, user: "alice", via: "line", text: "hello world"),
            "MSG lobby 7 1700000000123 alice line hello world\n"
        ),
        (
            .msg(room: "dm.alice.bob", seq: 18_446_744_073_709_551_615, ts: -1, user: "bob", via: "xmpp",
                 text: "multi\r\nline \\ text ☃"),
            "MSG dm.alice.bob 18446744073709551615 -1 bob xmpp multi\\r\\nline \\\\ text ☃\n"
        ),
        (.msg(room: "calls.bob", seq: 1, ts: 0, user: "alice", via: "sip", text: "[call] alice is calling bob"),
         "MSG calls.bob 1 0 alice sip [call] alice is calling bob\n"),
        (.msg(room: "r", seq: 1, ts: 2, user: "u", via: "v", text: ""), "MSG r 1 2 u v \n"),
        (.msg(room: "r\n", seq: 1, ts: 2, user: "u\r", via: "v", text: "t"), "MSG r  1 2 u  v t\n"),
        (.joined(room: "lobby", user: "alice", via: "line"), "JOINED lobby alice line\n"),
        (.parted(room: "lobby", user: "bob", via: "websocket"), "PARTED lobby bob websocket\n"),
        (.pong(token: nil), "PONG\n"),
        (.pong(token: ""), "PONG\n"),
        (.pong(token: "abc 123"), "PONG abc 123\n"),
        (.pong(token: "a\rb"), "PONG a b\n"),
    ]

    @Test(arguments: golden)
    func encodesGoldenLines(reply: LineReply, line: String) {
        #expect(wire(reply) == Array(line.utf8))
        #expect(reply.description == String(line.dropLast()))
    }

    @Test(arguments: golden)
    func everyReplyIsExactlyOneLine(reply: LineReply, line: String) {
        let bytes = wire(reply)
        #expect(bytes.last == UInt8(ascii: "\n"))
        #expect(bytes.dropLast().allSatisfy { $0 != UInt8(ascii: "\n") && $0 != UInt8(ascii: "\r") })
    }

    @Test func writeAppendsToExistingBytes() {
        var buffer = ByteBuffer(string: "PONG\n")
        LineReply.ok(command: "SAY", details: "3").write(into: &buffer)
        LineReply.joined(room: "r", user: "u", via: "line").write(into: &buffer)
        #expect(buffer.readString(length: buffer.readableBytes) == "PONG\nOK SAY 3\nJOINED r u line\n")
    }

    @Test(arguments: 0..<50)
    func msgTextRoundTripsThroughTheDecoder(seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        let text = randomText(using: &generator)
        var buffer = ByteBuffer()
        LineReply.msg(room: "lobby", seq: 1, ts: 2, user: "alice", via: "line", text: text).write(into: &buffer)
        var decoder = LineFrameDecoder(maxLineBytes: 4096)
        decoder.append(&buffer)
        guard case .line(let line) = decoder.next() else {
            Issue.record("no line")
            return
        }
        #expect(decoder.next() == nil)
        let prefix = "MSG lobby 1 2 alice line "
        #expect(line.hasPrefix(prefix))
        #expect(LineText.unescape(line.dropFirst(prefix.count)) == text)
    }
}
