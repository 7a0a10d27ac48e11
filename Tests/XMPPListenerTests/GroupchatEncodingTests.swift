import SwitchboardCore
import Testing
import XMPPWire
@testable import XMPPListener

/// The pre-serialized groupchat message (``GroupchatEncoding``) and the once-per-occupant
/// presences of a join (``AnnouncedOccupants``).
@Suite struct GroupchatEncodingTests {
    static let mucDomain = "conference.example.org"

    static func envelope(kind: EnvelopeKind = .chat, body: String, clientID: String? = nil, user: String = "bob",
                         attrs: [String: String] = [:]) -> Envelope {
        Envelope(id: "01JDXK7Q2ZP8V3M4N5B6C7D8E9", room: RoomName("lobby")!, seq: 42, ts: 1_764_500_000_123,
                 from: Sender(user: UserName(user)!, via: .line), kind: kind, body: body, attrs: attrs, clientID: clientID)
    }

    @Test(arguments: [
        envelope(body: "hello"),
        envelope(body: "quotes ' \" and <tags> & ampersands\r\nCRLF, tab\t, ünïcødé 🎉, bad \u{1}", clientID: "o'rig&in<id>"),
        envelope(kind: .reaction, body: "👍", clientID: "r1"),
        envelope(kind: .system, body: "room notice", user: "carol"),
        envelope(body: " to='' is just text here", clientID: " to=''"),
    ])
    func splicedBytesEqualTheSerializedElement(envelope: Envelope) {
        let (head, tail) = GroupchatEncoding.parts(envelope, mucDomain: Self.mucDomain)
        #expect(head.hasPrefix("<message type='groupchat' id='"))
        #expect(head.hasSuffix(" to='"))
        #expect(tail.hasPrefix("'><body>"))
        #expect(tail.hasSuffix("</message>"))
        for to in ["alice@example.org/phone", "o'neil@example.org/a&b <c>", "dave@example.org/switchboard-1f2e3d4c"] {
            let expected = XMLSerializer.clientStream.serialize(
                XMPPConnectionHandler.groupchatElement(envelope, to: to, mucDomain: Self.mucDomain, delayed: false))
            #expect(head + XMLSerializer.escapeAttributeValue(to) + tail == expected)
        }
    }

    @Test func theMessageCarriesIdsNickAndBody() {
        let (head, tail) = GroupchatEncoding.parts(Self.envelope(body: "a < b", clientID: "origin-1"), mucDomain: Self.mucDomain)
        #expect(head == "<message type='groupchat' id='origin-1' from='lobby@conference.example.org/bob' to='")
        #expect(tail == "'><body>a &lt; b</body><stanza-id xmlns='urn:xmpp:sid:0' id='01JDXK7Q2ZP8V3M4N5B6C7D8E9' "
                + "by='lobby@conference.example.org'/></message>")
        let (_, other) = GroupchatEncoding.parts(Self.envelope(kind: .edit, body: "fixed"), mucDomain: Self.mucDomain)
        #expect(other.hasPrefix("'><body>[edit] fixed</body>"))
    }

    @Test func onlyBodiedRoomMessagesTakeTheCachedPath() {
        #expect(XMPPConnectionHandler.isGroupchatMessage(Self.envelope(body: "x")))
        #expect(XMPPConnectionHandler.isGroupchatMessage(Self.envelope(kind: .system, body: "x")))
        #expect(!XMPPConnectionHandler.isGroupchatMessage(Self.envelope(kind: .system, body: "x", attrs: ["subject": "x"])))
        for kind in [EnvelopeKind.join, .leave, .typing] {
            #expect(!XMPPConnectionHandler.isGroupchatMessage(Self.envelope(kind: kind, body: "")))
        }
    }

    static func sender(_ user: String, _ via: Via = .xmpp) -> Sender { Sender(user: UserName(user)!, via: via) }
    static func occupant(_ user: String, _ via: Via = .xmpp) -> Occupant { Occupant(user: UserName(user)!, via: via) }

    /// bob and carol joined before us; dave joined after us but before our occupant list was
    /// read, so his join envelope is still coming; erin joined and left in between.
    @Test func eachOccupantIsAnnouncedOncePerJoin() {
        var announced = AnnouncedOccupants()
        let listed = announced.list([Self.occupant("bob"), Self.occupant("carol", .ws), Self.occupant("dave")])
        #expect(listed.map { $0.user.rawValue } == ["bob", "carol", "dave"])
        // Each step: (join or leave, sender, whether a presence goes out).
        let steps: [(join: Bool, sender: Sender, announce: Bool)] = [
            (true, Self.sender("dave"), false),          // already in the list
            (true, Self.sender("erin"), true),           // not listed: announced now
            (false, Self.sender("erin"), true),
            (true, Self.sender("carol", .xmpp), true),   // the same user over another protocol
            (true, Self.sender("carol", .ws), false),
            // A leave and a rejoin are both announced; a second leave, or one of an occupant never shown, is not.
            (false, Self.sender("bob"), true),
            (false, Self.sender("bob"), false),
            (true, Self.sender("bob"), true),
            (false, Self.sender("frank"), false),
        ]
        for (index, step) in steps.enumerated() {
            let announce = step.join ? announced.joined(step.sender) : announced.left(step.sender)
            #expect(announce == step.announce, "step \(index): \(step.join ? "join" : "leave") of \(step.sender.user)")
        }
        // A repeated list (not sent by the listener, but harmless) announces nobody twice.
        let again = announced.list([Self.occupant("bob"), Self.occupant("gina")])
        #expect(again.map { $0.user.rawValue } == ["gina"])
    }
}
