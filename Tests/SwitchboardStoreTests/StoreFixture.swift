import Foundation
import Logging
import SwitchboardCore
@testable import SwitchboardStore

/// A fresh directory and database per test, removed afterwards.
struct StoreFixture {
    let directory: URL
    var path: String { directory.appendingPathComponent("db/switchboard.sqlite").path }

    init() {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("switchboard-store-tests-\(UUID().uuidString)")
    }

    /// Opens a store on this fixture's file (a second call opens a second pool on the same file).
    func open(synchronous: SQLiteStore.Synchronous = .normal) throws -> SQLiteStore {
        var logger = Logger(label: "switchboard.store.tests")
        logger.logLevel = .warning
        return try SQLiteStore(path: path, synchronous: synchronous, logger: logger)
    }

    func remove() {
        try? FileManager.default.removeItem(at: directory)
    }
}

/// Runs `body` with a store on a fresh file, then deletes the directory.
func withStore<T>(_ body: (SQLiteStore, StoreFixture) async throws -> T) async throws -> T {
    let fixture = StoreFixture()
    defer { fixture.remove() }
    let store = try fixture.open()
    return try await body(store, fixture)
}

func room(_ name: String) -> RoomName {
    guard let room = RoomName(name) else { preconditionFailure("bad room name in test: \(name)") }
    return room
}

func user(_ name: String) -> UserName {
    guard let user = UserName(name) else { preconditionFailure("bad user name in test: \(name)") }
    return user
}

/// An envelope with a unique id per (room, seq).
func envelope(
    _ roomName: String, _ seq: UInt64, ts: Int64 = 1_700_000_000_000, user userName: String = "alice",
    display: String? = nil, via: Via = .line, kind: EnvelopeKind = .chat, body: String? = nil,
    attrs: [String: String] = [:], clientID: String? = nil
) -> Envelope {
    Envelope(
        id: "id-\(roomName)-\(seq)", room: room(roomName), seq: seq, ts: ts,
        from: Sender(user: user(userName), display: display, via: via),
        kind: kind, body: body ?? "message \(seq) in \(roomName)", attrs: attrs, clientID: clientID)
}

/// The seqs of `envelopes`, in order.
func seqs(_ envelopes: [Envelope]) -> [UInt64] { envelopes.map(\.seq) }
