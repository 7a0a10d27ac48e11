import Testing

@testable import SIPWire

/// Checks the framing rules of a serialized message: CRLF only as line ends, one
/// Content-Length that matches the body, the body right after the blank line.
private func checkWireForm(_ wire: [UInt8], body: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
    guard let end = SIPParser.findHeaderEnd(wire, from: 0) else {
        Issue.record("no end of head", sourceLocation: sourceLocation)
        return
    }
    // findHeaderEnd points at the LF that ends the last header line.
    var head = Array(wire[..<end.0])
    #expect(head.last == 13, "last header line ends in CRLF", sourceLocation: sourceLocation)
    head.removeLast()
    for (i, b) in head.enumerated() {
        if b == 13 { #expect(i + 1 < head.count && head[i + 1] == 10, "bare CR in head", sourceLocation: sourceLocation) }
        if b == 10 { #expect(i > 0 && head[i - 1] == 13, "bare LF in head", sourceLocation: sourceLocation) }
    }
    let lines = String(decoding: head, as: UTF8.self).components(separatedBy: "\r\n")
    let lengths = lines.filter { $0.lowercased().hasPrefix("content-length:") }
    #expect(lengths == ["Content-Length: \(body.count)"], sourceLocation: sourceLocation)
    // Every header line is `name: value` and never a continuation.
    for line in lines.dropFirst() {
        #expect(line.first != " " && line.first != "\t", "folded line \(line)", sourceLocation: sourceLocation)
        #expect(line.contains(":"), "line without colon \(line)", sourceLocation: sourceLocation)
    }
    #expect(Array(wire[end.1...]) == body, sourceLocation: sourceLocation)
}

/// The fixtures that parse: what a gateway may have to re-emit.
private let parsableFixtures = [
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq", "semiuri", "transports",
    "mpart01", "unreason", "noreason", "scalar02", "scalarlg", "quotbal", "escruri", "baddate", "regbadct",
    "badaspec", "baddn", "mismatch01", "mismatch02", "badbranch", "insuf", "unkscm", "novelsc", "unksm2",
    "bext01", "invut", "regaut01", "multi01", "bcast", "zeromf", "cparam01", "cparam02", "regescrt", "sdp01",
    "inv2543", "badinv01",
]

@Suite struct SIPRoundTripTests {
    @Test(arguments: parsableFixtures)
    func fixtureRoundTrip(_ name: String) throws {
        let first = try SIPParser().parse(datagram: try Fixtures.rfc4475(name))
        let wire = first.serialize()
        checkWireForm(wire, body: first.body)
        let second = try SIPParser().parse(datagram: wire)
        // Same message, except that Content-Length is rewritten (and moved last).
        #expect(second.withoutContentLength == first.withoutContentLength)
        #expect(second.headers["Content-Length"] == "\(first.body.count)")
        // A second trip is byte-exact.
        #expect(second.serialize() == wire)
    }

    @Test func serializationSetsContentLength() throws {
        var request = SIPRequest(method: .message, uri: SIPURI(user: "bob", host: "example.com"))
        request.headers.add("Content-Length", "9999")
        request.headers.add("l", "12")
        request.body = bytes("hello\r\n\r\nworld")
        let wire = request.serialize()
        checkWireForm(wire, body: request.body)

        var empty = SIPResponse(status: 200)
        empty.headers.add("Content-Length", "5")
        checkWireForm(empty.serialize(), body: [])
        #expect(empty.serialize() == bytes("SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"))
    }

    @Test func headerValuesNeverCarryLineBreaks() throws {
        var request = SIPRequest(method: .options, uri: SIPURI(host: "example.com"))
        request.headers.add("Subject", "hi\r\nVia: SIP/2.0/UDP evil.example.com")
        request.headers.add("X-Bare", "a\nb\rc")
        let wire = request.serialize()
        checkWireForm(wire, body: [])
        let parsed = try SIPParser().parse(datagram: wire)
        #expect(parsed.headers["Via"] == nil)
        #expect(parsed.headers["Subject"] == "hiVia: SIP/2.0/UDP evil.example.com")
        #expect(parsed.headers["X-Bare"] == "abc")
    }

    @Test func headerNamesNeverCarryLineBreaks() throws {
        var request = SIPRequest(method: .options, uri: SIPURI(host: "example.com"))
        request.headers.add("X-Evil\r\nVia", "SIP/2.0/UDP evil.example.com")
        let wire = request.serialize()
        checkWireForm(wire, body: [])
        #expect(try SIPParser().parse(datagram: wire).headers["Via"] == nil)
    }

    @Test func reasonPhraseNeverCarriesLineBreaks() throws {
        let response = SIPResponse(status: 486, reason: "Busy\r\nVia: SIP/2.0/UDP evil.example.com")
        let wire = response.serialize()
        checkWireForm(wire, body: [])
        let parsed = try #require(try SIPParser().parse(datagram: wire).response)
        #expect(parsed.status == 486)
        #expect(parsed.headers["Via"] == nil)
    }

    @Test(arguments: [
        ("alice", "alice"),
        ("I have spaces", "I%20have%20spaces"),
        ("sips:user@example.com", "sips%3Auser%40example.com"),
        ("null-\u{0}-null", "null-%00-null"),
        ("user;par=u@example.net", "user;par=u%40example.net"),
        ("100%", "100%25"),
        ("+1-555-0100", "+1-555-0100"),
        ("ü", "%C3%BC"),
    ])
    func uriUserIsEscaped(_ user: String, _ escaped: String) throws {
        let uri = SIPURI(user: user, host: "example.com")
        #expect(uri.description == "sip:\(escaped)@example.com")
        let reparsed = try SIPURI(parsing: uri.description)
        #expect(reparsed.user == user)
        #expect(reparsed == uri)
    }

    @Test func uriRoundTrips() throws {
        for text in [
            "sip:alice@atlanta.example.com",
            "sips:alice:secret@atlanta.example.com:5061;transport=tcp;lr?subject=project%20x&priority=urgent",
            "sip:[2001:db8::10]:5070;maddr=239.255.255.1;ttl=15",
            "sip:+1-212-555-1212:1234@gateway.example.com;user=phone",
            "sip:example.com",
            "tel:+1-201-555-0123",
            "urn:service:sos",
        ] {
            let uri = try SIPURI(parsing: text)
            #expect(uri.description == text)
            #expect(try SIPURI(parsing: uri.description) == uri)
        }
    }

    @Test func displayNamesAreQuoted() throws {
        let names = ["Alice", "caller", "Bell, Alexander", #"J Rosenberg \""#, #"Quoted string """#,
                     "%Z%45", "Ångström <admin>", "back\\slash", ""]
        for name in names {
            let address = SIPAddress(displayName: name, uri: SIPURI(user: "a", host: "example.com"),
                                     parameters: [SIPParameter("tag", "1")])
            let text = address.description
            #expect(text.hasPrefix("\""), "\(text)")
            let reparsed = try SIPAddress(parsing: text)
            #expect(reparsed == address, "\(text)")
        }
    }

    @Test func displayNameLineBreaksAreDropped() throws {
        let address = SIPAddress(displayName: "Mallory\r\nVia: x", uri: SIPURI(user: "m", host: "example.com"))
        #expect(!address.description.contains("\r") && !address.description.contains("\n"))
        #expect(try SIPAddress(parsing: address.description).displayName == "MalloryVia: x")
    }

    @Test func builtRequestRoundTrips() throws {
        var request = SIPRequest(
            method: .invite,
            uri: SIPURI(user: "bob smith", host: "biloxi.example.com", port: 5080,
                        parameters: [SIPParameter("transport", "tcp")]))
        request.headers.add("Via", SIPVia(transport: "TCP", host: "pc33.atlanta.example.com", port: nil,
                                          parameters: [SIPParameter("branch", "z9hG4bKnashds8"), SIPParameter("rport")]).description)
        request.headers.add("Max-Forwards", "70")
        request.headers.add("From", SIPAddress(displayName: #"Alice "Al" \ Smith"#,
                                               uri: SIPURI(user: "alice", host: "atlanta.example.com"),
                                               parameters: [SIPParameter("tag", "9fxced76sl")]).description)
        request.headers.add("To", SIPAddress(uri: SIPURI(user: "bob smith", host: "biloxi.example.com")).description)
        request.headers.add("Call-ID", "3848276298220188511@atlanta.example.com")
        request.headers.add("CSeq", SIPCSeq(number: 1, method: .invite).description)
        request.body = bytes("v=0\r\n\r\n")
        try request.validate()

        let wire = request.serialize()
        checkWireForm(wire, body: request.body)
        var parsed = try #require(try SIPParser().parse(datagram: wire).request)
        try parsed.validate()
        #expect(parsed.uri == request.uri)
        #expect(try parsed.from().displayName == #"Alice "Al" \ Smith"#)
        #expect(try parsed.to().uri.user == "bob smith")
        #expect(try parsed.topVia().branch == "z9hG4bKnashds8")
        #expect(parsed.body == request.body)
        #expect(SIPMessage.request(parsed).withoutContentLength == SIPMessage.request(request).withoutContentLength)
    }
}
