import Testing

@testable import SIPWire

private let small = SIPLimits(maxMessageBytes: 4096, maxHeaders: 10, maxLineBytes: 200)

/// A request with `extra` header fields besides the 7 of the base.
private func request(extraHeaders: Int = 0, headerLine: String? = nil, body: String = "") -> [UInt8] {
    var text = "OPTIONS sip:a@example.com SIP/2.0\nVia: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\n"
        + "To: <sip:a@example.com>\nFrom: <sip:b@example.com>;tag=1\nCall-ID: limits\nCSeq: 1 OPTIONS\n"
    for i in 0..<extraHeaders { text += "X-\(i): v\n" }
    if let headerLine { text += headerLine + "\n" }
    text += "Content-Length: \(body.utf8.count)\n\n"
    return crlf(text) + bytes(body)
}

@Suite struct SIPLimitsTests {
    @Test func headerCountAtAndOverTheLimit() throws {
        // 5 + 4 + Content-Length = 10 fields: fine. One more: 413.
        #expect(throws: Never.self) { try SIPParser(limits: small).parse(datagram: request(extraHeaders: 4)) }
        let error = #expect(throws: SIPParseError.self) { try SIPParser(limits: small).parse(datagram: request(extraHeaders: 5)) }
        #expect(error?.status == 413)
        #expect(error?.code == "too_large")
    }

    @Test func defaultHeaderLimit() throws {
        let error = #expect(throws: SIPParseError.self) { try SIPParser().parse(datagram: request(extraHeaders: 200)) }
        #expect(error?.status == 413)
    }

    @Test func lineLengthAtAndOverTheLimit() throws {
        let fits = "X-Long: " + String(repeating: "a", count: 200 - 8)
        #expect(throws: Never.self) { try SIPParser(limits: small).parse(datagram: request(headerLine: fits)) }
        let error = #expect(throws: SIPParseError.self) {
            try SIPParser(limits: small).parse(datagram: request(headerLine: fits + "a"))
        }
        #expect(error?.status == 413)
    }

    @Test func foldedLineOverTheLimit() throws {
        let folded = "X-Folded: " + String(repeating: "a", count: 120) + "\n " + String(repeating: "b", count: 120)
        let error = #expect(throws: SIPParseError.self) { try SIPParser(limits: small).parse(datagram: request(headerLine: folded)) }
        #expect(error?.status == 413)
    }

    @Test func startLineOverTheLimit() throws {
        let text = "OPTIONS sip:" + String(repeating: "a", count: 300) + "@example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n"
        let error = #expect(throws: SIPParseError.self) { try SIPParser(limits: small).parse(datagram: bytes(text)) }
        #expect(error?.status == 413)
    }

    @Test func oversizeDatagram() throws {
        // "Content-Length: 0" becomes "Content-Length: 40xx": three more digits.
        let fits = request(body: String(repeating: "x", count: 4096 - request().count - 3))
        #expect(fits.count == 4096)
        #expect(throws: Never.self) { try SIPParser(limits: small).parse(datagram: fits) }
        let error = #expect(throws: SIPParseError.self) { try SIPParser(limits: small).parse(datagram: fits + [0]) }
        #expect(error?.status == 413)
        let huge = [UInt8](repeating: UInt8(ascii: "A"), count: 70_000)
        #expect((try? SIPParser().parse(datagram: huge)) == nil)
        #expect({ if case .failure(let e) = parseDatagram(huge) { e.status == 413 } else { false } }())
    }

    @Test func emptyAndBlankDatagrams() {
        for datagram in [[], crlf("\n"), crlf("\n\n\n"), bytes(" "), bytes(":")] as [[UInt8]] {
            #expect(throws: SIPParseError.self) { try SIPParser().parse(datagram: datagram) }
        }
    }

    @Test func contentLengthLargerThanTheDatagram() throws {
        var text = String(decoding: request(body: "abc"), as: UTF8.self)
        text = text.replacingOccurrences(of: "Content-Length: 3", with: "Content-Length: 4")
        let error = #expect(throws: SIPParseError.self) { try SIPParser().parse(datagram: bytes(text)) }
        #expect(error?.status == 400)
    }

    @Test func maxForwardsAndExpiresRanges() throws {
        func mf(_ value: String) throws -> Int? {
            var r = SIPRequest(method: .options, uri: SIPURI(host: "example.com"))
            r.headers.add("Max-Forwards", value)
            return try r.maxForwards()
        }
        #expect(try mf("70") == 70)
        #expect(try mf("0068") == 68)  // RFC 3261: Max-Forwards = 1*DIGIT; RFC 4475 wsinv sends 0068
        #expect(try mf("255") == 255)
        #expect(throws: SIPParseError.self) { try mf("256") }
        #expect(throws: SIPParseError.self) { try mf("-1") }
        #expect(throws: SIPParseError.self) { try mf("seven") }
    }

    @Test func cseqRange() throws {
        #expect(try SIPCSeq(parsing: "4294967295 INVITE").number == 4_294_967_295)
        #expect(try SIPCSeq(parsing: "0009  INVITE") == SIPCSeq(number: 9, method: .invite))
        #expect(throws: SIPParseError.self) { try SIPCSeq(parsing: "4294967296 INVITE") }
        #expect(throws: SIPParseError.self) { try SIPCSeq(parsing: "1") }
        #expect(throws: SIPParseError.self) { try SIPCSeq(parsing: "x INVITE") }
        #expect(try SIPCSeq(parsing: " 2\tREGISTER ") == SIPCSeq(number: 2, method: .register))
        #expect(throws: SIPParseError.self) { try SIPCSeq(parsing: "1 INVITE extra") }
        #expect(throws: SIPParseError.self) { try SIPCSeq(parsing: "1 ") }
        #expect(throws: SIPParseError.self) { try SIPCSeq(parsing: "1 INV@TE") }
        #expect(throws: SIPParseError.self) { try SIPCSeq(parsing: "1 INVITE extra") }
    }
}

