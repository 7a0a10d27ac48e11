import Foundation
import SwitchboardCore
import Testing
@testable import SwitchboardStore

@Suite("History: append, sequences, paging")
struct HistoryTests {
    @Test("every field survives the round trip, unicode included")
    func roundTrip() async throws {
        try await withStore { store, _ in
            let written = [
                envelope("lobby", 1, ts: 1_700_000_000_001, user: "alice", display: "Alice Ünïcødé 👩‍💻", via: .xmpp,
                         kind: .chat, body: "héllo wörld 🎉 — 日本語\ttab\nnewline \"quotes\" \\ back",
                         attrs: ["reply_to": "01JD3M8Q7Z5X2W6YH9K4T1R0AB", "z-last": "ça \"va\"\n", "a.first": ""],
                         clientID: "c-17"),
                envelope("lobby", 2, ts: 1_700_000_000_002, user: "bob", via: .sip, kind: .reaction, body: "👍",
                         attrs: ["emoji": "👍"]),
                envelope("lobby", 3, ts: 1_700_000_000_003, user: "carol_9-x", via: .system, kind: .join, body: ""),
                envelope("dm.alice.bob", 1, ts: 1_700_000_000_004, user: "alice", via: .ws, kind: .chat, body: "psst",
                         clientID: "~!@#$%^&*()"),
            ]
            try store.append(written)
            let lobby = try await store.messages(in: room("lobby"), before: nil, after: nil, limit: 100)
            #expect(lobby == Array(written.prefix(3)))
            let direct = try await store.messages(in: room("dm.alice.bob"), before: nil, after: nil, limit: 100)
            #expect(direct == [written[3]])
            #expect(try await store.messages(in: room("elsewhere"), before: nil, after: nil, limit: 100).isEmpty)
        }
    }

    @Test("attrs are stored as compact JSON with sorted keys, or NULL when empty")
    func attrsEncoding() async throws {
        try await withStore { store, _ in
            try store.append([
                envelope("lobby", 1, attrs: ["b": "2", "a": "1", "q": "\"x\"\n"]),
                envelope("lobby", 2),
            ])
            let rows = try store.queryRaw("SELECT seq, attrs FROM envelopes ORDER BY seq")
            #expect(rows == [["1", #"{"a":"1","b":"2","q":"\"x\"\n"}"#], ["2", nil]])
        }
    }

    @Test("one call commits 1,000 envelopes across several rooms; loadSequences gives each room's max seq")
    func groupCommit() async throws {
        try await withStore { store, _ in
            let rooms = ["lobby", "dev", "ops", "dm.alice.bob", "calls.alice"]
            var next: [String: UInt64] = [:]
            var batch: [Envelope] = []
            for i in 0..<1_000 {
                let name = rooms[(i * 7 + i / 3) % rooms.count]
                let seq = next[name, default: 0] + 1
                next[name] = seq
                batch.append(envelope(name, seq, ts: 1_000 + Int64(i), clientID: i % 10 == 0 ? "c\(i)" : nil))
            }
            try store.append(batch)
            let expected = Dictionary(uniqueKeysWithValues: next.map { (room($0.key), $0.value) })
            #expect(try store.loadSequences() == expected)
            #expect(try store.queryRaw("SELECT count(*) FROM envelopes") == [["1000"]])
            for name in rooms {
                let all = try await store.messages(in: room(name), before: nil, after: 0, limit: 1_000)
                #expect(seqs(all) == Array(1...(next[name] ?? 0)))
                #expect(try store.roomExists(room(name)))
            }
            // Rooms created by append take the ts of their first envelope.
            #expect(try store.queryRaw("SELECT created_at FROM rooms WHERE name = 'lobby'") == [["1000"]])
        }
    }

