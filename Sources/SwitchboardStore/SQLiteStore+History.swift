import GRDB
import SwitchboardCore

extension SQLiteStore {
    /// The columns of `envelopes` in the order ``RowDecoder/envelope(_:)`` reads them.
    static let envelopeColumns = "room, seq, id, ts, user, display, via, kind, body, attrs, client_id"

    /// The hot path's insert, prepared once per connection and kept in GRDB's statement cache.
    static let insertEnvelopeSQL = """
        INSERT INTO envelopes(\(envelopeColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """

    /// A room's last seq: its newest row, or `rooms.last_seq` when retention removed the
    /// rows (retention records it there before deleting). `append` does not touch
    /// `rooms`, which keeps a commit to many rooms at one statement per envelope.
    /// Use with `FROM rooms r`.
    static let lastSeqSQL = "MAX(r.last_seq, IFNULL((SELECT MAX(e.seq) FROM envelopes e WHERE e.room = r.name), 0))"

    /// The last committed seq of every room (see ``lastSeqSQL``): a room whose rows
    /// retention removed keeps its place in the sequence. Rooms created but never written
    /// to are listed with `0`.
    public func loadSequences() throws -> [RoomName: UInt64] {
        try pool.read { db in
            let rows = try Row.fetchCursor(db, sql: "SELECT r.name, \(Self.lastSeqSQL) FROM rooms r")
            var sequences: [RoomName: UInt64] = [:]
            while let row = try rows.next() {
                let name = try RowDecoder.room(row, 0, table: "rooms")
                sequences[name] = try RowDecoder.unsigned(row, 1, column: "rooms.last_seq", room: name)
            }
            return sequences
        }
    }

    /// Every stored envelope with a `client_id` and `ts >= since`, oldest first: what the
    /// bus needs to rebuild its dedup window after a restart.
    public func recentClientIDs(since ts: Int64) throws -> [Envelope] {
        try pool.read { db in
            try RowDecoder.envelopes(db, sql: """
                SELECT \(Self.envelopeColumns) FROM envelopes
                WHERE ts >= ? AND client_id IS NOT NULL
                ORDER BY ts, id
                """, arguments: [ts])
        }
    }

    /// Commits `envelopes` in one write transaction (group commit).
    ///
    /// Rooms this store has not seen yet are created (their `created_at` is the first
    /// envelope's `ts`) and the rows go through one cached prepared statement. Either all
    /// of it is committed or, on any error, none of it (and the room cache is forgotten,
    /// so a retry recreates rooms another process deleted meanwhile).
    ///
    /// Synchronous on purpose: only the bus's writer thread calls it, never an event loop.
    public func append(_ envelopes: [Envelope]) throws {
        guard !envelopes.isEmpty else { return }

        // Rooms not known to exist yet, with the ts of their first envelope in the batch.
        var newRooms: [String: Int64] = [:]
        knownRooms.withLock { known in
            for envelope in envelopes where !known.contains(envelope.room.rawValue) && newRooms[envelope.room.rawValue] == nil {
                newRooms[envelope.room.rawValue] = envelope.ts
            }
        }
        for envelope in envelopes where envelope.seq == 0 || envelope.seq > UInt64(Int64.max) {
            throw SwitchboardError(
                .storageUnavailable, "cannot store envelope \(envelope.id) in \(envelope.room) with seq \(envelope.seq)")
        }

        do {
            try commit(envelopes, newRooms: newRooms)
        } catch {
            knownRooms.withLock { $0.removeAll() }
            throw error
        }
        if !newRooms.isEmpty {
            knownRooms.withLock { known in
                // Bounded: a store that saw very many rooms starts over.
                if known.count > 100_000 { known.removeAll() }
                known.formUnion(newRooms.keys)
            }
        }
    }

