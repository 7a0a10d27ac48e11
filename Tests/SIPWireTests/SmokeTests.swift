import Testing
@testable import SIPWire

@Suite struct SIPParserSmokeTests {
    @Test func parsesRegister() throws {
        let text = "REGISTER sip:localhost SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1;rport\r\n"
            + "Max-Forwards: 70\r\nf: <sip:alice@localhost>;tag=1\r\nt: <sip:alice@localhost>\r\ni: abc\r\n"
            + "CSeq: 1 REGISTER\r\nm: <sip:alice@127.0.0.1:5070>;expires=60\r\nl: 0\r\n\r\n"
        let message = try SIPParser().parse(datagram: Array(text.utf8))
        guard case .request(var request) = message else { Issue.record("not a request"); return }
        try request.validate()
        #expect(request.method == .register)
        #expect(try request.topVia().branch == "z9hG4bK1")
        #expect(try request.contacts().first?.parameters[parameter: "expires"] == "60")
        #expect(try request.from().tag == "1")
    }

    @Test func validatedHeadersFollowLaterChanges() throws {
        let text = "MESSAGE sip:bob@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
            + "From: <sip:alice@localhost>;tag=1\r\nTo: <sip:bob@localhost>\r\nCall-ID: abc\r\nCSeq: 7 MESSAGE\r\n\r\n"
        guard case .request(var request) = try SIPParser().parse(datagram: Array(text.utf8)) else {
            Issue.record("not a request")
            return
        }
        let unvalidated = request
        try request.validate()
        // What validate() kept is no part of the value.
        #expect(request == unvalidated)
        #expect(try request.topVia().branch == "z9hG4bK1")
        #expect(try request.cseq().number == 7)
        // A proxy's own Via on top: the accessors see it, not what was parsed before.
        request.headers.prepend("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-sb2")
        #expect(try request.topVia().branch == "z9hG4bK-sb2")
        request.headers.set("CSeq", "8 MESSAGE")
        #expect(try request.cseq().number == 8)
    }
}