    @Test("a failing batch commits nothing, and the same batch can be retried")
    func atomicBatch() async throws {
        try await withStore { store, _ in
            try store.append([envelope("lobby", 1)])
            // seq 1 again in the middle of the batch: primary key violation.
            let bad = [envelope("lobby", 2), envelope("other", 1), envelope("lobby", 1, body: "dup")]
            #expect(throws: (any Error).self) { try store.append(bad) }
            #expect(try store.loadSequences() == [room("lobby"): 1])
            #expect(try store.roomExists(room("other")) == false)
            try store.append([envelope("lobby", 2), envelope("other", 1)])
            #expect(try store.loadSequences() == [room("lobby"): 2, room("other"): 1])
        }
    }

    @Test("an envelope without a seq (ephemeral) is refused, an empty batch is a no-op")
    func refusesSeqZero() async throws {
        try await withStore { store, _ in
            try store.append([])
            #expect(throws: SwitchboardError.self) { try store.append([envelope("lobby", 0, kind: .typing)]) }
            #expect(try store.loadSequences().isEmpty)
        }
    }

    @Test("last_seq only ever grows, even when a batch carries an older seq of a room")
    func lastSeqMonotonic() async throws {
        try await withStore { store, _ in
            try store.append([envelope("lobby", 5), envelope("lobby", 3)])
            #expect(try store.loadSequences() == [room("lobby"): 5])
            try store.append([envelope("lobby", 4)])
            #expect(try store.loadSequences() == [room("lobby"): 5])
        }
    }

    @Test("messages(): before, after and limit")
    func paging() async throws {
        try await withStore { store, _ in
            try store.append((1...50).map { envelope("lobby", $0) })
            try store.append((1...5).map { envelope("other", $0) })
            let lobby = room("lobby")
            func page(before: UInt64?, after: UInt64?, limit: Int) async throws -> [UInt64] {
                seqs(try await store.messages(in: lobby, before: before, after: after, limit: limit))
            }
            // Neither bound: the newest `limit`, oldest first.
            #expect(try await page(before: nil, after: nil, limit: 10) == Array(41...50))
            #expect(try await page(before: nil, after: nil, limit: 100) == Array(1...50))
            // Only before: the newest `limit` below it.
            #expect(try await page(before: 41, after: nil, limit: 10) == Array(31...40))
            #expect(try await page(before: 5, after: nil, limit: 10) == Array(1...4))
            #expect(try await page(before: 1, after: nil, limit: 10) == [])
            #expect(try await page(before: 0, after: nil, limit: 10) == [])
            #expect(try await page(before: UInt64.max, after: nil, limit: 3) == [48, 49, 50])
            // Only after: the oldest `limit` after it.
            #expect(try await page(before: nil, after: 0, limit: 10) == Array(1...10))
            #expect(try await page(before: nil, after: 10, limit: 5) == Array(11...15))
            #expect(try await page(before: nil, after: 48, limit: 10) == [49, 50])
            #expect(try await page(before: nil, after: 50, limit: 10) == [])
            #expect(try await page(before: nil, after: UInt64.max, limit: 10) == [])
            // Both: a window, the oldest `limit` of it.
            #expect(try await page(before: 20, after: 10, limit: 100) == Array(11...19))
            #expect(try await page(before: 20, after: 10, limit: 3) == [11, 12, 13])
            #expect(try await page(before: 11, after: 10, limit: 3) == [])
            #expect(try await page(before: 10, after: 20, limit: 3) == [])
            // A limit below 1 returns nothing.
            #expect(try await page(before: nil, after: nil, limit: 0) == [])
            #expect(try await page(before: nil, after: 0, limit: -5) == [])
            // Rooms do not leak into each other.
            #expect(seqs(try await store.messages(in: room("other"), before: nil, after: nil, limit: 100)) == Array(1...5))
        }
    }

