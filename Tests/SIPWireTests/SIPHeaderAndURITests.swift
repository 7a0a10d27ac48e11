import Testing

@testable import SIPWire

@Suite struct SIPHeadersTests {
    @Test(arguments: [
        ("i", "Call-ID"), ("m", "Contact"), ("e", "Content-Encoding"), ("l", "Content-Length"),
        ("c", "Content-Type"), ("f", "From"), ("s", "Subject"), ("k", "Supported"), ("t", "To"),
        ("v", "Via"), ("r", "Refer-To"), ("o", "Event"), ("u", "Allow-Events"), ("x", "Session-Expires"),
        ("I", "Call-ID"), ("V", "Via"),
    ])
    func compactForms(_ short: String, _ long: String) throws {
        #expect(SIPHeaders.canonicalName(short) == long)
        let value = long == "Content-Length" ? "0" : "x"
        let parsed = try SIPParser().parse(datagram: crlf("OPTIONS sip:a@b SIP/2.0\n\(short): \(value)\n\n"))
        #expect(parsed.headers.fields.map(\.name) == [long])
        #expect(parsed.headers[long] == value)
        #expect(parsed.headers[short] == value)
    }

    @Test func canonicalSpelling() {
        #expect(SIPHeaders.canonicalName("CALL-ID") == "Call-ID")
        #expect(SIPHeaders.canonicalName("cseq") == "CSeq")
        #expect(SIPHeaders.canonicalName("www-authenticate") == "WWW-Authenticate")
        #expect(SIPHeaders.canonicalName("X-Custom") == "X-Custom")
        #expect(SIPHeaders.canonicalName("C%6Fntact") == "C%6Fntact")
    }

    @Test func asciiCaseFolding() {
        // Only A–Z and a–z fold: the bytes next to them ([ ` { @) and UTF-8 stay as they are.
        let bytes = Array("AZaz@[`{09é-".utf8)
        #expect(String(decoding: bytes.map(\.asciiLowercased), as: UTF8.self) == "azaz@[`{09é-")
        #expect(String(decoding: bytes.map(\.asciiUppercased), as: UTF8.self) == "AZAZ@[`{09é-")
        #expect("Content-LENGTH".caseInsensitiveEquals("content-length"))
        #expect(!"a[".caseInsensitiveEquals("a{"))
        #expect(!"Via".caseInsensitiveEquals("Vias"))
        // (Span results are taken into locals first: #expect cannot capture a Span.)
        let text = "SIP:Alice@Example.COM é"
        let span = text.utf8.span
        let lowered = span.lowercasedString(0..<span.count), raised = span.uppercasedString(4..<9)
        #expect(lowered == "sip:alice@example.com é")
        #expect(raised == "ALICE")
    }

    @Test func scanningBytesByOffset() {
        let text = " \t sip / 2.0;x=007 \t"
        let bytes = text.utf8.span
        let trimmed = bytes.trimmingSWS(0..<bytes.count)
        let trimmedText = bytes.string(trimmed), blank = bytes.trimmingSWS(0..<3)
        #expect(trimmedText == "sip / 2.0;x=007")
        #expect(blank.isEmpty)
        let sipAnyCase = bytes.equals(3..<6, "SIP", ignoringCase: true), sipExact = bytes.equals(3..<6, "SIP")
        let sips = bytes.equals(3..<6, "sips", ignoringCase: true)
        #expect(sipAnyCase && !sipExact && !sips)
        let slash = bytes.firstOffset(of: UInt8(ascii: "/"), in: trimmed)
        let noSlash = bytes.firstOffset(of: UInt8(ascii: "/"), in: 8..<bytes.count)
        #expect(slash == 7 && noSlash == nil)
        let seven = bytes.decimal(15..<18)
        #expect(seven == 7)
        let digits = "0000000000001234567890123".utf8.span
        let leadingZeros = digits.decimal(0..<22), thirteen = digits.decimal(0..<digits.count), empty = digits.decimal(0..<0)
        #expect(leadingZeros == 1_234_567_890)   // leading zeros do not count
        #expect(thirteen == nil)                 // 13 significant digits
        #expect(empty == nil)
    }

