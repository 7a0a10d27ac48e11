import SwitchboardTesting
import Testing

@testable import XMPPWire

/// Serializes `stanza` into a client stream and reads it back.
private func roundTrip(_ stanza: XMLElement) -> XMLElement? {
    let xml = XMLSerializer.streamHeader(attributes: [XMLAttribute("from", "example.com")])
        + XMLSerializer.clientStream.serialize(stanza)
    let result = read([Array(xml.utf8)])
    #expect(result.error == nil, "\(xml)")
    guard result.events.count == 2, case .stanza(let read) = result.events[1] else { return nil }
    return read
}

/// Characters that need care somewhere in XML.
private let awkwardPieces: [String] = [
    "&", "<", ">", "\"", "'", "]]>", "&amp;", "&#38;", "&lt;", "\r", "\n", "\r\n", "\t", " ", "  ",
    "😀", "é", "e\u{301}", "\u{FFFD}", "\u{7F}", "\u{85}", "\u{2028}", "\u{10FFFF}", "<![CDATA[", "<!--",
    "-->", "<?", "?>", "%foo;", "&foo;", "x", "abc", "日本語", "\u{E000}",
]

@Suite struct XMLSerializerTests {
    @Test func escapeText() {
        #expect(XMLSerializer.escapeText("plain text") == "plain text")
        #expect(XMLSerializer.escapeText("a&b<c>d\"e'f") == "a&amp;b&lt;c&gt;d\"e'f")
        #expect(XMLSerializer.escapeText("]]>") == "]]&gt;")
        #expect(XMLSerializer.escapeText("cr\r\nlf\ttab") == "cr&#13;\nlf\ttab")
        #expect(XMLSerializer.escapeText("😀 é") == "😀 é")
    }

    @Test func escapeAttributeValue() {
        #expect(XMLSerializer.escapeAttributeValue("it's \"q\" & <x>") == "it&apos;s &quot;q&quot; &amp; &lt;x&gt;")
        #expect(XMLSerializer.escapeAttributeValue("a\tb\nc\rd") == "a&#9;b&#10;c&#13;d")
    }

    @Test func disallowedCharactersAreReplaced() {
        #expect(XMLSerializer.escapeText("a\u{0}b\u{8}c\u{B}d\u{1F}e\u{FFFE}f\u{FFFF}") == "a\u{FFFD}b\u{FFFD}c\u{FFFD}d\u{FFFD}e\u{FFFD}f\u{FFFD}")
        #expect(XMLSerializer.escapeAttributeValue("\u{1}") == "\u{FFFD}")
        #expect(!XMLSerializer.isAllowed("\u{0}"))
        #expect(XMLSerializer.isAllowed("\t"))
        #expect(XMLSerializer.isAllowed("\u{10000}"))
        // What was replaced reads back as U+FFFD.
        let stanza = element("message", XMLNamespace.client, [("id", "a\u{0}b")], [.text("x\u{1}y")])
        let read = roundTrip(stanza)
        #expect(read?.attribute("id") == "a\u{FFFD}b")
        #expect(read?.text == "x\u{FFFD}y")
    }