    /// One write transaction for a batch.
    ///
    /// Every statement of it is prepared once per connection and reused (GRDB's
    /// `inTransaction` compiles `BEGIN` and `COMMIT` anew each time, and compiling the
    /// insert with its CHECK constraints costs more than running it): at a few
    /// envelopes per commit, compiling was most of the writer's CPU.
    private func commit(_ envelopes: [Envelope], newRooms: [String: Int64]) throws {
        try pool.writeWithoutTransaction { db in
            try db.cachedStatement(sql: "BEGIN IMMEDIATE TRANSACTION").execute()
            do {
                let insertRoom = try db.cachedStatement(sql: "INSERT OR IGNORE INTO rooms(name, created_at) VALUES (?, ?)")
                for (name, createdAt) in newRooms {
                    try insertRoom.execute(arguments: [name, createdAt])
                }

                let insert = try EnvelopeInsert(db, sql: Self.insertEnvelopeSQL)
                for envelope in envelopes {
                    try insert.insert(envelope, attrs: Self.encodeAttrs(envelope.attrs))
                }
                try db.cachedStatement(sql: "COMMIT TRANSACTION").execute()
            } catch {
                try? db.rollback()
                throw error
            }
        }
    }

    /// True when `room` exists: created explicitly or written to before.
    public func roomExists(_ room: RoomName) throws -> Bool {
        let name = room.rawValue
        return try pool.read { db in
            try Bool.fetchOne(db, sql: "SELECT 1 FROM rooms WHERE name = ?", arguments: [name]) == true
        }
    }

    /// Envelopes of `room` with `after < seq < before` (each bound optional), oldest first.
    ///
    /// With `after`, the oldest `limit` rows after it (paging forward, resuming after a
    /// reconnect); otherwise the newest `limit` rows below `before` (paging back).
    /// A `limit` below 1 returns nothing.
    public func messages(in room: RoomName, before: UInt64?, after: UInt64?, limit: Int) async throws -> [Envelope] {
        guard limit > 0 else { return [] }

        var conditions = ["room = ?"]
        var arguments: StatementArguments = [room.rawValue]
        if let after {
            // Past Int64.max nothing can follow: every stored seq is an Int64.
            guard let after = Int64(exactly: after) else { return [] }
            conditions.append("seq > ?")
            arguments += [after]
        }
        if let before {
            conditions.append("seq < ?")
            arguments += [Int64(clamping: before)]
        }
        arguments += [limit]
        let newestFirst = after == nil
        let sql = """
            SELECT \(Self.envelopeColumns) FROM envelopes
            WHERE \(conditions.joined(separator: " AND "))
            ORDER BY seq \(newestFirst ? "DESC" : "ASC") LIMIT ?
            """
        let frozen = arguments
        let rows = try await pool.read { db in
            try RowDecoder.envelopes(db, sql: sql, arguments: frozen)
        }
        return newestFirst ? rows.reversed() : rows
    }

    /// Deletes envelopes with `ts < now - maxAgeMillis` (when set) and, in every room, all
    /// but the newest `maxPerRoom` (when set). Returns how many rows went.
    ///
    /// Works in write transactions of at most ``retentionChunk`` rows so a large backlog
    /// never holds the write lock for long: the bus's commits slip in between chunks.
    /// `rooms.last_seq` is never touched. Negative limits are refused.
    public func applyRetention(now: Int64, maxAgeMillis: Int64?, maxPerRoom: Int?) async throws -> Int {
        if let maxAgeMillis, maxAgeMillis < 0 {
            throw SwitchboardError(.badArguments, "history.max_age must not be negative")
        }
        if let maxPerRoom, maxPerRoom < 0 {
            throw SwitchboardError(.badArguments, "history.max_per_room must not be negative")
        }
        var deleted = 0
        if let maxAgeMillis {
            let (difference, overflow) = now.subtractingReportingOverflow(maxAgeMillis)
            let cutoff = overflow ? Int64.min : difference
            deleted += try await deleteOlder(than: cutoff)
        }
        if let maxPerRoom {
            deleted += try await keepNewest(maxPerRoom)
        }
        if deleted > 0 {
            logger.debug("retention deleted history", metadata: ["rows": "\(deleted)"])
        }
        return deleted
    }