    @Test func listSplitting() {
        #expect(SIPHeaders.splitList(#""Bell, Alexander" <sip:a@x>;tag=1, <sip:b@y;p=1,2>, sip:c@z"#)
            == [#""Bell, Alexander" <sip:a@x>;tag=1"#, "<sip:b@y;p=1,2>", "sip:c@z"])
        #expect(SIPHeaders.splitList(#""a \", b" <sip:a@x>, <sip:b@y>"#) == [#""a \", b" <sip:a@x>"#, "<sip:b@y>"])
        #expect(SIPHeaders.splitList(" , ,a,, b ,") == ["a", "b"])
        #expect(SIPHeaders.splitList("") == [])
    }

    @Test func valuesAcrossFields() {
        var headers = SIPHeaders()
        headers.add("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2")
        headers.add("v", "SIP/2.0/UDP c;branch=z9hG4bK3")
        #expect(headers.values("Via").count == 3)
        #expect(headers.all("VIA").count == 2)
        headers.removeFirstValue("Via")
        #expect(headers.values("Via").map { $0.prefix(13) } == ["SIP/2.0/UDP b", "SIP/2.0/UDP c"])
        headers.removeFirstValue("Via")
        headers.removeFirstValue("Via")
        #expect(!headers.contains("Via"))
    }

    @Test func prependSetRemove() {
        var headers = SIPHeaders([("To", "<sip:a@x>"), ("Via", "one"), ("Via", "two"), ("From", "<sip:b@x>")])
        headers.prepend("Via", "zero")
        #expect(headers.all("Via") == ["zero", "one", "two"])
        #expect(headers.fields.map(\.name) == ["To", "Via", "Via", "Via", "From"])
        headers.prepend("Record-Route", "<sip:p@x;lr>")
        #expect(headers.fields.first?.name == "Record-Route")
        headers.set("via", "only")
        #expect(headers.all("Via") == ["only"])
        headers.set("Expires", "60")
        #expect(headers["expires"] == "60")
        headers.remove("TO")
        #expect(headers["To"] == nil)
    }

    @Test func foldingAndWhitespace() throws {
        let parsed = try SIPParser().parse(datagram: crlf("""
            OPTIONS sip:a@b SIP/2.0
            Subject  :\tfirst
              second
            \tthird\t
            X-Empty:
            Content-Length: 0


            """))
        #expect(parsed.headers["Subject"] == "first second third")
        #expect(parsed.headers["X-Empty"] == "")
    }

    @Test func malformedHeaderLines() {
        for head in ["OPTIONS sip:a@b SIP/2.0\nno colon here\n\n",
                     "OPTIONS sip:a@b SIP/2.0\n: empty name\n\n",
                     "OPTIONS sip:a@b SIP/2.0\nBad Name: x\n\n",
                     "OPTIONS sip:a@b SIP/2.0\n continuation first\n\n",
                     "\n"] {
            let error = #expect(throws: SIPParseError.self, "\(head)") { try SIPParser().parse(datagram: crlf(head)) }
            #expect(error?.status == 400)
        }
    }

    @Test func startLines() {
        let bad = ["OPTIONS sip:a@b", "OPTIONS sip:a@b SIP/2.0 extra", "SIP/2.0 20 OK", "SIP/2.0 2000 OK",
                   "SIP/2.0 099 Low", "SIP/2.0 700 High", "SIP/2.0", "SIP/3.0 200 OK", "HTTP/1.1 200 OK",
                   "INV(ITE sip:a@b SIP/2.0", "OPTIONS a@b SIP/2.0", "SIP/2.0  200 OK", "OPTIONS  sip:a@b SIP/2.0",
                   "SIP/2.0\t200 OK", "SIP/2.0 2\u{301}00 OK"]
        for line in bad {
            #expect(throws: SIPParseError.self, "\(line)") { try SIPParser().parse(datagram: crlf(line + "\nContent-Length: 0\n\n")) }
        }
        #expect(throws: Never.self) { try SIPParser().parse(datagram: crlf("OPTIONS sip:a@b sip/2.0\n\n")) }
        let response = try? SIPParser().parse(datagram: crlf("SIP/2.0 180 Ringing Now\n\n")).response
        #expect(response?.status == 180)
        #expect(response?.reason == "Ringing Now")
        #expect(response?.isProvisional == true)
        let bare = try? SIPParser().parse(datagram: crlf("SIP/2.0 200\n\n")).response
        #expect(bare?.status == 200)
        #expect(bare?.reason == "")
    }
}

@Suite struct SIPURITests {
    @Test func sipURIComponents() throws {
        let uri = try SIPURI(parsing: "SIPS:Alice:pw@Atlanta.Example.COM:5061;transport=TLS;lr?Subject=hi&x=y")
        #expect(uri.scheme == "sips")
        #expect(uri.user == "Alice")  // user is case-sensitive
        #expect(uri.password == "pw")
        #expect(uri.host == "atlanta.example.com")
        #expect(uri.port == 5061)
        #expect(uri.parameters == [SIPParameter("transport", "TLS"), SIPParameter("lr")])
        #expect(uri.headers == "Subject=hi&x=y")
        #expect(uri.isSIP)
        #expect(uri.addressOfRecord == "sips:Alice@atlanta.example.com")
        #expect(uri.matchKey == "Alice@atlanta.example.com:5061")
    }

