import Testing

@testable import SIPWire

/// Feeds `chunks` one after the other, draining the framer after each, as a channel handler does.
private func frames(_ chunks: [[UInt8]], parser: SIPParser = SIPParser()) throws(SIPParseError) -> [SIPMessage] {
    var framer = SIPStreamFramer(parser: parser)
    var out: [SIPMessage] = []
    for chunk in chunks {
        framer.append(chunk)
        while let message = try framer.next() { out.append(message) }
    }
    #expect(framer.bufferedBytes == 0)
    return out
}

/// Splits `bytes` at random places (including empty chunks).
private func randomChunks(_ bytes: [UInt8], seed: UInt64, maxChunk: Int = 64) -> [[UInt8]] {
    var generator = SeededGenerator(seed: seed)
    var chunks: [[UInt8]] = []
    var index = 0
    while index < bytes.count {
        let length = Int.random(in: 0...min(maxChunk, bytes.count - index), using: &generator)
        chunks.append(Array(bytes[index..<(index + length)]))
        index += length
    }
    return chunks
}

/// A stream of messages with exact Content-Lengths, keepalives between some of them.
private enum Stream {
    static let names = ["wsinv", "esc01", "mpart01", "escnull", "unreason", "noreason", "longreq", "invut", "multi01"]

    static func messages() throws -> [[UInt8]] {
        try names.map { try Fixtures.rfc4475($0) } + [sampleRequest(body: "a\r\n\r\nb\r\n\r\n")]
    }

    static func expected() throws -> [SIPMessage] {
        try messages().map { try SIPParser().parse(datagram: $0) }
    }

    /// The messages with CRLF keepalives (RFC 5626 §4.4.1) before, between and after.
    static func bytes() throws -> [UInt8] {
        var out: [UInt8] = crlf("\n\n")
        for (i, message) in try messages().enumerated() {
            out += message
            if i % 2 == 0 { out += crlf("\n\n") }
        }
        return out + crlf("\n")
    }
}

@Suite struct SIPStreamFramerTests {
    @Test func whole() throws {
        #expect(try frames([Stream.bytes()]) == Stream.expected())
    }

    @Test func oneMessagePerChunk() throws {
        #expect(try frames(Stream.messages()) == Stream.expected())
    }

    @Test func byteByByte() throws {
        #expect(try frames(Stream.bytes().map { [$0] }) == Stream.expected())
    }

    @Test(arguments: [1, 2, 3, 42, 4475, 0xDEAD_BEEF] as [UInt64])
    func randomSplits(_ seed: UInt64) throws {
        #expect(try frames(randomChunks(Stream.bytes(), seed: seed)) == Stream.expected())
    }

    @Test func keepalivesAlone() throws {
        var framer = SIPStreamFramer()
        framer.append(crlf("\n\n"))
        #expect(try framer.next() == nil)
        framer.append(crlf("\n"))
        #expect(try framer.next() == nil)
        #expect(framer.bufferedBytes == 0)
    }

    /// RFC 5626 §3.5.1: each CRLFCRLF between messages is a ping, also when split over
    /// reads; a lone CRLF is not.
    @Test func doubleCRLFsArePings() throws {
        var framer = SIPStreamFramer()
        framer.append(bytes("\r\n"))
        #expect(try framer.next() == nil)
        #expect(framer.takePings() == 0)
        framer.append(bytes("\r\n"))
        #expect(try framer.next() == nil)
        #expect(framer.takePings() == 1)
        #expect(framer.takePings() == 0, "taken once")

        framer.append(bytes("\r\n\r\n\r\n\r\n") + sampleRequest(callID: "p") + bytes("\r\n\r\n"))
        #expect(try framer.next()?.headers["Call-ID"] == "p")
        #expect(try framer.next() == nil)
        #expect(framer.takePings() == 3)
    }

