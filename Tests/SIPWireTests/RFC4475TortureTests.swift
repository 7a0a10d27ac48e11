import Testing

@testable import SIPWire

/// What RFC 4475 (and RFC 3261 behind it) asks of a parser for one torture message.
enum TortureExpectation: Sendable, Equatable {
    /// Parses, and a request passes `validate()`.
    case valid
    /// A response that parses (the transaction layer decides what to do with it).
    case response
    /// `parse(datagram:)` itself throws with this status.
    case parseError(Int)
    /// Parses structurally, but `validate()` throws with this status.
    case invalid(Int)
    /// Must be refused with this status, by the parser or by `validate()`.
    case rejected(Int)
    /// RFC 4475 allows a liberal receiver to accept it; a refusal must carry this status.
    case lenient(Int)
}

struct TortureCase: Sendable, CustomTestStringConvertible {
    let name: String
    let section: String
    let expectation: TortureExpectation
    var testDescription: String { "\(section) \(name)" }

    static let all: [TortureCase] = [
        // 3.1.1 Valid messages
        .init(name: "wsinv", section: "3.1.1.1", expectation: .valid),
        .init(name: "intmeth", section: "3.1.1.2", expectation: .valid),
        .init(name: "esc01", section: "3.1.1.3", expectation: .valid),
        .init(name: "escnull", section: "3.1.1.4", expectation: .valid),
        .init(name: "esc02", section: "3.1.1.5", expectation: .valid),
        .init(name: "lwsdisp", section: "3.1.1.6", expectation: .valid),
        .init(name: "longreq", section: "3.1.1.7", expectation: .valid),
        .init(name: "dblreq", section: "3.1.1.8", expectation: .valid),
        .init(name: "semiuri", section: "3.1.1.9", expectation: .valid),
        .init(name: "transports", section: "3.1.1.10", expectation: .valid),
        .init(name: "mpart01", section: "3.1.1.11", expectation: .valid),
        .init(name: "unreason", section: "3.1.1.12", expectation: .response),
        .init(name: "noreason", section: "3.1.1.13", expectation: .response),
        // 3.1.2 Invalid messages
        .init(name: "badinv01", section: "3.1.2.1", expectation: .rejected(400)),
        .init(name: "clerr", section: "3.1.2.2", expectation: .parseError(400)),
        .init(name: "ncl", section: "3.1.2.3", expectation: .parseError(400)),
        .init(name: "scalar02", section: "3.1.2.4", expectation: .invalid(400)),
        .init(name: "scalarlg", section: "3.1.2.5", expectation: .response),  // parses; its CSeq is unusable
        .init(name: "quotbal", section: "3.1.2.6", expectation: .invalid(400)),
        .init(name: "ltgtruri", section: "3.1.2.7", expectation: .parseError(400)),
        .init(name: "lwsruri", section: "3.1.2.8", expectation: .parseError(400)),
        .init(name: "lwsstart", section: "3.1.2.9", expectation: .lenient(400)),
        .init(name: "trws", section: "3.1.2.10", expectation: .lenient(400)),
        .init(name: "escruri", section: "3.1.2.11", expectation: .lenient(400)),
        .init(name: "baddate", section: "3.1.2.12", expectation: .lenient(400)),
        .init(name: "regbadct", section: "3.1.2.13", expectation: .lenient(400)),
        .init(name: "badaspec", section: "3.1.2.14", expectation: .lenient(400)),
        .init(name: "baddn", section: "3.1.2.15", expectation: .lenient(400)),
        .init(name: "badvers", section: "3.1.2.16", expectation: .parseError(505)),
        .init(name: "mismatch01", section: "3.1.2.17", expectation: .invalid(400)),
        .init(name: "mismatch02", section: "3.1.2.18", expectation: .invalid(400)),
        .init(name: "bigcode", section: "3.1.2.19", expectation: .parseError(400)),
        // 3.2 Transaction layer semantics
        .init(name: "badbranch", section: "3.2.1", expectation: .valid),
        // 3.3 Application layer semantics: the parser passes these on, the application answers.
        .init(name: "insuf", section: "3.3.1", expectation: .invalid(400)),
        .init(name: "unkscm", section: "3.3.2", expectation: .valid),  // 416 is the listener's business
        .init(name: "novelsc", section: "3.3.3", expectation: .valid),
        .init(name: "unksm2", section: "3.3.4", expectation: .valid),
        .init(name: "bext01", section: "3.3.5", expectation: .valid),  // 420 is the application's
        .init(name: "invut", section: "3.3.6", expectation: .valid),  // 415 is the application's
        .init(name: "regaut01", section: "3.3.7", expectation: .valid),
        .init(name: "multi01", section: "3.3.8", expectation: .rejected(400)),
        .init(name: "mcl01", section: "3.3.9", expectation: .parseError(400)),
        .init(name: "bcast", section: "3.3.10", expectation: .response),
        .init(name: "zeromf", section: "3.3.11", expectation: .valid),  // 483 is a proxy's business
        .init(name: "cparam01", section: "3.3.12", expectation: .valid),
        .init(name: "cparam02", section: "3.3.13", expectation: .valid),
        .init(name: "regescrt", section: "3.3.14", expectation: .valid),
        .init(name: "sdp01", section: "3.3.15", expectation: .valid),
        // 3.4 Backward compatibility
        .init(name: "inv2543", section: "3.4.1", expectation: .valid),
    ]
}

