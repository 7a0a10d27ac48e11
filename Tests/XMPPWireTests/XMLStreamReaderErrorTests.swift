import Testing

@testable import XMPPWire

/// Feeds `xml` whole, byte by byte and in random splits; each must end with `condition`.
private func expectError(
    _ xml: some Sequence<UInt8>,
    _ condition: XMLStreamError.Condition,
    limits: XMLStreamReader.Limits = .init(),
    seeds: Range<UInt64> = 0..<20,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    let bytes = Array(xml)
    var splits = [[bytes], bytewise(bytes)]
    for seed in seeds {
        splits.append(randomChunks(bytes, seed: seed))
    }
    for (index, chunks) in splits.enumerated() {
        let result = read(chunks, limits: limits)
        #expect(result.error?.condition == condition, "split \(index): \(String(describing: result.error))", sourceLocation: sourceLocation)
    }
}

private func stream(_ body: String) -> [UInt8] {
    Array((clientHeader + body).utf8)
}

@Suite struct XMLStreamReaderErrorTests {
    @Test(arguments: [
        "<message><body></message>",
        "<message a='1' a='2'/>",
        // libxml2 waits for the `;` of a reference, and for a `>` after a start tag's last `<`.
        "<message>&bogus</message><message>;</message>",
        "<message to=unquoted/>",
        "<message>\u{01}</message>",
        "<message a='\u{08}'/>",
        "<1abc/>",
        "<message><body>x</body></message></stream:streamx>",
        "<message></presence>",
        "<message a='<'/><presence/>",
        "<message>&#0;</message>",
        "<message>&#xD800;</message>",
        "<message xmlns:p=''/>",
        "</stream:stream>trailing<x/>",
        "<message>]]></message>",
    ])
    func malformed(_ body: String) {
        expectError(stream(body), .notWellFormed)
    }

    @Test func malformedHeader() {
        expectError(Array("<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' a=>".utf8), .notWellFormed)
        expectError(Array("hello".utf8) + Array(clientHeader.utf8), .notWellFormed)
    }

    @Test func undefinedPrefix() {
        expectError(stream("<foo:bar/>"), .badNamespacePrefix)
        expectError(stream("<message foo:bar='x'/>"), .badNamespacePrefix)
    }

    @Test func notUTF8() {
        expectError(stream("<message><body>") + [0xFF] + Array("</body></message>".utf8), .unsupportedEncoding)
        expectError(stream("<message a='") + [0xC0, 0xAF] + Array("'/>".utf8), .unsupportedEncoding)  // overlong
        expectError(stream("<message><body>") + [0xED, 0xA0, 0x80] + Array("</body></message>".utf8), .unsupportedEncoding)
        expectError(stream("<message><body>") + [0xF4, 0x90, 0x80, 0x80] + Array("</body></message>".utf8), .unsupportedEncoding)
        // A UTF-16 stream is not UTF-8.
        expectError([0xFF, 0xFE] + Array("<".utf8), .unsupportedEncoding)
    }

    @Test func otherEncodingsAreNotHonoured() throws {
        // The XML declaration cannot switch the stream away from UTF-8.
        let declared = "<?xml version='1.0' encoding='ISO-8859-1'?>" + clientHeader.dropFirst(21) + "<m>é</m>"
        let result = read([Array(declared.utf8)])
        #expect(result.error == nil)
        #expect(result.events.last == .stanza(element("m", XMLNamespace.client, [], [.text("é")])))
        // UCS-4 starts with NUL bytes: never a stream.
        let ucs4: [UInt8] = "<stream:stream>".utf8.flatMap { [0, 0, 0, $0] }
        expectError(ucs4, .notWellFormed)
        expectError(stream("<m>a") + [0] + Array("</m>".utf8), .notWellFormed)
    }

    @Test func wrongStreamElement() {
        expectError(Array("<stream:stream xmlns:stream='urn:wrong'>".utf8), .invalidNamespace)
        expectError(Array("<stream xmlns='jabber:client'>".utf8), .invalidNamespace)
        expectError(Array("<message xmlns='jabber:client'>".utf8), .invalidNamespace)
        expectError(Array("<features xmlns='http://etherx.jabber.org/streams'>".utf8), .badFormat)
    }