    @Test func missingContentLengthMeansNoBody() throws {
        let first = crlf("OPTIONS sip:a@example.com SIP/2.0\nVia: SIP/2.0/TCP h.example.com;branch=z9hG4bK1\nCall-ID: one\nCSeq: 1 OPTIONS\n\n")
        let second = sampleRequest(callID: "two", body: "xyz")
        let messages = try frames([first + second])
        #expect(messages.count == 2)
        #expect(messages.first?.body == [])
        #expect(messages.first?.headers["Call-ID"] == "one")
        #expect(messages.last?.headers["Call-ID"] == "two")
        #expect(messages.last?.body == bytes("xyz"))
    }

    @Test func bodyWithEmbeddedBlankLinesAtEverySplit() throws {
        let message = sampleRequest(callID: "blank", body: "\r\n\r\nline\r\n\r\n\r\n")
        let next = sampleRequest(callID: "after")
        let stream = message + next
        let expected = [try SIPParser().parse(datagram: message), try SIPParser().parse(datagram: next)]
        for split in 0...stream.count {
            let got = try frames([Array(stream[..<split]), Array(stream[split...])])
            #expect(got == expected, "split at \(split)")
        }
    }

    @Test func waitsForTheWholeBody() throws {
        var framer = SIPStreamFramer()
        let message = sampleRequest(body: "0123456789")
        framer.append(message.dropLast(1))
        #expect(try framer.next() == nil)
        framer.append(message.suffix(1))
        #expect(try framer.next()?.body == bytes("0123456789"))
        #expect(try framer.next() == nil)
    }

    @Test func oversizeHeaderBlockIs413() throws {
        let parser = SIPParser(limits: SIPLimits(maxMessageBytes: 2048, maxHeaders: 128, maxLineBytes: 8192))
        var framer = SIPStreamFramer(parser: parser)
        framer.append(crlf("INVITE sip:a@example.com SIP/2.0\n"))
        var thrown: SIPParseError?
        // A head that never ends: the framer must give up once it holds more than the limit.
        for i in 0..<200 {
            framer.append(crlf("X-Filler-\(i): 0123456789012345678901234567890123456789\n"))
            do {
                #expect(try framer.next() == nil)
            } catch {
                thrown = error
                break
            }
        }
        #expect(thrown?.status == 413)
        #expect(framer.bufferedBytes <= 2048 + 64)
    }

    @Test func oversizeContentLengthIs413BeforeTheBodyArrives() throws {
        var framer = SIPStreamFramer()
        var head = String(decoding: sampleRequest(callID: "big"), as: UTF8.self)
        head = head.replacingOccurrences(of: "Content-Length: 0", with: "Content-Length: 70000")
        framer.append(bytes(head))
        let error = #expect(throws: SIPParseError.self) { try framer.next() }
        #expect(error?.status == 413)
        #expect(error?.partialHeaders?["Call-ID"] == "big")
    }

    @Test func badContentLengthOnAStreamIs400() throws {
        for value in ["-999", "five", "1 2", "99999999999"] {
            var framer = SIPStreamFramer()
            var head = String(decoding: sampleRequest(), as: UTF8.self)
            head = head.replacingOccurrences(of: "Content-Length: 0", with: "Content-Length: \(value)")
            framer.append(bytes(head))
            let error = #expect(throws: SIPParseError.self, "\(value)") { try framer.next() }
            #expect(error?.status == 400, "\(value)")
        }
    }

    @Test func compactContentLength() throws {
        var text = String(decoding: sampleRequest(callID: "c", body: "hello"), as: UTF8.self)
        text = text.replacingOccurrences(of: "Content-Length: 5", with: "l: 5")
        let messages = try frames([bytes(text) + sampleRequest(callID: "d")])
        #expect(messages.map(\.body) == [bytes("hello"), []])
    }

    @Test func bareLineFeedsFrame() throws {
        let text = "OPTIONS sip:a@example.com SIP/2.0\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\nContent-Length: 2\n\nok"
        let messages = try frames([bytes(text + text)])
        #expect(messages.count == 2)
        #expect(messages.first?.body == bytes("ok"))
    }
}