@Suite struct RFC4475OutcomeTests {
    @Test func everyFixtureHasAnExpectation() throws {
        let names = try Fixtures.rfc4475Names()
        #expect(names == TortureCase.all.map(\.name).sorted())
    }

    @Test(arguments: TortureCase.all)
    func outcome(_ torture: TortureCase) throws {
        let datagram = try Fixtures.rfc4475(torture.name)
        let parsed = parseDatagram(datagram)
        // What validate() says, for requests.
        var validation: SIPParseError?
        if case .success(.request(var request)) = parsed {
            do { try request.validate() } catch { validation = error }
        }

        switch torture.expectation {
        case .valid:
            guard case .success(let message) = parsed else {
                Issue.record("\(torture.name) must parse, got \(parsed)")
                return
            }
            #expect(message.request != nil, "\(torture.name) is a request")
            #expect(validation == nil, "\(torture.name) must pass validate(), got \(String(describing: validation))")
        case .response:
            guard case .success(let message) = parsed else {
                Issue.record("\(torture.name) must parse, got \(parsed)")
                return
            }
            #expect(message.response != nil, "\(torture.name) is a response")
        case .parseError(let status):
            guard case .failure(let error) = parsed else {
                Issue.record("\(torture.name) must not parse")
                return
            }
            #expect(error.status == status, "\(torture.name): \(error)")
        case .invalid(let status):
            guard case .success = parsed else {
                Issue.record("\(torture.name) must parse structurally, got \(parsed)")
                return
            }
            #expect(validation?.status == status, "\(torture.name) must fail validate() with \(status)")
        case .rejected(let status):
            switch parsed {
            case .failure(let error):
                #expect(error.status == status, "\(torture.name): \(error)")
            case .success:
                #expect(validation?.status == status, "\(torture.name) must be refused with \(status)")
            }
        case .lenient(let status):
            if case .failure(let error) = parsed {
                #expect(error.status == status, "\(torture.name): \(error)")
            } else if let validation {
                #expect(validation.status == status, "\(torture.name): \(validation)")
            }
        }
    }

    /// A server that cannot parse a request still answers it: the error carries what was read.
    @Test(arguments: ["clerr", "ncl", "badvers", "ltgtruri", "lwsruri", "mcl01"])
    func errorsKeepTheHeadersForTheAnswer(_ name: String) throws {
        guard case .failure(let error) = parseDatagram(try Fixtures.rfc4475(name)) else {
            Issue.record("\(name) must not parse")
            return
        }
        let headers = try #require(error.partialHeaders, "\(name): \(error)")
        #expect(headers["Call-ID"]?.hasPrefix(name) == true)
        #expect(headers["Via"] != nil)
        #expect(headers["CSeq"] != nil)
    }
}

// MARK: - What the valid messages must come out as

