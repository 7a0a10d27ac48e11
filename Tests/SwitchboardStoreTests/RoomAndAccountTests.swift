import Foundation
import SwitchboardCore
import Testing
@testable import SwitchboardStore

@Suite("Rooms")
struct RoomTests {
    @Test("createRoom, then a second create fails with room_exists")
    func create() async throws {
        try await withStore { store, _ in
            try await store.createRoom(room("lobby"), now: 42)
            let error = await #expect(throws: SwitchboardError.self) {
                try await store.createRoom(room("lobby"), now: 43)
            }
            #expect(error == SwitchboardError("room_exists", "room lobby already exists"))
            #expect(try await store.listRooms() == [RoomInfo(name: room("lobby"), lastSeq: 0, createdAt: 42)])
            // A room that exists because it was written to also counts.
            try store.append([envelope("dev", 1)])
            await #expect(throws: SwitchboardError.self) { try await store.createRoom(room("dev"), now: 44) }
        }
    }

    @Test("deleteRoom removes the room and, by cascade, its history")
    func deleteCascades() async throws {
        try await withStore { store, _ in
            try store.append((1...5).map { envelope("lobby", $0) } + (1...2).map { envelope("dev", $0) })
            #expect(try await store.deleteRoom(room("lobby")))
            #expect(try await store.deleteRoom(room("lobby")) == false)
            #expect(try await store.deleteRoom(room("never")) == false)
            #expect(try store.roomExists(room("lobby")) == false)
            #expect(try await store.messages(in: room("lobby"), before: nil, after: nil, limit: 10).isEmpty)
            #expect(try store.queryRaw("SELECT room, count(*) FROM envelopes GROUP BY room") == [["dev", "2"]])
            #expect(try store.loadSequences() == [room("dev"): 2])
            // The name can be used again, starting a new history.
            try await store.createRoom(room("lobby"), now: 9)
            #expect(try store.loadSequences()[room("lobby")] == 0)
        }
    }

    @Test("listRooms lists group rooms only, by name, with their last seq")
    func list() async throws {
        try await withStore { store, _ in
            try await store.createRoom(room("zeta"), now: 1)
            try store.append([
                envelope("alpha", 1, ts: 5), envelope("alpha", 2, ts: 6),
                envelope("dm.alice.bob", 1), envelope("calls.alice", 1),
                envelope("dmz", 1, ts: 7), envelope("callsign", 1, ts: 8), envelope("dm", 1, ts: 9),
            ])
            let rooms = try await store.listRooms()
            #expect(rooms == [
                RoomInfo(name: room("alpha"), lastSeq: 2, createdAt: 5),
                RoomInfo(name: room("callsign"), lastSeq: 1, createdAt: 8),
                RoomInfo(name: room("dm"), lastSeq: 1, createdAt: 9),
                RoomInfo(name: room("dmz"), lastSeq: 1, createdAt: 7),
                RoomInfo(name: room("zeta"), lastSeq: 0, createdAt: 1),
            ])
        }
    }
}

@Suite("Accounts")
struct AccountTests {
    static let iterations = StoredCredentials.minimumIterations

    func derive(_ name: String, _ password: String, realm: String = "localhost") throws -> StoredCredentials {
        try StoredCredentials.derive(user: user(name), password: password, realm: realm, iterations: Self.iterations)
    }

    @Test("create, load, duplicate, update, delete, list")
    func lifecycle() async throws {
        try await withStore { store, _ in
            #expect(try await store.credentials(for: user("alice")) == nil)
            #expect(try await store.listAccounts().isEmpty)

            let alice = try derive("alice", "correct horse")
            try await store.createAccount(alice, now: 100)
            #expect(try await store.credentials(for: user("alice")) == alice)

            let error = await #expect(throws: SwitchboardError.self) {
                try await store.createAccount(try derive("alice", "other"), now: 101)
            }
            #expect(error == SwitchboardError("user_exists", "user alice already exists"))
            #expect(try await store.credentials(for: user("alice")) == alice)

            let renewed = try derive("alice", "battery staple", realm: "example.org")
            #expect(try await store.updateCredentials(renewed))
            #expect(try await store.credentials(for: user("alice")) == renewed)
            #expect(try await store.updateCredentials(try derive("nobody", "x")) == false)
            #expect(try await store.credentials(for: user("nobody")) == nil)

            try await store.createAccount(try derive("bob", "b"), now: 50)
            try await store.createAccount(try derive("_carol", "c"), now: 75)
            let listed = try await store.listAccounts()
            #expect(listed.map(\.user) == [user("_carol"), user("alice"), user("bob")])
            #expect(listed.map(\.createdAt) == [75, 100, 50])

            #expect(try await store.deleteAccount(user("alice")))
            #expect(try await store.deleteAccount(user("alice")) == false)
            #expect(try await store.credentials(for: user("alice")) == nil)
            #expect(try await store.listAccounts().map(\.user) == [user("_carol"), user("bob")])
        }
    }

    @Test("stored credentials verify the right password and reject a wrong one")
    func verify() async throws {
        try await withStore { store, fixture in
            try await store.createAccount(try derive("alice", "s3cret-Pässwörd"), now: 1)
            // Load through another pool, as a restarted server would.
            let reopened = try fixture.open()
            let loaded = try #require(try await reopened.credentials(for: user("alice")))
            #expect(loaded.iterations == Self.iterations)
            #expect(loaded.salt.count == 16)
            #expect(loaded.verify(password: "s3cret-Pässwörd"))
            #expect(loaded.verify(password: "s3cret-Passwort") == false)
            #expect(loaded.verify(password: "") == false)

            let authenticator = PasswordAuthenticator(accounts: reopened)
            #expect(await authenticator.authenticate(user: "alice", password: "s3cret-Pässwörd") == user("alice"))
            #expect(await authenticator.authenticate(user: "alice", password: "nope") == nil)
            #expect(await authenticator.authenticate(user: "mallory", password: "s3cret-Pässwörd") == nil)
        }
    }

    @Test("no plaintext password reaches the database file or its WAL")
    func noPlaintext() async throws {
        let fixture = StoreFixture()
        defer { fixture.remove() }
        let password = "Plaintext-Canary-8c1f2e"
        let store = try fixture.open()
        try await store.createAccount(try derive("alice", password), now: 1)
        #expect(try await store.updateCredentials(try derive("alice", password + "-2")))

        func contains(_ needle: String) throws -> Bool {
            let bytes = Array(needle.utf8)
            var found = false
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let path = fixture.path + suffix
                guard FileManager.default.fileExists(atPath: path) else { continue }
                let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
                if data.count >= bytes.count,
                   (0...(data.count - bytes.count)).contains(where: { data[$0..<$0 + bytes.count].elementsEqual(bytes) }) {
                    found = true
                }
            }
            return found
        }
        // The search works: the user name is stored in clear.
        #expect(try contains("alice"))
        #expect(try contains(password) == false)
        #expect(try contains(password + "-2") == false)
        try store.close()
        #expect(try contains(password) == false)
    }
}
