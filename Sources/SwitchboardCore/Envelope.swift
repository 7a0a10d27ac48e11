/// Who sent an envelope, and over which protocol.
public struct Sender: Hashable, Sendable, Codable {
    /// The account name.
    public var user: UserName
    /// An optional display name (at most ``EnvelopeLimits/maxDisplayBytes``).
    public var display: String?
    /// The protocol the envelope arrived by.
    public var via: Via

    public init(user: UserName, display: String? = nil, via: Via) {
        self.user = user
        self.display = display
        self.via = via
    }
}

/// The canonical room envelope every protocol is translated into.
///
/// The JSON form is fixed by DESIGN.md and documented in `protocols/envelope.md`;
/// ``jsonBytes()`` writes it in canonical key order.
///
/// A value type whose fields live in one shared, copy-on-write box: the bus hands
/// the same envelope to every session of a room, and a copy then costs one
/// reference count instead of one per string field.
public struct Envelope: Hashable, Sendable, Codable {
    private final class Storage: Sendable {
        let id: String
        let room: RoomName
        let seq: UInt64
        let ts: Int64
        let from: Sender
        let kind: EnvelopeKind
        let body: String
        let attrs: [String: String]
        let clientID: String?

        init(id: String, room: RoomName, seq: UInt64, ts: Int64, from: Sender, kind: EnvelopeKind,
             body: String, attrs: [String: String], clientID: String?) {
            self.id = id
            self.room = room
            self.seq = seq
            self.ts = ts
            self.from = from
            self.kind = kind
            self.body = body
            self.attrs = attrs
            self.clientID = clientID
        }
    }

    private var storage: Storage

    /// Replaces the storage with a changed copy (fields are immutable in the shared box).
    private mutating func update(_ change: (inout Fields) -> Void) {
        var fields = Fields(storage)
        change(&fields)
        storage = Storage(id: fields.id, room: fields.room, seq: fields.seq, ts: fields.ts, from: fields.from,
                          kind: fields.kind, body: fields.body, attrs: fields.attrs, clientID: fields.clientID)
    }

    private struct Fields {
        var id: String, room: RoomName, seq: UInt64, ts: Int64, from: Sender, kind: EnvelopeKind
        var body: String, attrs: [String: String], clientID: String?
        init(_ s: Storage) {
            (id, room, seq, ts, from, kind, body, attrs, clientID) = (s.id, s.room, s.seq, s.ts, s.from, s.kind, s.body, s.attrs, s.clientID)
        }
    }

    /// Identifies this envelope's shared storage: the copies the bus hands to every session
    /// of a room share it, so a listener can cache an encoding per envelope in O(1). Only
    /// meaningful while the envelope is alive (keep it alongside the key).
    public var storageIdentity: ObjectIdentifier { ObjectIdentifier(storage) }

    /// Server-assigned ULID: unique and time-ordered.
    public var id: String {
        get { storage.id }
        set { update { $0.id = newValue } }
    }
    /// The room (or `dm.<a>.<b>`, `calls.<user>`).
    public var room: RoomName {
        get { storage.room }
        set { update { $0.room = newValue } }
    }
    /// Per-room sequence number, strictly increasing without gaps; `0` for ephemeral kinds.
    public var seq: UInt64 {
        get { storage.seq }
        set { update { $0.seq = newValue } }
    }
    /// Server time in milliseconds since the epoch.
    public var ts: Int64 {
        get { storage.ts }
        set { update { $0.ts = newValue } }
    }
    /// The sender.
    public var from: Sender {
        get { storage.from }
        set { update { $0.from = newValue } }
    }
    /// What this envelope carries.
    public var kind: EnvelopeKind {
        get { storage.kind }
        set { update { $0.kind = newValue } }
    }
    /// The UTF-8 body.
    public var body: String {
        get { storage.body }
        set { update { $0.body = newValue } }
    }
    /// String-to-string extensions (`reply_to`, `call_id`, …).
    public var attrs: [String: String] {
        get { storage.attrs }
        set { update { $0.attrs = newValue } }
    }
    /// The sender's idempotency key, echoed in the ack.
    public var clientID: String? {
        get { storage.clientID }
        set { update { $0.clientID = newValue } }
    }

    public init(
        id: String, room: RoomName, seq: UInt64, ts: Int64, from: Sender,
        kind: EnvelopeKind, body: String, attrs: [String: String] = [:], clientID: String? = nil
    ) {
        storage = Storage(id: id, room: room, seq: seq, ts: ts, from: from, kind: kind, body: body, attrs: attrs, clientID: clientID)
    }

    public static func == (lhs: Envelope, rhs: Envelope) -> Bool {
        if lhs.storage === rhs.storage { return true }
        return lhs.id == rhs.id && lhs.room == rhs.room && lhs.seq == rhs.seq && lhs.ts == rhs.ts
            && lhs.from == rhs.from && lhs.kind == rhs.kind && lhs.body == rhs.body && lhs.attrs == rhs.attrs
            && lhs.clientID == rhs.clientID
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(id)
        hasher.combine(room)
        hasher.combine(seq)
    }

