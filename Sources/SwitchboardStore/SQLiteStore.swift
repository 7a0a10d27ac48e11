import Foundation
import GRDB
import Logging
import SwitchboardCore
import Synchronization

/// History, rooms and accounts in one SQLite file, through one GRDB `DatabasePool` (WAL mode).
///
/// The server and the CLI may open the same file at once (two processes): writes wait
/// up to ``busyTimeoutMillis`` for the other's write lock instead of failing.
///
/// ``append(_:)`` is synchronous and meant for the bus's writer thread only; every other
/// access is `async` and runs on GRDB's own queues, never on the caller's thread.
public final class SQLiteStore: HistoryStore, RoomStore, AccountStore, Sendable {
    /// How hard SQLite works to make a commit survive a power loss (`PRAGMA synchronous`).
    public enum Synchronous: String, Sendable {
        /// WAL's usual choice: a commit survives a crash of the process; the last
        /// commits may be lost on a power failure, but the file is never corrupted.
        case normal
        /// Every commit is synced to disk before it returns.
        case full
    }

    /// How long a connection waits for another one's lock before failing.
    public static let busyTimeoutMillis = 5_000

    /// Rows deleted per write transaction by ``applyRetention(now:maxAgeMillis:maxPerRoom:)``.
    public static let retentionChunk = 5_000

    /// The path of the database file.
    public let path: String

    let pool: DatabasePool
    let logger: Logger
    /// Rooms known to have a row, so `append` inserts a room only the first time.
    let knownRooms = Mutex<Set<String>>([])

    /// Opens (creating it and its parent directory when missing) the database at `path`
    /// and brings its schema up to date.
    ///
    /// - Parameters:
    ///   - path: The SQLite file, e.g. `data/switchboard.sqlite`.
    ///   - synchronous: The durability of each commit.
    ///   - logger: Where to log schema migrations and retention.
    public init(path: String, synchronous: Synchronous = .normal,
                logger: Logger = Logger(label: "switchboard.store")) throws {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent()
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)

        let pragma = "PRAGMA synchronous = \(synchronous.rawValue.uppercased())"
        var configuration = Configuration()
        configuration.label = "switchboard.store"
        // GRDB runs `PRAGMA foreign_keys = ON` (for ON DELETE CASCADE) and
        // `sqlite3_busy_timeout` (same as `PRAGMA busy_timeout`) on every connection.
        configuration.foreignKeysEnabled = true
        // SQLite's own busy timeout sleeps in steps of up to 100 ms, which a writer
        // briefly contending with another process (the CLI) would pay in full:
        // retry every 50 µs instead, for up to busyTimeoutMillis.
        configuration.busyMode = .callback(Self.retryBriefly)
        configuration.prepareDatabase { db in
            if !db.configuration.readonly {
                try db.execute(sql: pragma)
            }
        }
        let pool = try Self.openPool(path: path, configuration: configuration, synchronous: pragma)

        let migrator = Migrations.migrator
        let pending = try pool.read { db in try migrator.hasCompletedMigrations(db) == false }
        if pending {
            logger.info("migrating database schema", metadata: ["path": "\(path)"])
        }
        // Stores opening a new file at once all see the same migrations pending, and
        // the ones that lose a race fail on the tables the winner created. Each such
        // failure means one more migration was applied by someone else, so retrying at
        // most once per migration always gets through; a genuine failure is thrown.
        var failures = 0
        while true {
            do {
                try migrator.migrate(pool)
                break
            } catch {
                failures += 1
                guard failures <= migrator.migrations.count else { throw error }
                logger.debug("migration raced another opener; retrying", metadata: ["error": "\(error)"])
            }
        }