@Suite struct RFC4475ValidMessageTests {
    @Test func wsinv() throws {
        var request = try fixtureRequest("wsinv")
        #expect(request.method == .invite)
        #expect(request.uri.scheme == "sip")
        #expect(request.uri.user == "vivekg")
        #expect(request.uri.host == "chair-dnrc.example.com")
        #expect(request.uri.parameters == [SIPParameter("unknownparam")])

        let to = try request.to()
        #expect(to.displayName == nil)
        #expect(to.uri.user == "vivekg")
        #expect(to.uri.host == "chair-dnrc.example.com")
        #expect(to.tag == "1918181833n")

        let from = try request.from()
        #expect(from.displayName == #"J Rosenberg \""#)
        #expect(from.uri.user == "jdrosen")
        #expect(from.tag == "98asjd8")

        #expect(try request.maxForwards() == 68)  // leading zeros are legal (1*DIGIT)
        #expect(try request.cseq() == SIPCSeq(number: 9, method: .invite))
        #expect(request.callID == "wsinv.ndaksdj@192.0.2.1")

        let vias = try request.vias()
        #expect(vias.map(\.transport) == ["UDP", "TCP", "UDP"])
        #expect(vias.map(\.host) == ["192.0.2.2", "spindle.example.com", "192.168.255.111"])
        #expect(vias.map(\.branch) == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"])

        #expect(request.headers["Subject"] == "")
        #expect(request.headers["NewFangledHeader"] == "newfangled value continued newfangled value")
        #expect(request.headers["UnknownHeaderWithUnusualValue"] == ";;,,;;,;")
        #expect(request.headers["Content-Type"] == "application/sdp")

        let routes = try request.routes()
        #expect(routes.count == 1)
        #expect(routes.first?.uri.host == "services.example.com")
        #expect(routes.first?.uri.parameters.has("lr") == true)
        #expect(routes.first?.uri.parameters[parameter: "unknownwith"] == "value")

        let contacts = try request.contacts()
        #expect(contacts.count == 1)
        #expect(contacts.first?.displayName == #"Quoted string """#)
        #expect(contacts.first?.uri.user == "jdrosen")
        #expect(contacts.first?.parameters[parameter: "newparam"] == "newvalue")
        #expect(contacts.first?.parameters.has("secondparam") == true)
        #expect(contacts.first?.parameters[parameter: "q"] == "0.33")

        #expect(request.body.count == 150)
        #expect(request.body.starts(with: bytes("v=0\r\n")))
        try request.validate()
    }

    @Test func intmeth() throws {
        var request = try fixtureRequest("intmeth")
        #expect(request.method.rawValue == "!interesting-Method0123456789_*+`.%indeed'~")
        #expect(request.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        #expect(request.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        #expect(request.uri.host == "example.com")
        #expect(request.uri.headers == nil)
        #expect(request.uri.parameters.isEmpty)

        let to = try request.to()
        #expect(to.displayName == "BEL:\u{07} NUL:\u{00} DEL:\u{7F}")
        #expect(to.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        #expect(to.uri.host == "example.com")

        let from = try request.from()
        #expect(from.displayName == "token1~` token2'+_ token3*%!.-")
        #expect(from.uri.user == "mundane")
        #expect(from.tag == "_token~1'+`*%!-.")
        #expect(from.parameters[parameter: "fromParam''~+*_!.-%"]?.contains("работающий") == true)

        #expect(request.callID == #"intmeth.word%ZK-!.*_+'@word`~)(><:\/"][?}{"#)
        #expect(try request.cseq().number == 139_122_385)
        #expect(try request.cseq().method == request.method)
        #expect(try request.maxForwards() == 255)
        #expect(try request.topVia().branch == "z9hG4bK-.!%66*_+`'~")
        #expect(request.headers["extensionHeader-!.%*+_`'~"] == "\u{FEFF}大停電")
        try request.validate()
    }

    @Test func esc01() throws {
        var request = try fixtureRequest("esc01")
        #expect(request.uri.user == "sips:user@example.com")
        #expect(request.uri.host == "example.net")
        #expect(try request.to().uri.user == "user")
        #expect(try request.from().uri.user == "I have spaces")
        #expect(try request.from().tag == "938")
        #expect(request.callID == "esc01.239409asdfakjkn23onasd0-3234")
        #expect(request.headers["Content-Type"] == "application/sdp")
        let contact = try #require(try request.contacts().first)
        #expect(contact.uri.user == "caller")
        #expect(contact.uri.host == "host5.example.net")
        // `%6C%72` is `lr`; `n%61me=v%61lue%25%34%31` is name=value%41 (unescaped once, never twice).
        #expect(contact.uri.parameters.has("lr"))
        #expect(contact.uri.parameters[parameter: "name"] == "value%41")
        #expect(request.body.count == 150)
        try request.validate()
    }