    /// Deletes rows with `ts < cutoff`, room by room, a chunk per transaction.
    ///
    /// A room's rows are in time order by seq (the bus stamps them as it sequences), so
    /// the rows to delete are those before the first one with `ts >= cutoff`; finding it
    /// reads only the expiring rows, without an index on `ts`.
    private func deleteOlder(than cutoff: Int64) async throws -> Int {
        let trims: [Trim] = try await pool.read { db in
            let names = try String.fetchAll(db, sql: "SELECT r.name FROM rooms r WHERE \(Self.lastSeqSQL) > 0 ORDER BY r.name")
            let oldest = try db.cachedStatement(sql: "SELECT seq, ts FROM envelopes WHERE room = ? ORDER BY seq LIMIT 1")
            let firstKept = try db.cachedStatement(sql: "SELECT seq FROM envelopes WHERE room = ? AND ts >= ? ORDER BY seq LIMIT 1")
            var trims: [Trim] = []
            for name in names {
                guard let row = try Row.fetchOne(oldest, arguments: [name]) else { continue }
                let oldestTs: Int64 = row[1]
                guard oldestTs < cutoff else { continue }
                if let kept = try Int64.fetchOne(firstKept, arguments: [name, cutoff]) {
                    trims.append(Trim(room: name, through: kept - 1))
                } else {
                    trims.append(Trim(room: name, through: Int64.max))
                }
            }
            return trims
        }
        return try await delete(trims)
    }

    /// A room with rows to trim: every seq up to `through` goes.
    private struct Trim: Sendable {
        var room: String
        var through: Int64
    }

    /// Deletes all but the newest `keep` rows of every room, up to a chunk per transaction
    /// (several small rooms share one transaction).
    private func keepNewest(_ keep: Int) async throws -> Int {
        // Seqs run 1...last_seq without gaps, so a room holds at most last_seq rows:
        // only rooms with last_seq > keep can have rows to trim.
        let pending: [Trim] = try await pool.read { db in
            let names = try String.fetchAll(db, sql: "SELECT r.name FROM rooms r WHERE \(Self.lastSeqSQL) > ? ORDER BY r.name", arguments: [keep])
            let newestKept = try db.cachedStatement(sql: "SELECT seq FROM envelopes WHERE room = ? ORDER BY seq DESC LIMIT 1 OFFSET ?")
            var trims: [Trim] = []
            for name in names {
                if let through = try Int64.fetchOne(newestKept, arguments: [name, keep]) {
                    trims.append(Trim(room: name, through: through))
                }
            }
            return trims
        }
        return try await delete(pending)
    }

    /// Deletes every row up to each trim's seq, a chunk per write transaction (several
    /// small rooms share one), so a large backlog never holds the writer for long.
    private func delete(_ trims: [Trim]) async throws -> Int {
        var pending = trims
        let chunk = Self.retentionChunk
        var deleted = 0
        while !pending.isEmpty {
            let work = pending
            let (count, rest) = try await pool.write { db -> (Int, [Trim]) in
                let statement = try db.cachedStatement(sql: """
                    DELETE FROM envelopes WHERE room = ? AND seq IN
                        (SELECT seq FROM envelopes WHERE room = ? AND seq <= ? ORDER BY seq LIMIT ?)
                    """)
                // Record each room's last seq before its newest rows can go, so the
                // sequence survives an emptied room (see lastSeqSQL).
                let remember = try db.cachedStatement(sql: """
                    UPDATE rooms AS r SET last_seq = \(Self.lastSeqSQL) WHERE r.name = ?
                    """)
                var budget = chunk
                var rest = work[...]
                while budget > 0, let trim = rest.first {
                    try remember.execute(arguments: [trim.room])
                    try statement.execute(arguments: [trim.room, trim.room, trim.through, budget])
                    let removed = db.changesCount
                    // Fewer rows than asked for: this room is done.
                    if removed < budget { rest.removeFirst() }
                    budget -= removed
                }
                return (chunk - budget, Array(rest))
            }
            deleted += count
            pending = rest
        }
        return deleted
    }

    /// `attrs` as stored: NULL when empty, else a compact JSON object with sorted keys.
    static func encodeAttrs(_ attrs: [String: String]) -> String? {
        guard !attrs.isEmpty else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(64)
        JSONWriter.object(attrs, into: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }
}
