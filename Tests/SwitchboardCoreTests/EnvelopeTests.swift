import Foundation
import Testing
@testable import SwitchboardCore

@Suite struct EnvelopeTests {
    static let sample = Envelope(
        id: "01JD3M8Q7Z5X2W6YH9K4T1R0AB", room: RoomName("lobby")!, seq: 42, ts: 1_732_236_000_123,
        from: Sender(user: UserName("alice")!, display: "Alice", via: .xmpp), kind: .chat,
        body: "hello \"from\" Gajim\n\\ ünï", attrs: ["reply_to": "01JD3", "a": "b"], clientID: "c-17")

    @Test func canonicalJSONHasFixedKeyOrderAndEscapes() {
        #expect(Self.sample.jsonString() == #"{"id":"01JD3M8Q7Z5X2W6YH9K4T1R0AB","room":"lobby","seq":42,"ts":1732236000123,"from":{"user":"alice","display":"Alice","via":"xmpp"},"kind":"chat","body":"hello \"from\" Gajim\n\\ ünï","attrs":{"a":"b","reply_to":"01JD3"},"client_id":"c-17"}"#)
    }

    @Test func optionalFieldsAreOmittedAndAttrsAlwaysPresent() {
        var envelope = Self.sample
        envelope.clientID = nil
        envelope.from.display = nil
        envelope.attrs = [:]
        envelope.body = "\u{1}"
        #expect(envelope.jsonString() == #"{"id":"01JD3M8Q7Z5X2W6YH9K4T1R0AB","room":"lobby","seq":42,"ts":1732236000123,"from":{"user":"alice","via":"xmpp"},"kind":"chat","body":"\u0001","attrs":{}}"#)
    }

    @Test func canonicalJSONDecodesBackWithFoundation() throws {
        let decoded = try JSONDecoder().decode(Envelope.self, from: Data(Self.sample.jsonBytes()))
        #expect(decoded == Self.sample)
    }

    @Test func decodingRejectsBadNames() {
        let bad = #"{"id":"x","room":"Bad Room","seq":1,"ts":1,"from":{"user":"a","via":"ws"},"kind":"chat","body":"","attrs":{}}"#
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(Envelope.self, from: Data(bad.utf8)) }
        let badVia = #"{"id":"x","room":"r","seq":1,"ts":1,"from":{"user":"a","via":"pigeon"},"kind":"chat","body":"","attrs":{}}"#
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(Envelope.self, from: Data(badVia.utf8)) }
    }

    @Test(arguments: ["lobby", "LOBBY", "a.b_c-9", String(repeating: "r", count: 64)])
    func validRoomNames(_ name: String) {
        #expect(RoomName(name)?.rawValue == name.lowercased())
    }

    @Test(arguments: ["", "with space", "ümlaut", String(repeating: "r", count: 65), "a/b", "a:b",
                     // Unicode case mapping must not fold look-alikes into ASCII names.
                     "\u{212A}elvin", "\u{0130}stanbul", "\u{FF2C}obby"])
    func invalidRoomNames(_ name: String) {
        #expect(RoomName(name) == nil)
    }

    @Test(arguments: ["alice", "Bob_1", "x-y", String(repeating: "u", count: 32)])
    func validUserNames(_ name: String) {
        #expect(UserName(name)?.rawValue == name.lowercased())
    }

    @Test(arguments: ["", "a.b", "a b", String(repeating: "u", count: 33), "é", "\u{212A}elvin", "\u{0130}van",
                     "\u{017F}am"])
    func invalidUserNames(_ name: String) {
        #expect(UserName(name) == nil)
    }

    @Test func reservedRoomScopes() {
        let alice = UserName("alice")!, bob = UserName("bob")!
        #expect(RoomName.direct(bob, alice).rawValue == "dm.alice.bob")
        #expect(RoomName("dm.alice.bob")!.scope == .direct(alice, bob))
        #expect(RoomName("dm.bob.alice")!.scope == .invalidReserved)
        #expect(RoomName("dm.alice")!.scope == .invalidReserved)
        #expect(RoomName("calls.alice")!.scope == .callLog(alice))
        #expect(RoomName("calls.a.b")!.scope == .invalidReserved)
        #expect(RoomName("dmz")!.scope == .group)
        #expect(RoomName("dm")!.scope == .invalidReserved)
        #expect(RoomName("calls")!.scope == .invalidReserved)
        #expect(RoomName("dm.")!.scope == .invalidReserved)
        #expect(RoomName("dm.alice.bob.carol")!.scope == .invalidReserved)
        #expect(RoomName("dm..bob")!.scope == .invalidReserved)
        #expect(RoomName("calls.")!.scope == .invalidReserved)
        #expect(RoomName("dm.alice.alice")!.scope == .direct(alice, alice))
        #expect(RoomName("dm.\(String(repeating: "a", count: 33)).bob")!.scope == .invalidReserved)
        #expect(RoomName("lobby.dm")!.scope == .group)
        #expect(RoomName("callsx.alice")!.scope == .group)
    }

    @Test func validationCatchesEachLimit() {
        let from = Sender(user: UserName("alice")!, via: .line)
        let room = RoomName("lobby")!
        let limits = EnvelopeLimits(maxBodyBytes: 10)
        func code(_ draft: EnvelopeDraft) -> SwitchboardError.Code? {
            do { try draft.validate(limits); return nil } catch { return error.code }
        }
        #expect(code(EnvelopeDraft(room: room, from: from, body: "0123456789")) == nil)
        #expect(code(EnvelopeDraft(room: room, from: from, body: "0123456789a")) == .bodyTooLarge)
        #expect(code(EnvelopeDraft(room: room, from: from, body: "a\u{0}b")) == .invalidBody)
        #expect(code(EnvelopeDraft(room: room, from: from, body: "tab\tok\n")) == nil)
        #expect(code(EnvelopeDraft(room: room, from: from, body: "x", attrs: ["Bad Key": "v"])) == .invalidAttrs)
        #expect(code(EnvelopeDraft(room: room, from: from, body: "x", attrs: ["k": String(repeating: "v", count: 1025)])) == .invalidAttrs)
        let many = Dictionary(uniqueKeysWithValues: (0..<33).map { ("k\($0)", "v") })
        #expect(code(EnvelopeDraft(room: room, from: from, body: "x", attrs: many)) == .invalidAttrs)
        #expect(code(EnvelopeDraft(room: room, from: from, body: "x", clientID: "has space")) == .invalidClientID)
        #expect(code(EnvelopeDraft(room: room, from: from, body: "x", clientID: String(repeating: "c", count: 129))) == .invalidClientID)
    }

    @Test func ulidsAreSortableAndMonotonic() {
        var generator = ULIDGenerator()
        var previous = ""
        for i in 0..<10_000 {
            let id = generator.next(millis: 1_732_236_000_000 + Int64(i / 100))
            #expect(ULIDGenerator.isValid(id))
            #expect(id > previous)
            previous = id
        }
        // A clock going backwards still yields increasing ids.
        let earlier = generator.next(millis: 1_000)
        #expect(earlier > previous)
        // The time prefix encodes the millisecond.
        #expect(ULIDGenerator.encode(millis: 0, hi: 0, lo: 0) == "00000000000000000000000000")
        #expect(ULIDGenerator.encode(millis: 1_732_236_000_123, hi: 0, lo: 0).prefix(10) == "01JD8MZEVV")
    }
}