    @Test func escnull() throws {
        var request = try fixtureRequest("escnull")
        #expect(request.method == .register)
        #expect(try request.to().uri.user == "null-\u{0}-null")
        #expect(try request.from().uri.user == "null-\u{0}-null")
        let contacts = try request.contacts()
        #expect(contacts.map(\.uri.user) == ["\u{0}", "\u{0}\u{0}"])
        #expect(contacts.count == 2 && contacts[0].uri != contacts[1].uri)
        #expect(request.headers["Content-Length"] == "0")
        try request.validate()
    }

    @Test func esc02() throws {
        var request = try fixtureRequest("esc02")
        #expect(request.method.rawValue == "RE%47IST%45R")
        #expect(request.method != .register)
        #expect(try request.to().displayName == "%Z%45")
        #expect(try request.from().displayName == "%Z%45")
        #expect(try request.contacts().map(\.uri.user) == ["alias1", "alias3"])
        #expect(request.headers["C%6Fntact"] == "<sip:alias2@host2.example.com>")
        #expect(try request.topVia().branch == "z9hG4bK209%fzsnel234")
        #expect(try request.cseq().method.rawValue == "RE%47IST%45R")
        try request.validate()
    }

    @Test func lwsdisp() throws {
        var request = try fixtureRequest("lwsdisp")
        #expect(try request.from().displayName == "caller")
        #expect(try request.from().uri.user == "caller")
        #expect(try request.from().tag == "323")
        try request.validate()
    }

    @Test func longreq() throws {
        var request = try fixtureRequest("longreq")
        let to = try request.to()
        #expect(to.displayName == "I have a user name of " + String(repeating: "extreme", count: 10) + " proportion")
        #expect(to.uri.port == 6000)
        #expect(to.uri.parameters.count == 3)
        #expect(to.uri.parameters[parameter: "unknownparam1"] == "very" + String(repeating: "long", count: 20) + "value")
        #expect(to.uri.parameters[parameter: "longparam" + String(repeating: "name", count: 25)] == "shortvalue")
        #expect(to.uri.parameters.has("very" + String(repeating: "long", count: 25) + "ParameterNameWithNoValue"))

        let from = try request.from()
        #expect(from.uri.user == String(repeating: "amazinglylongcallername", count: 5))
        #expect(from.tag == "12" + String(repeating: "982", count: 50) + "424")
        #expect(from.parameters.count == 3)

        #expect(request.callID == "longreq.one" + String(repeating: "really", count: 20) + "longcallid")
        let vias = try request.vias()
        #expect(vias.count == 34)
        #expect(vias.prefix(33).map(\.host) == (1...33).reversed().map { "sip\($0).example.com" })
        #expect(vias.last?.branch == "very" + String(repeating: "long", count: 50) + "branchvalue")
        #expect(vias.last?.parameters[parameter: "received"] == "192.0.2.5")
        let longName = "Unknown-" + String(repeating: "Long", count: 20) + "-Name"
        #expect(request.headers[longName]?.hasPrefix("unknown-longlong") == true)
        #expect(try request.contacts().first?.uri.host == "host5.example.net")
        #expect(request.body.count == 150)
        try request.validate()
    }

    @Test func dblreq() throws {
        var request = try fixtureRequest("dblreq")
        #expect(request.method == .register)
        #expect(request.body.isEmpty)  // the INVITE after the body is noise (RFC 3261 §18.3)
        #expect(request.callID == "dblreq.0ha0isndaksdj99sdfafnl3lk233412")
        #expect(request.headers["Content-Type"] == nil)
        #expect(try request.contacts().first?.uri.host == "host.example.com")
        #expect(try request.vias().count == 1)
        try request.validate()
    }

    @Test func semiuri() throws {
        var request = try fixtureRequest("semiuri")
        #expect(request.uri.user == "user;par=u@example.net")
        #expect(request.uri.host == "example.com")
        #expect(request.uri.parameters.isEmpty)
        #expect(request.headers.values("Accept").count == 6)
        try request.validate()
    }

    @Test func transports() throws {
        var request = try fixtureRequest("transports")
        let vias = try request.vias()
        #expect(vias.map(\.transport) == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"])
        #expect(vias.map(\.host) == (1...5).map { "t\($0).example.com" })
        #expect(request.callID == "transports.kijh4akdnaqjkwendsasfdj")
        try request.validate()
    }

