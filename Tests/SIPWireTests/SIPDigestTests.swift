import Testing

@testable import SIPWire

@Suite struct SIPDigestTests {
    /// RFC 2617 §3.5.
    static let rfc2617 = """
        Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", \
        uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", \
        response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"
        """

    /// RFC 7616 §3.9.1, SHA-256.
    static let rfc7616 = """
        Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=SHA-256, \
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, \
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, \
        response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", \
        opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
        """

    private func expectedResponse(_ c: SIPDigestCredentials, password: String, method: String) -> String {
        let ha1 = c.algorithm.ha1(username: c.username, realm: c.realm, password: password)
        return c.algorithm.response(ha1: ha1, nonce: c.nonce, method: method, uri: c.uri, qop: c.qop, nc: c.nc, cnonce: c.cnonce)
    }

    @Test func rfc2617MD5WithQopAuth() throws {
        let c = try SIPDigestCredentials(parsing: Self.rfc2617)
        #expect(c.username == "Mufasa")
        #expect(c.realm == "testrealm@host.com")
        #expect(c.nonce == "dcd98b7102dd2f0e8b11d0f600bfb0c093")
        #expect(c.uri == "/dir/index.html")
        #expect(c.algorithm == .md5)
        #expect(c.qop == "auth")
        #expect(c.nc == "00000001")
        #expect(c.cnonce == "0a4f113b")
        #expect(c.opaque == "5ccc069c403ebaf9f0171e9517f40e41")
        #expect(c.algorithm.ha1(username: "Mufasa", realm: "testrealm@host.com", password: "Circle Of Life")
            == "939e7578ed9e3c518a452acee763bce9")
        #expect(expectedResponse(c, password: "Circle Of Life", method: "GET") == "6629fae49393a05397450978507c4ef1")
        #expect(c.response == expectedResponse(c, password: "Circle Of Life", method: "GET"))
        #expect(expectedResponse(c, password: "Circle of Life", method: "GET") != c.response)
        #expect(expectedResponse(c, password: "Circle Of Life", method: "POST") != c.response)
    }

    @Test func rfc7616SHA256() throws {
        let c = try SIPDigestCredentials(parsing: Self.rfc7616)
        #expect(c.algorithm == .sha256)
        #expect(c.realm == "http-auth@example.org")
        #expect(c.cnonce == "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
        #expect(expectedResponse(c, password: "Circle of Life", method: "GET")
            == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")
        #expect(c.response == expectedResponse(c, password: "Circle of Life", method: "GET"))
    }

    @Test func md5WithoutQop() throws {
        // RFC 2069 compatibility (no qop): response = H(HA1:nonce:HA2).
        let c = try SIPDigestCredentials(parsing: """
            Digest username="alice",realm="example.com",nonce="abc123",uri="sip:example.com",\
            response="D1D211DAA2E0D7F43DE25792410F5057"
            """)
        #expect(c.qop == nil && c.nc == nil && c.cnonce == nil)
        #expect(c.response == "d1d211daa2e0d7f43de25792410f5057")
        #expect(c.algorithm.ha1(username: "alice", realm: "example.com", password: "secret") == "b1726872c344b6dc8365b774f8fd6412")
        #expect(expectedResponse(c, password: "secret", method: "REGISTER") == c.response)
    }

    @Test func quotedAndEscapedValues() throws {
        let c = try SIPDigestCredentials(parsing: #"""
            digest USERNAME="Mu\"fa\\sa", Realm="a, b; c", nonce="n=1", uri="sip:bob@example.com;transport=tcp", response="00", algorithm="md5", unknown=ignored
            """#)
        #expect(c.username == #"Mu"fa\sa"#)
        #expect(c.realm == "a, b; c")
        #expect(c.nonce == "n=1")
        #expect(c.uri == "sip:bob@example.com;transport=tcp")
        #expect(c.algorithm == .md5)
    }

    @Test func linearWhiteSpaceAroundParameters() throws {
        let c = try SIPDigestCredentials(parsing: "Digest\tusername = \"a\" ,realm= \"r\",  nonce =\"n\",uri=\"u\",response=\"ff\"")
        #expect(c.username == "a" && c.realm == "r" && c.nonce == "n" && c.uri == "u" && c.response == "ff")
    }

    @Test func quotedCommasEscapesAndStrayItems() throws {
        let c = try SIPDigestCredentials(parsing: #"  Digest flag, username="a\"b", realm="r,s", nonce="n", "#
            + #"uri="<sip:x@y>", response="AB", foo=1, cnonce="c\\d""#)
        #expect(c.username == #"a"b"#)
        #expect(c.realm == "r,s")
        #expect(c.uri == "<sip:x@y>")
        #expect(c.response == "ab")
        #expect(c.cnonce == #"c\d"#)
        #expect(c.qop == nil && c.nc == nil && c.opaque == nil)
    }

    @Test(arguments: [
        #"Digest username="a", foo=1, realm="r", nonce="n", uri="u", response="0", FOO=2"#,
        #"Digest username="a", username="b", realm="r", nonce="n", uri="u", response="0""#,
        #"Digest username="a", USERNAME="a", realm="r", nonce="n", uri="u", response="0""#,
        #"Digest username="a", realm="r", nonce="n", nonce="n", uri="u", response="0""#,
    ])
    func repeatedParameterIsRejected(_ header: String) {
        let error = #expect(throws: SIPParseError.self) { try SIPDigestCredentials(parsing: header) }
        #expect(error?.status == 400)
    }

    @Test(arguments: ["FOO", "SHA-1", "MD5-sess-unknown", "\"SHA-512\""])
    func unknownAlgorithmIsRejected(_ algorithm: String) {
        let header = #"Digest username="a", realm="r", nonce="n", uri="u", response="0", algorithm="# + algorithm
        #expect(throws: SIPParseError.self) { try SIPDigestCredentials(parsing: header) }
    }

    @Test(arguments: [
        #"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="#,
        "Digest",
        "Digestusername=\"a\"",
        #"Digest realm="r", nonce="n", uri="u", response="0""#,
        #"Digest username="a", realm="r", nonce="n", uri="u""#,
        "",
    ])
    func malformedIsRejected(_ header: String) {
        #expect(throws: SIPParseError.self) { try SIPDigestCredentials(parsing: header) }
    }

    @Test func algorithmNames() {
        #expect(SIPDigestAlgorithm(name: "md5") == .md5)
        #expect(SIPDigestAlgorithm(name: "sha-256") == .sha256)
        #expect(SIPDigestAlgorithm(name: "SHA256") == nil)
        #expect(SIPDigestAlgorithm.md5.hash("") == "d41d8cd98f00b204e9800998ecf8427e")
        #expect(SIPDigestAlgorithm.sha256.hash("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test func headerValueRoundTrips() throws {
        let c = try SIPDigestCredentials(parsing: Self.rfc7616)
        #expect(try SIPDigestCredentials(parsing: c.headerValue) == c)
        let md5 = try SIPDigestCredentials(parsing: Self.rfc2617)
        #expect(try SIPDigestCredentials(parsing: md5.headerValue) == md5)
    }

    @Test func headerValueQuotesSpecialCharacters() throws {
        let c = SIPDigestCredentials(
            username: #"Mu"fa\sa"#, realm: #"r", nonce="forged"#, nonce: "n", uri: "sip:a@example.com",
            response: "00", algorithm: .md5, qop: nil, nc: nil, cnonce: nil, opaque: nil)
        let parsed = try SIPDigestCredentials(parsing: c.headerValue)
        #expect(parsed == c)
    }
}
