/// Durable history, as the bus needs it. The GRDB implementation lives in
/// `SwitchboardStore`; the bus sees only this protocol, so a server database
/// can be added later as another implementation.
public protocol HistoryStore: Sendable {
    /// The last committed `seq` of every room (kept even when retention removed the rows).
    func loadSequences() throws -> [RoomName: UInt64]

    /// Envelopes with a `client_id` committed at or after `ts` (ms), to rebuild the dedup window.
    func recentClientIDs(since ts: Int64) throws -> [Envelope]

    /// Commits `envelopes` in one transaction (group commit) and advances each room's last seq.
    /// Called only from the bus's writer thread; blocking here never blocks an event loop.
    func append(_ envelopes: [Envelope]) throws

    /// True when the room exists (explicitly created or used before).
    func roomExists(_ room: RoomName) throws -> Bool

    /// Envelopes of `room` with `after < seq < before`, at most `limit`, oldest first.
    /// With only `before` (or neither) the newest `limit` are returned; with `after` the oldest.
    func messages(in room: RoomName, before: UInt64?, after: UInt64?, limit: Int) async throws -> [Envelope]

    /// Deletes envelopes older than `maxAgeMillis` (when set) and beyond the newest `maxPerRoom`
    /// per room (when set). Returns how many rows went.
    func applyRetention(now: Int64, maxAgeMillis: Int64?, maxPerRoom: Int?) async throws -> Int
}

/// Rooms as an administrator manages them.
public protocol RoomStore: Sendable {
    /// Creates `room`; throws when it exists.
    func createRoom(_ room: RoomName, now: Int64) async throws
    /// Deletes `room` and its history; returns false when there was none.
    func deleteRoom(_ room: RoomName) async throws -> Bool
    /// Every group room (not `dm.*` nor `calls.*`), by name.
    func listRooms() async throws -> [RoomInfo]
    /// One room (of any scope), or nil when it does not exist.
    func roomInfo(_ room: RoomName) async throws -> RoomInfo?
}

extension RoomStore {
    /// Looks the room up in ``listRooms()``; stores override it with a direct query.
    public func roomInfo(_ room: RoomName) async throws -> RoomInfo? {
        try await listRooms().first { $0.name == room }
    }
}

/// A room as listed by `ROOMS`, `room list` and REST.
public struct RoomInfo: Hashable, Sendable, Codable {
    public var name: RoomName
    public var lastSeq: UInt64
    public var createdAt: Int64

    public init(name: RoomName, lastSeq: UInt64, createdAt: Int64) {
        self.name = name
        self.lastSeq = lastSeq
        self.createdAt = createdAt
    }
}

/// Accounts and their derived credentials (never the plaintext password).
public protocol AccountStore: Sendable {
    /// The stored credentials of `user`, or nil.
    func credentials(for user: UserName) async throws -> StoredCredentials?
    /// Adds an account; throws ``SwitchboardError`` `user_exists` when present.
    func createAccount(_ credentials: StoredCredentials, now: Int64) async throws
    /// Replaces the credentials of an existing account; false when there is none.
    func updateCredentials(_ credentials: StoredCredentials) async throws -> Bool
    /// Removes an account; false when there was none.
    func deleteAccount(_ user: UserName) async throws -> Bool
    /// Every account name with its creation time.
    func listAccounts() async throws -> [(user: UserName, createdAt: Int64)]
}

/// A SIP registration binding (RFC 3261 §10): one contact of a user, until `expiresAt`.
public struct SIPBindingRecord: Hashable, Sendable {
    public var user: UserName
    /// The Contact URI as registered.
    public var contact: String
    /// Where the REGISTER came from (`udp:127.0.0.1:5070`): requests for the contact go there.
    public var source: String
    public var callID: String
    public var cseq: UInt32
    /// Milliseconds since 1970.
    public var expiresAt: Int64

    public init(user: UserName, contact: String, source: String, callID: String, cseq: UInt32, expiresAt: Int64) {
        self.user = user
        self.contact = contact
        self.source = source
        self.callID = callID
        self.cseq = cseq
        self.expiresAt = expiresAt
    }
}

/// A SIP user's membership of a room (or direct conversation) and how far it was delivered.
public struct SIPMembershipRecord: Hashable, Sendable {
    public var user: UserName
    public var room: RoomName
    /// Every envelope up to this seq reached one of the user's contacts (or was the user's own).
    public var deliveredSeq: UInt64

    public init(user: UserName, room: RoomName, deliveredSeq: UInt64) {
        self.user = user
        self.room = room
        self.deliveredSeq = deliveredSeq
    }
}

/// What the SIP listener keeps across restarts: bindings and room memberships.
public protocol SIPStateStore: Sendable {
    func sipBindings() async throws -> [SIPBindingRecord]
    /// For each user named, replaces every binding with the ones given (none: all removed), in one transaction.
    func replaceSIPBindings(_ byUser: [UserName: [SIPBindingRecord]]) async throws
    func sipMemberships() async throws -> [SIPMembershipRecord]
    /// Inserts or updates memberships (the delivered seq never goes back).
    func saveSIPMemberships(_ memberships: [SIPMembershipRecord]) async throws
    func deleteSIPMembership(user: UserName, room: RoomName) async throws
}