    @Test func mpart01() throws {
        var request = try fixtureRequest("mpart01")
        #expect(request.method == .message)
        #expect(request.body.count == 553)
        #expect(request.body.contains(0))
        #expect(request.body.starts(with: bytes("--7a9cbec02ceef655\r\n")))
        #expect(Array(request.body.suffix(22)) == bytes("--7a9cbec02ceef655--\r\n"))
        let via = try request.topVia()
        #expect(via.host == "127.0.0.1")
        #expect(via.port == 5070)
        #expect(via.parameters.has("rport"))
        let route = try #require(try request.routes().first)
        #expect(route.uri.user == nil)
        #expect(route.uri.host == "127.0.0.1")
        #expect(route.uri.port == 5080)
        #expect(request.headers["Content-Type"] == "multipart/mixed;boundary=7a9cbec02ceef655")
        try request.validate()
    }

    @Test func unreason() throws {
        let response = try fixtureResponse("unreason")
        #expect(response.status == 200)
        #expect(response.reason == "= 2**3 * 5**2 но сто девяносто девять - простое")
        #expect(response.body.count == 154)
        #expect(try response.topVia().branch == "z9hG4bK1324923")
    }

    @Test func noreason() throws {
        let response = try fixtureResponse("noreason")
        #expect(response.status == 100)
        #expect(response.reason == "")
        #expect(try response.to().tag == "902jndnke3")
    }
}

// MARK: - What the invalid and semantic messages must come out as

@Suite struct RFC4475InvalidMessageTests {
    @Test func badinv01RejectsTheEmptyViaValues() throws {
        let request = try fixtureRequest("badinv01")
        #expect(throws: SIPParseError.self) { try request.vias() }
    }

    @Test func clerrWaitsOnAStream() throws {
        // Over TCP there is nothing to do but wait for the 9999 bytes.
        var framer = SIPStreamFramer()
        framer.append(try Fixtures.rfc4475("clerr"))
        #expect(try framer.next() == nil)
    }

    @Test func scalar02() throws {
        let request = try fixtureRequest("scalar02")
        #expect(throws: SIPParseError.self) { try request.cseq() }
        // Present but out of range: the error says which header is invalid, not "missing".
        let maxForwards = #expect(throws: SIPParseError.self) { try request.maxForwards() }
        #expect(maxForwards == .invalidHeader("Max-Forwards"))
        #expect(maxForwards?.message == "invalid Max-Forwards header")
        let expires = #expect(throws: SIPParseError.self) { try request.expires() }
        #expect(expires == .invalidHeader("Expires"))
    }

    @Test func scalarlg() throws {
        let response = try fixtureResponse("scalarlg")
        #expect(response.status == 503)
        #expect(throws: SIPParseError.self) { try response.cseq() }
        #expect(response.headers["Warning"] == #"1812 overture "In Progress""#)
    }

    @Test func quotbal() throws {
        let request = try fixtureRequest("quotbal")
        let error = #expect(throws: SIPParseError.self) { try request.to() }
        #expect(error?.status == 400)
    }

    @Test func escruriKeepsTheHeadersApartFromTheURI() throws {
        // Accepting is allowed, but then a proxy must be able to drop the escaped headers.
        guard case .success(let message) = parseDatagram(try Fixtures.rfc4475("escruri")) else { return }
        let request = try #require(message.request)
        #expect(request.uri.host == "example.com")
        #expect(request.uri.user == "user")
        #expect(request.uri.headers == "Route=%3Csip:example.com%3E")
    }

    @Test func baddateIsKeptVerbatim() throws {
        guard case .success(let message) = parseDatagram(try Fixtures.rfc4475("baddate")) else { return }
        #expect(message.headers["Date"] == "Fri, 01 Jan 2010 16:00:00 EST")
    }

    @Test func badvers() throws {
        guard case .failure(let error) = parseDatagram(try Fixtures.rfc4475("badvers")) else {
            Issue.record("badvers must not parse")
            return
        }
        #expect(error.status == 505)
        #expect(error.code == "bad_version")
    }

    @Test func mismatch() throws {
        for name in ["mismatch01", "mismatch02"] {
            var request = try fixtureRequest(name)
            #expect(try request.cseq().method == .invite)
            #expect(request.method != .invite)
            #expect(throws: SIPParseError.self) { try request.validate() }
        }
        #expect(try fixtureRequest("mismatch02").method.rawValue == "NEWMETHOD")
    }