    @Test func ipv6() throws {
        let uri = try SIPURI(parsing: "sip:[2001:DB8::1]:5070;transport=udp")
        #expect(uri.host == "[2001:db8::1]")
        #expect(uri.port == 5070)
        let bare = try SIPURI(parsing: "sip:alice@[::1]")
        #expect(bare.host == "[::1]" && bare.port == nil)
        #expect(bare.matchKey == "alice@[::1]:5060")
    }

    @Test(arguments: [
        "sip:", "sip:@example.com", "sip:a@", "sip:a@example.com:0", "sip:a@example.com:65536",
        "sip:a@example.com:port", "sip:a@[::1", "sip:a@[::1]x", "sip:a b@example.com", "sip:a@exa mple.com",
        "sip:%zz@example.com", "sip:%4@example.com", "noscheme", ":nothing", "1sip:a@b", "sip:a@b^c",
        "sip:%FF@example.com",
    ])
    func badURIs(_ text: String) {
        #expect(throws: SIPParseError.self) { try SIPURI(parsing: text) }
    }

    @Test func otherSchemesAreOpaque() throws {
        let tel = try SIPURI(parsing: "TEL:+1-201-555-0123;phone-context=example.com")
        #expect(tel.scheme == "tel")
        #expect(!tel.isSIP)
        #expect(tel.opaque == "+1-201-555-0123;phone-context=example.com")
        #expect(tel.description == "tel:+1-201-555-0123;phone-context=example.com")
    }
}

@Suite struct SIPAddressAndViaTests {
    @Test func addressForms() throws {
        let quoted = try SIPAddress(parsing: #""Alice \"A\"" <sip:alice@example.com;transport=tcp>;tag=1;expires=60"#)
        #expect(quoted.displayName == #"Alice "A""#)
        #expect(quoted.uri.parameters[parameter: "transport"] == "tcp")
        #expect(quoted.tag == "1")
        #expect(quoted.parameters[parameter: "expires"] == "60")

        let token = try SIPAddress(parsing: "Bob Smith <sip:bob@example.com>")
        #expect(token.displayName == "Bob Smith")

        let bare = try SIPAddress(parsing: "<sip:carol@example.com>")
        #expect(bare.displayName == nil)

        let spec = try SIPAddress(parsing: "sip:dave@example.com;tag=9")
        #expect(spec.uri.parameters.isEmpty)
        #expect(spec.tag == "9")

        // LWS is allowed before the `;` of a header parameter (SEMI = SWS ";" SWS).
        let spaced = try SIPAddress(parsing: "sip:erin@example.com ;tag=3")
        #expect(spaced.uri.host == "example.com")
        #expect(spaced.tag == "3")
    }

    @Test(arguments: [
        #""unterminated <sip:a@example.com>"#, #""name" sip:a@example.com"#, "<sip:a@example.com",
        "<sip:a@example.com> junk", "sip:a@example.com, sip:b@example.com", "", "<>",
    ])
    func badAddresses(_ text: String) {
        #expect(throws: SIPParseError.self) { try SIPAddress(parsing: text) }
    }

    @Test func tagSetter() {
        var address = SIPAddress(uri: SIPURI(user: "a", host: "example.com"), parameters: [SIPParameter("TAG", "old")])
        address.tag = "new"
        #expect(address.parameters == [SIPParameter("tag", "new")])
        address.tag = nil
        #expect(address.parameters.isEmpty)
    }

    @Test func viaForms() throws {
        let via = try SIPVia(parsing: "SIP/2.0/tcp [2001:db8::9]:5061;branch=z9hG4bK74bf9;received=192.0.2.1;rport=5062")
        #expect(via.transport == "TCP")
        #expect(via.host == "[2001:db8::9]")
        #expect(via.port == 5061)
        #expect(via.branch == "z9hG4bK74bf9")
        #expect(via.parameters[parameter: "rport"] == "5062")
        #expect(via.description == "SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bK74bf9;received=192.0.2.1;rport=5062")
        #expect(try SIPVia(parsing: via.description) == via)

        let lws = try SIPVia(parsing: "SIP / 2.0 / UDP  host.example.com : 5060 ; branch = z9hG4bKx")
        #expect(lws.host == "host.example.com" && lws.port == 5060 && lws.branch == "z9hG4bKx")
    }

    @Test(arguments: [
        "SIP/2.0/UDP", "SIP/2.0 UDP host", "SIP/3.0/UDP host", "HTTP/2.0/UDP host", "SIP/2.0/U_P host",
        "SIP/2.0/UDP host;branch=", "SIP/2.0/UDP host:99999", "SIP/2.0/UDP ;branch=z9hG4bK1", "",
    ])
    func badVias(_ text: String) {
        #expect(throws: SIPParseError.self) { try SIPVia(parsing: text) }
    }

    @Test func wildcardContact() throws {
        let request = try #require(try SIPParser().parse(datagram: crlf("REGISTER sip:r SIP/2.0\nContact: *\nExpires: 0\n\n")).request)
        #expect(request.contactsAreWildcard)
        #expect(try request.contacts().isEmpty)
        #expect(try request.expires() == 0)
    }
}

@Suite struct ViaSentByTests {
    @Test(arguments: [
        ("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1", "10.0.0.1", 5070),
        ("SIP / 2.0 / tcp Host.Example.COM ;branch=z9hG4bK1", "host.example.com", nil),
        ("SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1", "[2001:db8::1]", 5060),
        ("SIP/2.0/UDP host : 5061;branch=z9hG4bK1", "host", 5061),
    ] as [(String, String, Int?)])
    func sentByIsParsed(_ text: String, _ host: String, _ port: Int?) throws {
        let via = try SIPVia(parsing: text)
        #expect(via.host == host)
        #expect(via.port == port)
    }

    @Test(arguments: ["SIP/2.0/UDP user@host;branch=z9hG4bK1", "SIP/2.0/UDP host:0", "SIP/2.0/UDP host:99999",
                      "SIP/2.0/UDP ho?st", "SIP/2.0/UDP [::1", "SIP/2.0/UDP ;branch=z9hG4bK1"])
    func badSentByIsRejected(_ text: String) {
        #expect(throws: SIPParseError.self) { try SIPVia(parsing: text) }
    }
}
