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
public struct Envelope: Hashable, Sendable, Codable {
    /// Server-assigned ULID: unique and time-ordered.
    public var id: String
    /// The room (or `dm.<a>.<b>`, `calls.<user>`).
    public var room: RoomName
    /// Per-room sequence number, strictly increasing without gaps; `0` for ephemeral kinds.
    public var seq: UInt64
    /// Server time in milliseconds since the epoch.
    public var ts: Int64
    /// The sender.
    public var from: Sender
    /// What this envelope carries.
    public var kind: EnvelopeKind
    /// The UTF-8 body.
    public var body: String
    /// String-to-string extensions (`reply_to`, `call_id`, …).
    public var attrs: [String: String]
    /// The sender's idempotency key, echoed in the ack.
    public var clientID: String?

    public init(
        id: String, room: RoomName, seq: UInt64, ts: Int64, from: Sender,
        kind: EnvelopeKind, body: String, attrs: [String: String] = [:], clientID: String? = nil
    ) {
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

    enum CodingKeys: String, CodingKey {
        case id, room, seq, ts, from, kind, body, attrs
        case clientID = "client_id"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.id = try c.decode(String.self, forKey: .id)
        self.room = try c.decode(RoomName.self, forKey: .room)
        self.seq = try c.decode(UInt64.self, forKey: .seq)
        self.ts = try c.decode(Int64.self, forKey: .ts)
        self.from = try c.decode(Sender.self, forKey: .from)
        self.kind = try c.decode(EnvelopeKind.self, forKey: .kind)
        self.body = try c.decodeIfPresent(String.self, forKey: .body) ?? ""
        self.attrs = try c.decodeIfPresent([String: String].self, forKey: .attrs) ?? [:]
        self.clientID = try c.decodeIfPresent(String.self, forKey: .clientID)
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
