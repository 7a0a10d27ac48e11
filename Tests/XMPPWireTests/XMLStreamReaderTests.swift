import Testing

@testable import XMPPWire

/// A client stream with stanzas that exercise namespaces, xml:lang, nesting, references, CDATA,
/// mixed content, line endings and whitespace; and the events it must produce.
private enum Golden {
    static let mucUser = "http://jabber.org/protocol/muc#user"

    static let parts: [(xml: String, event: XMLStreamEvent?)] = [
        (clientHeader, clientHeaderEvent),
        ("\n", nil),
        (
            "<message from='alice@example.com/phone' to='room@conference.example.com' type='groupchat' "
                + "id='m1' xml:lang='fr'><body>caf&#xE9; &amp; cr&#232;me &lt;b&gt; &#x1F600; 😀 &quot;&apos;</body>"
                + "<x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='member' role='participant' "
                + "jid='a&amp;b@example.com' nick='it&apos;s &quot;me&quot; &lt;3 &#38; &#x26;'/></x></message>",
            .stanza(
                element(
                    "message", XMLNamespace.client,
                    [
                        ("from", "alice@example.com/phone"), ("to", "room@conference.example.com"),
                        ("type", "groupchat"), ("id", "m1"), ("xml:lang", "fr"),
                    ],
                    [
                        .element(element("body", XMLNamespace.client, [], [.text("café & crème <b> 😀 😀 \"'")])),
                        .element(
                            element(
                                "x", mucUser, [],
                                [
                                    .element(
                                        element(
                                            "item", mucUser,
                                            [
                                                ("affiliation", "member"), ("role", "participant"),
                                                ("jid", "a&b@example.com"), ("nick", "it's \"me\" <3 & &"),
                                            ]
                                        )
                                    )
                                ]
                            )
                        ),
                    ]
                )
            )
        ),
        ("\r\n  ", nil),
        (
            "<presence><show>away</show><status xml:lang='de'>Tsch&#xFC;ss\r\nzweite\rZeile&#13;</status>"
                + "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v'/></presence>",
            .stanza(
                element(
                    "presence", XMLNamespace.client, [],
                    [
                        .element(element("show", XMLNamespace.client, [], [.text("away")])),
                        .element(
                            element("status", XMLNamespace.client, [("xml:lang", "de")], [.text("Tschüss\nzweite\nZeile\r")])
                        ),
                        .element(
                            element(
                                "c", "http://jabber.org/protocol/caps", [("hash", "sha-1"), ("node", "n"), ("ver", "v")]
                            )
                        ),
                    ]
                )
            )
        ),
        (
            "<iq type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>",
            .stanza(element("iq", XMLNamespace.client, [("type", "get"), ("id", "ping1")], [.element(element("ping", "urn:xmpp:ping"))]))
        ),
        (
            "<iq type='result' id='r1'>\n  <query xmlns='jabber:iq:roster'/>\n</iq>",
            .stanza(
                element(
                    "iq", XMLNamespace.client, [("type", "result"), ("id", "r1")],
                    [.text("\n  "), .element(element("query", "jabber:iq:roster")), .text("\n")]
                )
            )
        ),
        (
            "<message><body>a<![CDATA[<not> & ]]>markup]]&gt;<b>bold</b>c<![CDATA[]]></body></message>",
            .stanza(
                element(
                    "message", XMLNamespace.client, [],
                    [
                        .element(
                            element(
                                "body", XMLNamespace.client, [],
                                [.text("a<not> & markup]]>"), .element(element("b", XMLNamespace.client, [], [.text("bold")])), .text("c")]
                            )
                        )
                    ]
                )
            )
        ),
        (
            "<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
            .stanza(
                element("error", XMLNamespace.streams, [], [.element(element("not-well-formed", "urn:ietf:params:xml:ns:xmpp-streams"))])
            )
        ),
        (
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>",
            .stanza(element("auth", "urn:ietf:params:xml:ns:xmpp-sasl", [("mechanism", "PLAIN")], [.text("AGFsaWNlAHNlY3JldA==")]))
        ),
        (
            "<message xmlns:foo='urn:foo' foo:bar='baz' a='x&#10;y\tz\nw&#9;'><body>  spaced  </body><foo:ext/></message>",
            .stanza(
                XMLElement(
                    name: "message",
                    namespace: XMLNamespace.client,
                    attributes: [XMLAttribute("foo:bar", "baz", namespace: "urn:foo"), XMLAttribute("a", "x\ny z w\t")],
                    children: [
                        .element(element("body", XMLNamespace.client, [], [.text("  spaced  ")])),
                        .element(element("ext", "urn:foo")),
                    ]
                )
            )
        ),
        (
            "<r xmlns=''><s/></r>",
            .stanza(element("r", nil, [], [.element(element("s", nil))]))
        ),
        (" \t\n", nil),
        ("</stream:stream>", .streamClosed),
    ]

    static let bytes = Array(parts.map(\.xml).joined().utf8)
    static let events = parts.compactMap(\.event)
}