    @Test func textBetweenStanzas() {
        expectError(stream("<presence/>hello<presence/>"), .badFormat)
        expectError(stream("<![CDATA[x]]><presence/>"), .badFormat)
    }

    @Test(arguments: [
        "<!-- a comment --><presence/>",
        "<presence><!-- inside --></presence>",
        "<?foo bar?><presence/>",
        "<message><?foo?></message>",
        "<message><body>&foo;</body></message>",
        "<message a='&foo;'/>",
        "<message><body>&lol9;</body></message>",
        "<!DOCTYPE x><presence/>",
        "<message><!DOCTYPE x [<!ENTITY a 'b'>]></message>",
        "<!ENTITY a 'b'><presence/>",
    ])
    func restrictedXML(_ body: String) {
        expectError(stream(body), .restrictedXML)
    }

    @Test func commentBeforeHeader() {
        expectError(Array(("<!-- hi -->" + clientHeader).utf8), .restrictedXML)
        expectError(Array(("<?xml version='1.0'?><?pi x?>" + clientHeader.dropFirst(21)).utf8), .restrictedXML)
    }

    @Test func billionLaughs() {
        var xml = "<?xml version='1.0'?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n"
        xml += " <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
        for level in 2...9 {
            let previous = "&lol\(level - 1);"
            xml += " <!ENTITY lol\(level) \"\(String(repeating: previous, count: 10))\">\n"
        }
        xml += "]>\n<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        xml += "<message><body>&lol9;</body></message>"
        let bytes = Array(xml.utf8)
        let elapsed = ContinuousClock().measure {
            expectError(bytes, .restrictedXML)
        }
        #expect(elapsed < .seconds(5))
        // No event at all: the DOCTYPE is refused before the stream element is read.
        #expect(read([bytes]).events.isEmpty)
        #expect(read(bytewise(bytes)).events.isEmpty)

        // The same inside an open stream.
        let inside = Array(clientHeader.utf8) + Array(xml.utf8.drop { $0 != UInt8(ascii: "<") }.dropFirst(21))
        expectError(inside, .restrictedXML)
    }

    @Test func externalEntities() {
        let xxe = "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>"
            + "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
            + "<message><body>&xxe;</body></message>"
        expectError(Array(xxe.utf8), .restrictedXML)
        let external = "<?xml version='1.0'?><!DOCTYPE x SYSTEM 'http://127.0.0.1:1/evil.dtd'>"
            + "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        expectError(Array(external.utf8), .restrictedXML)
    }

    @Test func deepNesting() {
        let bytes = stream(String(repeating: "<a>", count: 10_000))
        let elapsed = ContinuousClock().measure {
            expectError(bytes, .policyViolation, seeds: 0..<3)
        }
        #expect(elapsed < .seconds(10))
        let result = read([bytes])
        #expect(result.error?.text.contains("max_depth") == true)
    }

    @Test func depthLimitIsExact() {
        let limits = XMLStreamReader.Limits()
        let depth = limits.maxDepth
        let fits = String(repeating: "<a>", count: depth) + String(repeating: "</a>", count: depth)
        let result = read([stream(fits)])
        #expect(result.error == nil)
        #expect(result.events.count == 2)
        let tooDeep = String(repeating: "<a>", count: depth + 1) + String(repeating: "</a>", count: depth + 1)
        expectError(stream(tooDeep), .policyViolation, seeds: 0..<3)
    }

    @Test func tenMiBStanzaIsRefusedEarly() {
        let limits = XMLStreamReader.Limits()
        let chunk = [UInt8](repeating: UInt8(ascii: "x"), count: 64 * 1024)
        let total = 10 * 1024 * 1024
        let reader = XMLStreamReader(limits: limits)
        var fed = 0
        var error: XMLStreamError?
        do throws(XMLStreamError) {
            _ = try reader.feed(stream("<message><body>"))
            while fed < total {
                fed += chunk.count
                _ = try reader.feed(chunk)
            }
            _ = try reader.feed(Array("</body></message>".utf8))
        } catch let caught {
            error = caught
        }
        #expect(error?.condition == .policyViolation)
        #expect(error?.text.contains("max_stanza_bytes") == true)
        // Refused within one chunk of passing the limit, long before the 10 MiB were sent.
        #expect(fed <= limits.maxStanzaBytes + 2 * chunk.count)
        // Unusable afterwards: the same error again.
        #expect(throws: error!) { try reader.feed(Array("<presence/>".utf8)) }
    }