// MARK: - Fuzz

/// Applies one random mutation.
private func mutate(_ input: [UInt8], using generator: inout SeededGenerator) -> [UInt8] {
    var bytes = input
    let interesting: [UInt8] = Array("\r\n \t:;,<>\"\\%@?=/0".utf8) + [0, 0x7F, 0x80, 0xC3, 0xFF]
    let count = Int.random(in: 1...4, using: &generator)
    for _ in 0..<count {
        guard !bytes.isEmpty else { bytes = [UInt8.random(in: 0...255, using: &generator)]; continue }
        let at = Int.random(in: 0..<bytes.count, using: &generator)
        switch Int.random(in: 0..<7, using: &generator) {
        case 0:  // bit flip
            bytes[at] ^= 1 << UInt8.random(in: 0...7, using: &generator)
        case 1:  // truncation
            bytes.removeSubrange(at...)
        case 2:  // insertion of an interesting byte
            bytes.insert(interesting.randomElement(using: &generator)!, at: at)
        case 3:  // insertion of random bytes
            let n = Int.random(in: 1...8, using: &generator)
            bytes.insert(contentsOf: (0..<n).map { _ in UInt8.random(in: 0...255, using: &generator) }, at: at)
        case 4:  // deletion
            let end = min(bytes.count, at + Int.random(in: 1...16, using: &generator))
            bytes.removeSubrange(at..<end)
        case 5:  // duplication of a slice
            let end = min(bytes.count, at + Int.random(in: 1...64, using: &generator))
            bytes.insert(contentsOf: bytes[at..<end], at: Int.random(in: 0...bytes.count, using: &generator))
        default:  // overwrite with an interesting byte
            bytes[at] = interesting.randomElement(using: &generator)!
        }
    }
    return bytes
}

/// Everything a handler might call on a message that parsed.
private func exercise(_ message: SIPMessage) {
    if case .request(var request) = message {
        _ = try? request.validate()
        _ = request.uri.description
        _ = request.uri.addressOfRecord
        _ = request.uri.matchKey
    }
    let carrier: any SIPHeaderCarrying = message.request.map { $0 as any SIPHeaderCarrying } ?? message.response!
    _ = try? carrier.vias()
    _ = try? carrier.contacts()
    _ = try? carrier.routes()
    _ = try? carrier.routes("Record-Route")
    _ = try? carrier.from().description
    _ = try? carrier.to().description
    _ = try? carrier.cseq()
    _ = try? carrier.maxForwards()
    _ = try? carrier.expires()
    _ = carrier.contactsAreWildcard
    for value in message.headers.all("Authorization") { _ = try? SIPDigestCredentials(parsing: value) }
}

@Suite struct SIPFuzzTests {
    static let seeds: [[UInt8]] = {
        var seeds = [sampleRequest(body: "hello\r\n\r\nworld"), sampleRequest()]
        for name in ["wsinv", "intmeth", "esc01", "escnull", "mpart01", "unreason", "noreason", "longreq", "regescrt", "unksm2"] {
            if let bytes = try? Fixtures.rfc4475(name) { seeds.append(bytes) }
        }
        seeds.append(crlf("""
            REGISTER sip:example.com SIP/2.0
            Via: SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bKabc;rport
            From: "A \\"B\\"" <sips:a@example.com>;tag=x
            To: <sips:a@example.com>
            Call-ID: fuzz
            CSeq: 2 REGISTER
            Contact: *
            Authorization: Digest username="a", realm="r", nonce="n", uri="sip:example.com", response="00", qop=auth, nc=00000001, cnonce="c"
            Expires: 0
            Content-Length: 0


            """))
        return seeds
    }()

    @Test(arguments: 0..<4 as Range<UInt64>)
    func mutatedDatagramsParseOrThrow(_ round: UInt64) {
        var generator = SeededGenerator(seed: 0x5151_0000 + round)
        var parsed = 0, refused = 0
        for _ in 0..<1000 {
            let seed = Self.seeds.randomElement(using: &generator)!
            let input = mutate(seed, using: &generator)
            switch parseDatagram(input) {
            case .success(let message):
                parsed += 1
                exercise(message)
                // Whatever is accepted can be sent on and read again.
                let wire = message.serialize()
                if case .failure(let error) = parseDatagram(wire) {
                    Issue.record("re-serialized message does not parse: \(error)\n\(String(decoding: wire, as: UTF8.self))")
                }
            case .failure(let error):
                refused += 1
                #expect([400, 413, 505].contains(error.status), "\(error)")
            }
        }
        #expect(parsed + refused == 1000)
    }

    @Test func mutatedStreamsFrameOrThrow() {
        var generator = SeededGenerator(seed: 0xF4A3E)
        for _ in 0..<500 {
            var stream: [UInt8] = []
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                stream += mutate(Self.seeds.randomElement(using: &generator)!, using: &generator)
            }
            var framer = SIPStreamFramer()
            var index = 0
            var steps = 0
            streaming: while index < stream.count {
                let length = Int.random(in: 1...256, using: &generator)
                framer.append(stream[index..<min(stream.count, index + length)])
                index += length
                do {
                    while let message = try framer.next() {
                        exercise(message)
                        steps += 1
                        if steps > 10_000 {
                            Issue.record("framer does not make progress")
                            break streaming
                        }
                    }
                } catch {
                    #expect([400, 413, 505].contains(error.status), "\(error)")
                    break streaming
                }
            }
        }
    }
}
