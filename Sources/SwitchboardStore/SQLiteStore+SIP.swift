import GRDB
import SwitchboardCore

extension SQLiteStore: SIPStateStore {
    public func sipBindings() async throws -> [SIPBindingRecord] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT user, contact, source, call_id, cseq, expires_at FROM sip_bindings")
                .compactMap { row in
                    guard let user = UserName(row["user"] as String) else { return nil }
                    return SIPBindingRecord(
                        user: user, contact: row["contact"], source: row["source"], callID: row["call_id"],
                        cseq: UInt32(clamping: row["cseq"] as Int64), expiresAt: row["expires_at"])
                }
        }
    }

    public func replaceSIPBindings(_ byUser: [UserName: [SIPBindingRecord]]) async throws {
        guard !byUser.isEmpty else { return }
        // Cached statements: registration refreshes arrive in thousands per second at peak,
        // and compiling the statements cost more than running them.
        try await pool.write { db in
            let delete = try db.cachedStatement(sql: "DELETE FROM sip_bindings WHERE user = ?")
            let insert = try db.cachedStatement(sql: """
                INSERT INTO sip_bindings(user, contact, source, call_id, cseq, expires_at) VALUES (?, ?, ?, ?, ?, ?)
                """)
            for (user, bindings) in byUser {
                try delete.execute(arguments: [user.rawValue])
                for b in bindings {
                    try insert.execute(arguments: [user.rawValue, b.contact, b.source, b.callID, Int64(b.cseq), b.expiresAt])
                }
            }
        }
    }

    public func sipMemberships() async throws -> [SIPMembershipRecord] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT user, room, delivered_seq FROM sip_memberships").compactMap { row in
                guard let user = UserName(row["user"] as String), let room = RoomName(row["room"] as String) else { return nil }
                return SIPMembershipRecord(user: user, room: room, deliveredSeq: UInt64(row["delivered_seq"] as Int64))
            }
        }
    }

    public func saveSIPMemberships(_ memberships: [SIPMembershipRecord]) async throws {
        guard !memberships.isEmpty else { return }
        try await pool.write { db in
            let upsert = try db.cachedStatement(sql: """
                INSERT INTO sip_memberships(user, room, delivered_seq) VALUES (?, ?, ?)
                ON CONFLICT(user, room) DO UPDATE SET delivered_seq = max(delivered_seq, excluded.delivered_seq)
                """)
            for m in memberships {
                try upsert.execute(arguments: [m.user.rawValue, m.room.rawValue, Int64(m.deliveredSeq)])
            }
        }
    }

    public func deleteSIPMembership(user: UserName, room: RoomName) async throws {
        try await pool.write { db in
            try db.execute(sql: "DELETE FROM sip_memberships WHERE user = ? AND room = ?",
                           arguments: [user.rawValue, room.rawValue])
        }
    }
}
