import SwitchboardCore
import Testing
@testable import SwitchboardStore

@Suite("SIP bindings and memberships")
struct SIPStateTests {
    func account(_ name: String) throws -> StoredCredentials {
        try StoredCredentials.derive(user: UserName(name)!, password: "pw", realm: "localhost", iterations: 4096)
    }

    func binding(_ user: String, _ contact: String, expires: Int64) -> SIPBindingRecord {
        SIPBindingRecord(user: UserName(user)!, contact: contact, source: "udp:127.0.0.1:5070", callID: "c1", cseq: 3,
                         expiresAt: expires)
    }

    @Test("replacing a user's bindings leaves other users' alone, and they survive reopening")
    func bindings() async throws {
        let fixture = StoreFixture()
        defer { fixture.remove() }
        do {
            let store = try fixture.open()
            try await store.createAccount(try account("alice"), now: 1)
            try await store.createAccount(try account("bob"), now: 1)
            try await store.replaceSIPBindings([
                UserName("alice")!: [binding("alice", "sip:alice@127.0.0.1:5070", expires: 10),
                                     binding("alice", "sip:alice@127.0.0.1:5071", expires: 20)],
                UserName("bob")!: [binding("bob", "sip:bob@127.0.0.1:5072", expires: 30)],
            ])
            try await store.replaceSIPBindings([UserName("alice")!: [binding("alice", "sip:alice@127.0.0.1:5071", expires: 40)]])
            try store.close()
        }
        let again = try fixture.open()
        let stored = try await again.sipBindings().sorted { $0.contact < $1.contact }
        #expect(stored.map(\.contact) == ["sip:alice@127.0.0.1:5071", "sip:bob@127.0.0.1:5072"])
        #expect(stored.map(\.expiresAt) == [40, 30])
        #expect(stored.first?.cseq == 3 && stored.first?.source == "udp:127.0.0.1:5070")
    }

    @Test("a membership's delivered seq never goes back, deleting the account removes its SIP state")
    func memberships() async throws {
        try await withStore { store, _ in
            let alice = UserName("alice")!
            try await store.createAccount(try account("alice"), now: 1)
            let lobby = RoomName("lobby")!
            try await store.saveSIPMemberships([SIPMembershipRecord(user: alice, room: lobby, deliveredSeq: 7)])
            try await store.saveSIPMemberships([SIPMembershipRecord(user: alice, room: lobby, deliveredSeq: 5)])
            #expect(try await store.sipMemberships() == [SIPMembershipRecord(user: alice, room: lobby, deliveredSeq: 7)])
            try await store.replaceSIPBindings([alice: [binding("alice", "sip:alice@127.0.0.1:5070", expires: 10)]])
            _ = try await store.deleteAccount(alice)
            #expect(try await store.sipMemberships().isEmpty)
            #expect(try await store.sipBindings().isEmpty)
        }
    }

    @Test("leaving deletes one membership")
    func leave() async throws {
        try await withStore { store, _ in
            let alice = UserName("alice")!
            try await store.createAccount(try account("alice"), now: 1)
            try await store.saveSIPMemberships([
                SIPMembershipRecord(user: alice, room: RoomName("lobby")!, deliveredSeq: 1),
                SIPMembershipRecord(user: alice, room: RoomName("dev")!, deliveredSeq: 2),
            ])
            try await store.deleteSIPMembership(user: alice, room: RoomName("lobby")!)
            #expect(try await store.sipMemberships().map(\.room.rawValue) == ["dev"])
        }
    }
}