    @Test func streamHeader() {
        let header = XMLSerializer.streamHeader(
            attributes: [
                XMLAttribute("from", "example.com"), XMLAttribute("id", "c2s-1&2"),
                XMLAttribute("version", "1.0"), XMLAttribute("xml:lang", "en"),
            ]
        )
        #expect(
            header
                == "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                + "xmlns:stream='http://etherx.jabber.org/streams' from='example.com' id='c2s-1&amp;2' "
                + "version='1.0' xml:lang='en'>"
        )
        #expect(XMLSerializer.streamFooter == "</stream:stream>")
        // The reader accepts what the serializer writes.
        let result = read([Array((header + XMLSerializer.streamFooter).utf8)])
        #expect(result.error == nil)
        #expect(result.events.count == 2)
        guard case .streamOpened(let opened) = result.events.first else { return }
        #expect(opened.attribute("id") == "c2s-1&2")
        #expect(opened.defaultNamespace == "jabber:client")
    }

    @Test func stanzaNamespaces() {
        let message = element(
            "message", XMLNamespace.client, [("to", "bob@example.com"), ("type", "chat"), ("xml:lang", "en")],
            [
                .element(element("body", XMLNamespace.client, [], [.text("hi & bye")])),
                .element(element("x", "urn:a", [], [.element(element("y", "urn:a"))])),
                .element(element("z", nil)),
            ]
        )
        #expect(
            XMLSerializer.clientStream.serialize(message)
                == "<message to='bob@example.com' type='chat' xml:lang='en'><body>hi &amp; bye</body>"
                + "<x xmlns='urn:a'><y/></x><z xmlns=''/></message>"
        )
        let features = element(
            "features", XMLNamespace.streams, [],
            [.element(element("starttls", "urn:ietf:params:xml:ns:xmpp-tls", [], [.element(element("required", "urn:ietf:params:xml:ns:xmpp-tls"))]))]
        )
        #expect(
            XMLSerializer.clientStream.serialize(features)
                == "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>"
        )
        // Outside a stream, every namespace is declared.
        #expect(XMLSerializer().serialize(element("iq")) == "<iq xmlns='jabber:client'/>")
        // Prefixed attributes declare their prefix.
        let prefixed = XMLElement(name: "m", namespace: XMLNamespace.client, attributes: [XMLAttribute("foo:bar", "1", namespace: "urn:foo")])
        #expect(XMLSerializer.clientStream.serialize(prefixed) == "<m xmlns:foo='urn:foo' foo:bar='1'/>")
    }

    @Test func goldenStanzasRoundTrip() {
        let stanzas = [
            element(
                "message", XMLNamespace.client, [("type", "groupchat"), ("xml:lang", "fr")],
                [
                    .element(element("body", XMLNamespace.client, [], [.text("café & <b> 😀")])),
                    .element(element("x", "http://jabber.org/protocol/muc#user", [], [.element(element("item", "http://jabber.org/protocol/muc#user", [("jid", "a&b")]))])),
                ]
            ),
            element("iq", XMLNamespace.client, [("type", "result")], [.text("\n  "), .element(element("query", "jabber:iq:roster")), .text("\n")]),
            element("error", XMLNamespace.streams, [], [.element(element("policy-violation", "urn:ietf:params:xml:ns:xmpp-streams"))]),
            element("r", nil, [], [.element(element("s", nil)), .element(element("t", XMLNamespace.client))]),
            XMLElement(
                name: "m", namespace: XMLNamespace.client,
                attributes: [XMLAttribute("foo:bar", "1", namespace: "urn:foo"), XMLAttribute("baz:bar", "2", namespace: "urn:baz")],
                children: [.element(XMLElement(name: "n", namespace: "urn:foo", attributes: [XMLAttribute("foo:q", "3", namespace: "urn:foo")]))]
            ),
        ]
        for stanza in stanzas {
            #expect(roundTrip(stanza) == stanza)
        }
    }

    @Test func awkwardTextRoundTrips() {
        for piece in awkwardPieces {
            let stanza = element("message", XMLNamespace.client, [("a", piece)], [.element(element("body", XMLNamespace.client, [], [.text(piece)]))])
            #expect(roundTrip(stanza) == stanza, "\(piece.unicodeScalars.map { String($0.value, radix: 16) })")
        }
    }

    @Test func randomTextRoundTrips() {
        var generator = SeededGenerator(seed: 42)
        for _ in 0..<300 {
            let count = Int.random(in: 1...12, using: &generator)
            let text = (0..<count).map { _ in awkwardPieces.randomElement(using: &generator)! }.joined()
            let value = (0..<count).map { _ in awkwardPieces.randomElement(using: &generator)! }.joined()
            let stanza = element(
                "message", XMLNamespace.client, [("v", value), ("xml:lang", "en")],
                [.element(element("body", XMLNamespace.client, [], [.text(text)])), .element(element("thread"))]
            )
            let read = roundTrip(stanza)
            #expect(read == stanza)
            if read != stanza { break }
        }
    }
}
