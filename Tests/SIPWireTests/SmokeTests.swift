import Testing
@testable import SIPWire

@Suite struct SIPParserSmokeTests {
    @Test func parsesRegister() throws {
        let text = "REGISTER sip:localhost SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1;rport\r\n"
            + "Max-Forwards: 70\r\nf: <sip:alice@localhost>;tag=1\r\nt: <sip:alice@localhost>\r\ni: abc\r\n"
            + "CSeq: 1 REGISTER\r\nm: <sip:alice@127.0.0.1:5070>;expires=60\r\nl: 0\r\n\r\n"
        let message = try SIPParser().parse(datagram: Array(text.utf8))
        guard case .request(let request) = message else { Issue.record("not a request"); return }
        try request.validate()
        #expect(request.method == .register)
        #expect(try request.topVia().branch == "z9hG4bK1")
        #expect(try request.contacts().first?.parameters[parameter: "expires"] == "60")
        #expect(try request.from().tag == "1")
    }
}