    @Test func badbranchKeepsTheBareCookie() throws {
        let request = try fixtureRequest("badbranch")
        #expect(try request.topVia().branch == "z9hG4bK")
    }

    @Test func insufNamesAMissingHeader() throws {
        var request = try fixtureRequest("insuf")
        let error = #expect(throws: SIPParseError.self) { try request.validate() }
        #expect(error?.code == "missing_header")
        #expect(error?.message == "missing To header")
    }

    @Test func unknownSchemesAreExposed() throws {
        let unkscm = try fixtureRequest("unkscm")
        #expect(unkscm.uri.scheme.lowercased() == "nobodyknowsthisscheme")
        #expect(unkscm.uri.isSIP == false)
        #expect(unkscm.uri.opaque == "totallyopaquecontent")

        let novelsc = try fixtureRequest("novelsc")
        #expect(novelsc.uri.scheme == "soap.beep")
        #expect(novelsc.uri.isSIP == false)

        let unksm2 = try fixtureRequest("unksm2")
        #expect(try unksm2.to().uri.scheme == "isbn")
        #expect(try unksm2.from().uri.scheme == "http")
        #expect(try unksm2.from().tag == "3234233")
        #expect(try unksm2.contacts().first?.uri.scheme == "name")
    }

    @Test func extensionsAndContentAreTheApplicationsBusiness() throws {
        let bext01 = try fixtureRequest("bext01")
        #expect(bext01.headers.values("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"])
        #expect(bext01.headers.values("Proxy-Require").count == 2)

        let invut = try fixtureRequest("invut")
        #expect(invut.headers["Content-Type"] == "application/unknownformat")
        #expect(invut.body == bytes("<audio>\r\n <pcmu port=\"443\"/>\r\n</audio>\r\n"))

        let sdp01 = try fixtureRequest("sdp01")
        #expect(sdp01.headers["Accept"] == "text/nobodyKnowsThis")
    }

    @Test func regaut01HasAnUnknownAuthorizationScheme() throws {
        let request = try fixtureRequest("regaut01")
        let authorization = try #require(request.headers["Authorization"])
        #expect(authorization == "NoOneKnowsThisScheme opaque-data=here")
        #expect(throws: SIPParseError.self) { try SIPDigestCredentials(parsing: authorization) }
    }

    @Test func multi01RepeatsSingleValueHeaders() throws {
        var request = try fixtureRequest("multi01")
        #expect(request.headers.all("CSeq").count == 2)
        let error = #expect(throws: SIPParseError.self) { try request.validate() }
        #expect(error?.status == 400)
    }

    @Test func bcastKeepsTheBroadcastVia() throws {
        let response = try fixtureResponse("bcast")
        #expect(try response.vias().map(\.host) == ["192.0.2.198", "255.255.255.255"])
    }

    @Test func zeromf() throws {
        #expect(try fixtureRequest("zeromf").maxForwards() == 0)
    }

    @Test func contactParameters() throws {
        // addr-spec form: the parameter belongs to the header field, not the URI.
        let cparam01 = try #require(try fixtureRequest("cparam01").contacts().first)
        #expect(cparam01.uri.user == "+19725552222")
        #expect(cparam01.uri.parameters.isEmpty)
        #expect(cparam01.parameters.has("unknownparam"))
        // name-addr form: inside <> it is a URI parameter.
        let cparam02 = try #require(try fixtureRequest("cparam02").contacts().first)
        #expect(cparam02.uri.parameters.has("unknownparam"))
        #expect(cparam02.parameters.isEmpty)
        // An escaped header inside <> is part of the URI.
        let regescrt = try #require(try fixtureRequest("regescrt").contacts().first)
        #expect(regescrt.uri.headers == "Route=%3Csip:sip.example.com%3E")
        #expect(regescrt.uri.host == "example.com")
    }

    @Test func inv2543() throws {
        let request = try fixtureRequest("inv2543")
        // No Content-Length over UDP: the body is the rest of the datagram.
        #expect(request.headers["Content-Length"] == nil)
        #expect(request.body.count == 105)
        #expect(try request.maxForwards() == nil)
        #expect(try request.topVia().branch == nil)
        #expect(try request.from().tag == nil)
        #expect(try request.to().parameters[parameter: "user"] == "phone")
        #expect(try request.routes("Record-Route").first?.uri.parameters[parameter: "maddr"] == "ss1.example.com")
    }
}