    @Test("recentClientIDs returns the envelopes with a client_id at or after the given time")
    func recentClientIDs() async throws {
        try await withStore { store, _ in
            try store.append([
                envelope("lobby", 1, ts: 100, clientID: "old"),
                envelope("lobby", 2, ts: 200, clientID: "edge"),
                envelope("lobby", 3, ts: 300),
                envelope("dev", 1, ts: 250, user: "bob", clientID: "b-1"),
                envelope("lobby", 4, ts: 400, clientID: "new"),
            ])
            let recent = try store.recentClientIDs(since: 200)
            #expect(recent.map(\.clientID) == ["edge", "b-1", "new"])
            #expect(recent[1] == envelope("dev", 1, ts: 250, user: "bob", clientID: "b-1"))
            #expect(try store.recentClientIDs(since: 401).isEmpty)
        }
    }

    @Test("roomExists is true once a room was created or written to")
    func roomExists() async throws {
        try await withStore { store, _ in
            #expect(try store.roomExists(room("lobby")) == false)
            try store.append([envelope("lobby", 1)])
            #expect(try store.roomExists(room("lobby")))
            try await store.createRoom(room("empty"), now: 5)
            #expect(try store.roomExists(room("empty")))
            #expect(try store.loadSequences() == [room("lobby"): 1, room("empty"): 0])
        }
    }

    @Test("two stores on one file (CLI beside the server) see each other's writes")
    func twoStoresOneFile() async throws {
        let fixture = StoreFixture()
        defer { fixture.remove() }
        let server = try fixture.open()
        let cli = try fixture.open()

        try await cli.createRoom(room("announcements"), now: 1)
        #expect(try server.roomExists(room("announcements")))
        try server.append([envelope("announcements", 1), envelope("announcements", 2)])
        #expect(try cli.loadSequences() == [room("announcements"): 2])
        #expect(seqs(try await cli.messages(in: room("announcements"), before: nil, after: nil, limit: 10)) == [1, 2])

        let credentials = try StoredCredentials.derive(user: user("dave"), password: "pw-dave", realm: "localhost", iterations: 4096)
        try await cli.createAccount(credentials, now: 7)
        #expect(try await server.credentials(for: user("dave")) == credentials)

        #expect(try await cli.deleteRoom(room("announcements")))
        #expect(try server.roomExists(room("announcements")) == false)

        // Concurrent writers from both pools: the busy timeout serialises them.
        async let a: Void = Task.detached {
            for i in 1...50 { try server.append([envelope("busy-a", UInt64(i))]) }
        }.value
        async let b: Void = Task.detached {
            for i in 1...50 { try cli.append([envelope("busy-b", UInt64(i))]) }
        }.value
        _ = try await (a, b)
        #expect(try server.loadSequences()[room("busy-b")] == 50)
        #expect(try cli.loadSequences()[room("busy-a")] == 50)
    }
}

@Suite struct RoomCacheTests {
    /// The server caches which rooms exist; when another process (the CLI) deletes one,
    /// the next commit to it fails once, forgets the cache, and the retry recreates it.
    @Test func appendRecreatesARoomDeletedByAnotherProcess() async throws {
        let fixture = StoreFixture()
        defer { fixture.remove() }
        let server = try fixture.open()
        let cli = try fixture.open()
        try server.append([envelope("lobby", 1)])
        #expect(try await cli.deleteRoom(room("lobby")))
        #expect(throws: (any Error).self) { try server.append([envelope("lobby", 2)]) }
        try server.append([envelope("lobby", 2)])
        #expect(try server.loadSequences() == [room("lobby"): 2])
    }

    /// Without rows, a room keeps the last seq retention recorded before emptying it.
    @Test func lastSeqSurvivesRetentionEmptyingARoom() async throws {
        try await withStore { store, _ in
            try store.append((1...10).map { envelope("lobby", $0, ts: 1_000) })
            _ = try await store.applyRetention(now: 10_000_000, maxAgeMillis: 1_000, maxPerRoom: nil)
            #expect(try await store.messages(in: room("lobby"), before: nil, after: nil, limit: 100).isEmpty)
            #expect(try store.loadSequences() == [room("lobby"): 10])
            #expect(try await store.listRooms().map(\.lastSeq) == [10])
        }
    }
}