        self.path = path
        self.pool = pool
        self.logger = logger
    }

    /// Opens the pool, retrying for up to ``busyTimeoutMillis`` while another process holds
    /// the lock that switching a new file to WAL needs (SQLite does not apply the busy
    /// timeout to `PRAGMA journal_mode`).
    private static func openPool(path: String, configuration: Configuration, synchronous: String) throws -> DatabasePool {
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(busyTimeoutMillis) * 1_000_000
        var delayMicros: UInt32 = 2_000
        while true {
            do {
                let pool = try DatabasePool(path: path, configuration: configuration)
                // DatabasePool switches the file to WAL after `prepareDatabase` ran, and sets
                // `synchronous = NORMAL` as it does: apply the chosen level again on the writer.
                try pool.writeWithoutTransaction { db in
                    try db.execute(sql: synchronous)
                }
                return pool
            } catch let error as DatabaseError
                where (error.resultCode == .SQLITE_BUSY || error.resultCode == .SQLITE_LOCKED)
                && DispatchTime.now().uptimeNanoseconds < deadline {
                usleep(delayMicros)
                delayMicros = min(delayMicros * 2, 100_000)
            }
        }
    }

    /// A busy handler: sleep 50 µs and retry, giving up after ``busyTimeoutMillis``.
    @Sendable static func retryBriefly(_ tries: Int) -> Bool {
        guard tries < busyTimeoutMillis * 20 else { return false }
        usleep(50)
        return true
    }

    /// Sets the writer's `wal_autocheckpoint` (see ``WALSyncer``): after a commit that
    /// leaves at least `frames` pages in the log, the writer checkpoints it itself.
    func setWriterAutocheckpoint(frames: Int) throws {
        try pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA wal_autocheckpoint = \(frames)")
        }
    }

    /// Closes every connection; any later call fails. Optional: the connections also
    /// close when the store is released.
    public func close() throws {
        try pool.close()
    }
}

// MARK: - Rooms

extension SQLiteStore {
    /// Creates `room`; throws ``SwitchboardError`` `room_exists` when it is already there.
    public func createRoom(_ room: RoomName, now: Int64) async throws {
        let name = room.rawValue
        try await pool.write { db in
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM rooms WHERE name = ?", arguments: [name]) == true {
                throw SwitchboardError("room_exists", "room \(name) already exists")
            }
            try db.execute(sql: "INSERT INTO rooms(name, created_at) VALUES (?, ?)", arguments: [name, now])
        }
    }

    /// Deletes `room` and, by cascade, its whole history; false when there was no such room.
    public func deleteRoom(_ room: RoomName) async throws -> Bool {
        let name = room.rawValue
        let deleted = try await pool.write { db in
            try db.execute(sql: "DELETE FROM rooms WHERE name = ?", arguments: [name])
            return db.changesCount > 0
        }
        knownRooms.withLock { _ = $0.remove(name) }
        return deleted
    }

    /// One room of any scope, or nil.
    public func roomInfo(_ room: RoomName) async throws -> RoomInfo? {
        let name = room.rawValue
        return try await pool.read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT r.name, \(Self.lastSeqSQL), r.created_at FROM rooms r WHERE r.name = ?",
                                             arguments: [name])
            else { return nil }
            let lastSeq = try RowDecoder.unsigned(row, 1, column: "rooms.last_seq", room: room)
            return RoomInfo(name: room, lastSeq: lastSeq, createdAt: try row.decode(Int64.self, atIndex: 2))
        }
    }

    /// Every group room (neither `dm.*` nor `calls.*`), sorted by name.
    public func listRooms() async throws -> [RoomInfo] {
        try await pool.read { db in
            let rows = try Row.fetchCursor(db, sql: """
                SELECT r.name, \(Self.lastSeqSQL), r.created_at FROM rooms r
                WHERE name NOT GLOB 'dm.*' AND name NOT GLOB 'calls.*'
                ORDER BY name
                """)
            var rooms: [RoomInfo] = []
            while let row = try rows.next() {
                let name = try RowDecoder.room(row, 0, table: "rooms")
                let lastSeq = try RowDecoder.unsigned(row, 1, column: "rooms.last_seq", room: name)
                rooms.append(RoomInfo(name: name, lastSeq: lastSeq, createdAt: try row.decode(Int64.self, atIndex: 2)))
            }
            return rooms
        }
    }
}