    @Test func hugeFeedIsRefusedWithoutParsingItAll() {
        // One 10 MiB feed: handed to libxml2 in slices, refused after the limit.
        let bytes = stream("<message><body>" + String(repeating: "x", count: 10 * 1024 * 1024))
        let elapsed = ContinuousClock().measure {
            let result = read([bytes])
            #expect(result.error?.condition == .policyViolation)
        }
        #expect(elapsed < .seconds(5))
    }

    @Test func hugeStartTagIsRefused() {
        // A start tag that never ends is held by libxml2 itself: still bounded.
        let limits = XMLStreamReader.Limits(maxStanzaBytes: 4096)
        let bytes = stream("<message a='" + String(repeating: "y", count: 20_000))
        expectError(bytes, .policyViolation, limits: limits, seeds: 0..<3)
        let header = Array("<?xml version='1.0'?><stream:stream a='\(String(repeating: "y", count: 20_000))".utf8)
        expectError(header, .policyViolation, limits: limits, seeds: 0..<3)
    }

    @Test func stanzaSizeLimitDoesNotDependOnTheSplit() {
        let limits = XMLStreamReader.Limits(maxStanzaBytes: 1024)
        let fits = "<message><body>" + String(repeating: "f", count: 990) + "</body></message>"
        let tooBig = "<message><body>" + String(repeating: "b", count: 1010) + "</body></message>"
        #expect(fits.utf8.count <= 1024)
        #expect(tooBig.utf8.count > 1024)
        let accepted = stream(fits + "\n" + fits)
        for chunks in [[accepted], bytewise(accepted), randomChunks(accepted, seed: 7)] {
            let result = read(chunks, limits: limits)
            #expect(result.error == nil)
            #expect(result.events.count == 3)
        }
        expectError(stream(fits + tooBig), .policyViolation, limits: limits)
    }

    @Test func attributeLimit() {
        let limits = XMLStreamReader.Limits()
        let attributes = (0..<limits.maxAttributes).map { " a\($0)='v'" }.joined()
        let result = read([stream("<message\(attributes)/>")])
        #expect(result.error == nil)
        #expect(result.events.count == 2)
        expectError(stream("<message\(attributes) extra='1'/>"), .policyViolation)
        // Namespace declarations count too.
        expectError(stream("<message\(attributes) xmlns:p='urn:p'/>"), .policyViolation)
        let error = read([stream("<message\(attributes) extra='1'/>")]).error
        #expect(error?.text.contains("max_attributes") == true)
    }

    @Test func failedReaderStaysFailedUntilReset() throws {
        let reader = XMLStreamReader()
        var first: XMLStreamError?
        do throws(XMLStreamError) {
            _ = try reader.feed(stream("<!-- no -->"))
        } catch {
            first = error
        }
        #expect(first?.condition == .restrictedXML)
        #expect(throws: first!) { try reader.feed(Array("<presence/>".utf8)) }
        #expect(throws: first!) { try reader.feed([UInt8]()) }
        reader.reset()
        #expect(try reader.feed(stream("<presence/>")) == [clientHeaderEvent, .stanza(element("presence"))])
    }

    @Test func eventsBeforeAnErrorAreKeptByFeedInto() {
        let reader = XMLStreamReader()
        var events: [XMLStreamEvent] = []
        var error: XMLStreamError?
        do throws(XMLStreamError) {
            try reader.feed(stream("<presence/><message><!-- x --></message>"), into: &events)
        } catch let caught {
            error = caught
        }
        #expect(error?.condition == .restrictedXML)
        #expect(events == [clientHeaderEvent, .stanza(element("presence"))])
    }
}
