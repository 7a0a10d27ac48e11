import Testing
@testable import SwitchboardCore

@Suite struct DedupCacheTests {
    let lobby = RoomName("lobby")!
    let alice = UserName("alice")!

    func envelope(_ seq: UInt64, ts: Int64, clientID: String, room: RoomName? = nil) -> Envelope {
        Envelope(id: "id-\(seq)", room: room ?? lobby, seq: seq, ts: ts, from: Sender(user: alice, via: .line),
                 kind: .chat, body: "x", clientID: clientID)
    }

    func key(_ clientID: String, room: RoomName? = nil) -> DedupCache.Key {
        DedupCache.Key(room: room ?? lobby, user: alice, clientID: clientID)
    }

    @Test func aClientIDIsRememberedForTheWindowOnly() {
        var cache = DedupCache(windowMillis: 1000, maxPerRoom: 100)
        cache.remember(envelope(1, ts: 0, clientID: "a"), now: 0)
        #expect(cache.lookup(key("a"), now: 1000)?.seq == 1)
        #expect(cache.lookup(key("a"), now: 1001) == nil)
        // A later insert in the same room drops what left the window.
        cache.remember(envelope(2, ts: 1500, clientID: "b"), now: 1500)
        #expect(cache.lookup(key("a"), now: 0) == nil)
        #expect(cache.lookup(key("b"), now: 1500)?.seq == 2)
    }

    @Test func eachRoomKeepsAtMostMaxPerRoom() {
        var cache = DedupCache(windowMillis: 60_000, maxPerRoom: 3)
        let other = RoomName("other")!
        cache.remember(envelope(1, ts: 0, clientID: "o", room: other), now: 0)
        for seq in 1...5 { cache.remember(envelope(UInt64(seq), ts: Int64(seq), clientID: "c\(seq)"), now: Int64(seq)) }
        #expect(cache.lookup(key("c1"), now: 5) == nil)
        #expect(cache.lookup(key("c2"), now: 5) == nil)
        #expect((3...5).allSatisfy { cache.lookup(key("c\($0)"), now: 5)?.seq == UInt64($0) })
        #expect(cache.lookup(key("o", room: other), now: 5)?.seq == 1)   // other rooms untouched
    }
}