@Suite struct XMLStreamReaderGoldenTests {
    @Test func wholeInput() {
        let result = read([Golden.bytes])
        #expect(result.error == nil)
        #expect(result.events == Golden.events)
        // Element by element, for a readable failure.
        for (got, expected) in zip(result.events, Golden.events) {
            #expect(got == expected)
        }
    }

    @Test func byteByByte() {
        let result = read(bytewise(Golden.bytes))
        #expect(result.error == nil)
        #expect(result.events == Golden.events)
    }

    @Test func onePartPerChunk() {
        let result = read(Golden.parts.map { Array($0.xml.utf8) })
        #expect(result.error == nil)
        #expect(result.events == Golden.events)
    }

    @Test func randomSplits() {
        for seed in UInt64(0)..<400 {
            let result = read(randomChunks(Golden.bytes, seed: seed, maxChunk: seed < 200 ? 8 : 64))
            #expect(result.error == nil, "seed \(seed)")
            #expect(result.events == Golden.events, "seed \(seed)")
            if result.events != Golden.events { break }
        }
    }

    @Test func coalescedStanzas() throws {
        // The header in one feed, all stanzas and the footer in the next.
        let header = Array(clientHeader.utf8)
        let rest = Array(Golden.bytes[header.count...])
        let reader = XMLStreamReader()
        #expect(try reader.feed(header) == [clientHeaderEvent])
        #expect(try reader.feed(rest) == Array(Golden.events.dropFirst()))
    }

    @Test func feedAcceptsAnyCollection() throws {
        let reader = XMLStreamReader()
        // A non-contiguous collection goes through a copy.
        var events = try reader.feed(clientHeader.utf8)
        events += try reader.feed("<presence/>".utf8.lazy.map { $0 })
        #expect(events == [clientHeaderEvent, .stanza(element("presence"))])
    }

    @Test func accessors() throws {
        let result = read([Golden.bytes])
        guard case .stanza(let message) = result.events[1] else {
            Issue.record("expected a stanza")
            return
        }
        #expect(message.attribute("type") == "groupchat")
        #expect(message.attribute("xml:lang") == "fr")
        #expect(message.attribute("lang", namespace: XMLNamespace.xml) == "fr")
        #expect(message.attribute("missing") == nil)
        #expect(message.child(named: "body")?.text == "café & crème <b> 😀 😀 \"'")
        #expect(message.child(named: "body", namespace: XMLNamespace.client) != nil)
        #expect(message.child(named: "body", namespace: "urn:other") == nil)
        #expect(message.child(named: "x", namespace: Golden.mucUser)?.child(named: "item")?.attribute("jid") == "a&b@example.com")
        #expect(message.elements.map(\.name) == ["body", "x"])
        #expect(message.text == "")
        guard case .streamOpened(let header) = result.events[0] else {
            Issue.record("expected the header")
            return
        }
        #expect(header.defaultNamespace == "jabber:client")
        #expect(header.attribute("to") == "example.com")
        #expect(header.attribute("xml:lang") == "en")
    }

    @Test func unclosedStreamHasNoClosingEvent() {
        // EOF without </stream:stream>: the listener treats the TCP close as the end.
        let bytes = Array((clientHeader + "<presence/><message><body>half").utf8)
        for chunks in [[bytes], bytewise(bytes)] {
            let result = read(chunks)
            #expect(result.error == nil)
            #expect(result.events == [clientHeaderEvent, .stanza(element("presence"))])
        }
    }

    @Test func streamRestartWithReset() throws {
        let reader = XMLStreamReader()
        #expect(try reader.feed(Array((clientHeader + "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>").utf8)).count == 2)
        reader.reset()
        // A new header (with its XML declaration) is acceptable only after a reset.
        #expect(try reader.feed(Array((clientHeader + "<presence/>").utf8)) == [clientHeaderEvent, .stanza(element("presence"))])
    }

    @Test func headerWithoutDeclarationOrDefaultNamespace() throws {
        let reader = XMLStreamReader()
        let events = try reader.feed(Array("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><a/>".utf8))
        #expect(
            events == [
                .streamOpened(
                    XMLStreamHeader(attributes: [], namespaceDeclarations: [.init(prefix: "stream", namespace: XMLNamespace.streams)])
                ),
                .stanza(element("a", nil)),
            ]
        )
        guard case .streamOpened(let header) = events[0] else { return }
        #expect(header.defaultNamespace == nil)
    }

    @Test func whitespaceKeepalivesDoNotCountAsAStanza() {
        let limits = XMLStreamReader.Limits(maxStanzaBytes: 1024)
        var chunks = [Array(clientHeader.utf8)]
        chunks += Array(repeating: [UInt8(ascii: " ")], count: 5000)
        chunks.append(Array("<presence/>".utf8))
        let result = read(chunks, limits: limits)
        #expect(result.error == nil)
        #expect(result.events == [clientHeaderEvent, .stanza(element("presence"))])
    }
}
