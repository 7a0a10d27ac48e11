import Foundation
import SwitchboardCore
import Testing
@testable import SwitchboardStore

@Suite("Schema and connection settings")
struct SchemaTests {
    @Test("opening a new file creates its directory and the tables with their indexes")
    func migrationsCreateSchema() async throws {
        try await withStore { store, fixture in
            #expect(FileManager.default.fileExists(atPath: fixture.path))
            let tables = try store.queryRaw(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'grdb%' AND name NOT LIKE 'sqlite%' ORDER BY name")
            #expect(tables == [["accounts"], ["envelopes"], ["rooms"], ["sip_bindings"], ["sip_memberships"]])
            let indexes = try store.queryRaw(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'envelopes' AND sql IS NOT NULL ORDER BY name")
            #expect(indexes == [["envelopes_client_ts"], ["envelopes_id"]])
            let envelopeColumns = try store.queryRaw("SELECT name FROM pragma_table_info('envelopes') ORDER BY cid")
            #expect(envelopeColumns.map { $0[0] } == [
                "room", "seq", "id", "ts", "user", "display", "via", "kind", "body", "attrs", "client_id",
            ])
            let withoutRowID = try store.queryRaw("SELECT sql FROM sqlite_master WHERE name = 'envelopes'")
            #expect(withoutRowID.first?.first??.contains("WITHOUT ROWID") == true)
            let accountColumns = try store.queryRaw("SELECT name FROM pragma_table_info('accounts') ORDER BY cid")
            #expect(!accountColumns.contains { $0[0]?.contains("password") == true })
        }
    }

    @Test("reopening an existing file keeps its data and does not migrate twice")
    func reopen() async throws {
        let fixture = StoreFixture()
        defer { fixture.remove() }
        do {
            let store = try fixture.open()
            try store.append([envelope("lobby", 1)])
            try store.close()
        }
        let again = try fixture.open()
        #expect(try again.loadSequences() == [room("lobby"): 1])
        #expect(try again.queryRaw("SELECT count(*) FROM grdb_migrations") == [["2"]])
    }