    enum CodingKeys: String, CodingKey {
        case id, room, seq, ts, from, kind, body, attrs
        case clientID = "client_id"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            id: try c.decode(String.self, forKey: .id),
            room: try c.decode(RoomName.self, forKey: .room),
            seq: try c.decode(UInt64.self, forKey: .seq),
            ts: try c.decode(Int64.self, forKey: .ts),
            from: try c.decode(Sender.self, forKey: .from),
            kind: try c.decode(EnvelopeKind.self, forKey: .kind),
            body: try c.decodeIfPresent(String.self, forKey: .body) ?? "",
            attrs: try c.decodeIfPresent([String: String].self, forKey: .attrs) ?? [:],
            clientID: try c.decodeIfPresent(String.self, forKey: .clientID))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(room, forKey: .room)
        try c.encode(seq, forKey: .seq)
        try c.encode(ts, forKey: .ts)
        try c.encode(from, forKey: .from)
        try c.encode(kind, forKey: .kind)
        try c.encode(body, forKey: .body)
        try c.encode(attrs, forKey: .attrs)
        try c.encodeIfPresent(clientID, forKey: .clientID)
    }
}

/// What a listener hands the bus: an envelope before the bus gives it an id, a seq and a time.
public struct EnvelopeDraft: Hashable, Sendable {
    public var room: RoomName
    public var from: Sender
    public var kind: EnvelopeKind
    public var body: String
    public var attrs: [String: String]
    public var clientID: String?

    public init(
        room: RoomName, from: Sender, kind: EnvelopeKind = .chat, body: String,
        attrs: [String: String] = [:], clientID: String? = nil
    ) {
        self.room = room
        self.from = from
        self.kind = kind
        self.body = body
        self.attrs = attrs
        self.clientID = clientID
    }

    /// Checks sizes and characters against `limits`; throws the error a client should see.
    public func validate(_ limits: EnvelopeLimits) throws(SwitchboardError) {
        guard body.utf8.count <= limits.maxBodyBytes else {
            throw SwitchboardError(.bodyTooLarge, "body is \(body.utf8.count) bytes; the limit is \(limits.maxBodyBytes)")
        }
        guard EnvelopeDraft.isAcceptableText(body) else {
            throw SwitchboardError(.invalidBody, "body contains control characters")
        }
        if let display = from.display {
            guard display.utf8.count <= EnvelopeLimits.maxDisplayBytes, EnvelopeDraft.isAcceptableText(display),
                  !display.contains("\n")
            else { throw SwitchboardError(.invalidBody, "display name is too long or contains control characters") }
        }
        guard attrs.count <= EnvelopeLimits.maxAttrs else {
            throw SwitchboardError(.invalidAttrs, "at most \(EnvelopeLimits.maxAttrs) attrs")
        }
        for (key, value) in attrs {
            guard (1...EnvelopeLimits.maxAttrKeyBytes).contains(key.utf8.count),
                  key.utf8.allSatisfy({ RoomName.isAllowed($0) })
            else { throw SwitchboardError(.invalidAttrs, "attr keys are 1–\(EnvelopeLimits.maxAttrKeyBytes) chars of a-z 0-9 . _ -") }
            guard value.utf8.count <= EnvelopeLimits.maxAttrValueBytes, EnvelopeDraft.isAcceptableText(value) else {
                throw SwitchboardError(.invalidAttrs, "attr '\(key)' is longer than \(EnvelopeLimits.maxAttrValueBytes) bytes or has control characters")
            }
        }
        if let clientID {
            guard (1...EnvelopeLimits.maxClientIDBytes).contains(clientID.utf8.count),
                  clientID.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
            else { throw SwitchboardError(.invalidClientID, "client_id is 1–\(EnvelopeLimits.maxClientIDBytes) printable ASCII characters") }
        }
    }

    /// Text may hold any Unicode except C0 controls other than tab, LF and CR, and DEL.
    static func isAcceptableText(_ text: String) -> Bool {
        text.utf8.allSatisfy { $0 >= 0x20 ? $0 != 0x7F : ($0 == 0x09 || $0 == 0x0A || $0 == 0x0D) }
    }
}

/// Size limits applied to every envelope, whatever protocol it came from.
public struct EnvelopeLimits: Hashable, Sendable {
    /// Largest body in UTF-8 bytes (`limits.max_body_bytes`, default 16 KiB).
    public var maxBodyBytes: Int
    /// Most attrs on one envelope.
    public static let maxAttrs = 32
    /// Longest attr key.
    public static let maxAttrKeyBytes = 64
    /// Longest attr value.
    public static let maxAttrValueBytes = 1024
    /// Longest client_id.
    public static let maxClientIDBytes = 128
    /// Longest display name.
    public static let maxDisplayBytes = 64

    public init(maxBodyBytes: Int = 16 * 1024) {
        self.maxBodyBytes = maxBodyBytes
    }
}

/// The answer to a committed publish.
public struct Ack: Hashable, Sendable {
    public var room: RoomName
    public var id: String
    public var seq: UInt64
    public var ts: Int64
    public var clientID: String?
    /// True when this ack answers a repeated `client_id` and nothing new was published.
    public var duplicate: Bool

    public init(room: RoomName, id: String, seq: UInt64, ts: Int64, clientID: String?, duplicate: Bool = false) {
        self.room = room
        self.id = id
        self.seq = seq
        self.ts = ts
        self.clientID = clientID
        self.duplicate = duplicate
    }
}