    @Test("several stores opening a new file at the same moment all succeed (migration race)")
    func concurrentOpen() async throws {
        let fixture = StoreFixture()
        defer { fixture.remove() }
        let stores = try await withThrowingTaskGroup(of: SQLiteStore.self) { group in
            for _ in 0..<4 {
                group.addTask { try fixture.open() }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        try stores[0].append([envelope("lobby", 1)])
        for store in stores {
            #expect(try store.loadSequences() == [room("lobby"): 1])
        }
        #expect(try stores[3].queryRaw("SELECT count(*) FROM grdb_migrations") == [["2"]])
    }

    @Test("WAL, foreign keys and the synchronous level are set", arguments: [
        (SQLiteStore.Synchronous.normal, "1"), (SQLiteStore.Synchronous.full, "2"),
    ])
    func pragmas(synchronous: SQLiteStore.Synchronous, expected: String) throws {
        let fixture = StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open(synchronous: synchronous)
        #expect(try store.queryRaw("PRAGMA journal_mode") == [["wal"]])
        #expect(try store.queryRaw("PRAGMA foreign_keys") == [["1"]])
        #expect(try store.queryRaw("PRAGMA synchronous") == [[expected]])
    }

    /// The busy handler retries in 50 µs steps for busyTimeoutMillis, then gives up.
    @Test func busyHandlerRetriesBrieflyThenGivesUp() {
        #expect(SQLiteStore.retryBriefly(0))
        #expect(SQLiteStore.retryBriefly(SQLiteStore.busyTimeoutMillis * 20 - 1))
        #expect(!SQLiteStore.retryBriefly(SQLiteStore.busyTimeoutMillis * 20))
    }

    @Test("every Via and EnvelopeKind case passes the schema's CHECK constraints")
    func everyEnumCaseIsAccepted() async throws {
        try await withStore { store, _ in
            var batch: [Envelope] = []
            var seq: UInt64 = 0
            for via in Via.allCases {
                for kind in EnvelopeKind.allCases {
                    seq += 1
                    batch.append(envelope("lobby", seq, via: via, kind: kind))
                }
            }
            try store.append(batch)
            let back = try await store.messages(in: room("lobby"), before: nil, after: 0, limit: 1000)
            #expect(back == batch)
        }
    }

    @Test("constraints reject rows that break the rules", arguments: [
        // seq must be positive
        "INSERT INTO envelopes(room, seq, id, ts, user, via, kind, body) VALUES ('lobby', 0, 'x0', 1, 'alice', 'line', 'chat', '')",
        "INSERT INTO envelopes(room, seq, id, ts, user, via, kind, body) VALUES ('lobby', -1, 'x1', 1, 'alice', 'line', 'chat', '')",
        // unknown via and kind
        "INSERT INTO envelopes(room, seq, id, ts, user, via, kind, body) VALUES ('lobby', 5, 'x2', 1, 'alice', 'irc', 'chat', '')",
        "INSERT INTO envelopes(room, seq, id, ts, user, via, kind, body) VALUES ('lobby', 5, 'x3', 1, 'alice', 'line', 'shout', '')",
        // room must exist (foreign key)
        "INSERT INTO envelopes(room, seq, id, ts, user, via, kind, body) VALUES ('nowhere', 1, 'x4', 1, 'alice', 'line', 'chat', '')",
        // duplicate (room, seq) and duplicate id
        "INSERT INTO envelopes(room, seq, id, ts, user, via, kind, body) VALUES ('lobby', 1, 'x5', 1, 'alice', 'line', 'chat', '')",
        "INSERT INTO envelopes(room, seq, id, ts, user, via, kind, body) VALUES ('lobby', 9, 'id-lobby-1', 1, 'alice', 'line', 'chat', '')",
        // NULL body, attrs not an object
        "INSERT INTO envelopes(room, seq, id, ts, user, via, kind, body) VALUES ('lobby', 9, 'x6', 1, 'alice', 'line', 'chat', NULL)",
        "INSERT INTO envelopes(room, seq, id, ts, user, via, kind, body, attrs) VALUES ('lobby', 9, 'x7', 1, 'alice', 'line', 'chat', '', '[1]')",
        // room names
        "INSERT INTO rooms(name, created_at) VALUES ('Lobby', 1)",
        "INSERT INTO rooms(name, created_at) VALUES ('', 1)",
        "INSERT INTO rooms(name, created_at) VALUES ('a b', 1)",
        "INSERT INTO rooms(name, created_at) VALUES ('caf\u{e9}', 1)",
        "INSERT INTO rooms(name, created_at) VALUES ('\(String(repeating: "a", count: 65))', 1)",
        "UPDATE rooms SET last_seq = -1 WHERE name = 'lobby'",
        // account names and iterations
        "INSERT INTO accounts VALUES ('al.ice', 1, x'00', 4096, x'00', x'00', x'00', x'00', 'r', 'h', 'h')",
        "INSERT INTO accounts VALUES ('Alice', 1, x'00', 4096, x'00', x'00', x'00', x'00', 'r', 'h', 'h')",
        "INSERT INTO accounts VALUES ('\(String(repeating: "a", count: 33))', 1, x'00', 4096, x'00', x'00', x'00', x'00', 'r', 'h', 'h')",
        "INSERT INTO accounts VALUES ('bob', 1, x'00', 4095, x'00', x'00', x'00', x'00', 'r', 'h', 'h')",
        "INSERT INTO accounts VALUES ('bob', 1, NULL, 4096, x'00', x'00', x'00', x'00', 'r', 'h', 'h')",
    ])
    func constraintsRejectBadRows(sql: String) async throws {
        try await withStore { store, _ in
            try store.append([envelope("lobby", 1)])
            #expect(throws: (any Error).self) { try store.executeRaw(sql) }
            // Nothing else changed.
            #expect(try store.queryRaw("SELECT count(*) FROM envelopes") == [["1"]])
            #expect(try store.queryRaw("SELECT name FROM rooms") == [["lobby"]])
            #expect(try store.loadSequences() == [room("lobby"): 1])
            #expect(try store.queryRaw("SELECT count(*) FROM accounts") == [["0"]])
        }
    }

    @Test("the name rules accept the edge cases the core accepts")
    func constraintsAcceptLegalNames() async throws {
        try await withStore { store, _ in
            let longest = String(repeating: "z", count: 64)
            try store.executeRaw("INSERT INTO rooms(name, created_at) VALUES ('a.b_c-9', 1), ('\(longest)', 1)")
            try store.executeRaw("""
                INSERT INTO accounts VALUES ('a_b-9', 1, x'00', 4096, x'00', x'00', x'00', x'00', 'r', 'h', 'h'),
                    ('\(String(repeating: "u", count: 32))', 1, x'00', 4096, x'00', x'00', x'00', x'00', 'r', 'h', 'h')
                """)
            #expect(try store.queryRaw("SELECT count(*) FROM rooms") == [["2"]])
            #expect(try store.queryRaw("SELECT count(*) FROM accounts") == [["2"]])
        }
    }

    @Test("a row that cannot be decoded throws a descriptive error instead of trapping")
    func corruptRowThrows() async throws {
        try await withStore { store, _ in
            try store.append([envelope("lobby", 1)])
            try store.executeRaw("UPDATE envelopes SET user = 'Not A User' WHERE seq = 1")
            let error = await #expect(throws: SwitchboardError.self) {
                _ = try await store.messages(in: room("lobby"), before: nil, after: nil, limit: 10)
            }
            #expect(error?.code == "storage_corrupt")
            #expect(error?.message.contains("lobby#1") == true)
        }
    }
}
