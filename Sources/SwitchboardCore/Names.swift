/// A validated room name: 1–64 characters of `a-z 0-9 . _ -`, lower-cased on input.
///
/// Two prefixes are reserved: `dm.<a>.<b>` holds the direct messages between
/// two users and `calls.<user>` is a user's call log.
public struct RoomName: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    /// Longest accepted room name, in characters.
    public static let maxLength = 64

    /// The lower-cased, validated name.
    public let rawValue: String

    /// Validates and lower-cases `string`; `nil` when it is not a legal room name.
    /// (Inlinable, like ``UserName/init(_:)``: every listener calls these for every request,
    /// and the generic version, called across modules, looked up type metadata each time.)
    @inlinable
    public init?(_ string: some StringProtocol) {
        guard let lowered = foldingASCIIName(string, maxLength: Self.maxLength, allowing: RoomName.isAllowed) else {
            return nil
        }
        self.rawValue = lowered
    }

    private init(unchecked: String) { self.rawValue = unchecked }

    @usableFromInline
    static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }

    /// The direct-message room of two users: `dm.<a>.<b>` with the names sorted.
    public static func direct(_ a: UserName, _ b: UserName) -> RoomName {
        let (first, second) = a <= b ? (a, b) : (b, a)
        return RoomName(unchecked: "dm.\(first.rawValue).\(second.rawValue)")
    }

    /// The call-log room of `user`: `calls.<user>`.
    public static func callLog(of user: UserName) -> RoomName {
        RoomName(unchecked: "calls.\(user.rawValue)")
    }

    /// What kind of room this name denotes, by its reserved prefix.
    public var scope: Scope {
        // Scanned as bytes (the name is validated lower-case ASCII): the bus asks for every
        // envelope, and splitting into an array of substrings was ~3 % of a relayed message.
        let utf8 = rawValue.utf8
        guard let dot = utf8.firstIndex(of: UInt8(ascii: ".")) else {
            return rawValue == "dm" || rawValue == "calls" ? .invalidReserved : .group
        }
        let prefix = rawValue[..<dot]
        let rest = rawValue[utf8.index(after: dot)...]
        if prefix == "dm" {
            guard let second = rest.utf8.firstIndex(of: UInt8(ascii: ".")),
                  let a = UserName(canonical: rest[..<second]),
                  let b = UserName(canonical: rest[rest.utf8.index(after: second)...]), a <= b
            else { return .invalidReserved }
            return .direct(a, b)
        }
        if prefix == "calls" {
            guard let user = UserName(canonical: rest) else { return .invalidReserved }
            return .callLog(user)
        }
        return .group
    }

    /// In a direct room that `user` is a party of, the other party (`user` again for notes to
    /// self); nil for any other room. A message there must reach an existing account.
    public func otherParty(than user: UserName) -> UserName? {
        guard case .direct(let a, let b) = scope else { return nil }
        if user == a { return b }
        if user == b { return a }
        return nil
    }

    /// The kinds of room, told apart by the reserved prefixes.
    public enum Scope: Hashable, Sendable {
        /// An ordinary chat room that sessions join.
        case group
        /// `dm.<a>.<b>`: readable and writable by the two users only, never joined.
        case direct(UserName, UserName)
        /// `calls.<user>`: readable by that user only, written by the server.
        case callLog(UserName)
        /// Starts with `dm.` or `calls.` but is not a well-formed reserved name.
        case invalidReserved
    }

    public var description: String { rawValue }
    public static func < (lhs: RoomName, rhs: RoomName) -> Bool { lhs.rawValue < rhs.rawValue }

    public init(from decoder: any Decoder) throws {
        let string = try decoder.singleValueContainer().decode(String.self)
        guard let name = RoomName(string) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "invalid room name"))
        }
        self = name
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// A validated user name: 1–32 characters of `a-z 0-9 _ -` (no dot), lower-cased on input.
public struct UserName: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    /// Longest accepted user name, in characters.
    public static let maxLength = 32

    /// The lower-cased, validated name.
    public let rawValue: String

    /// Validates and lower-cases `string`; `nil` when it is not a legal user name.
    @inlinable
    public init?(_ string: some StringProtocol) {
        guard let lowered = foldingASCIIName(string, maxLength: Self.maxLength,
                                             allowing: { $0 != UInt8(ascii: ".") && RoomName.isAllowed($0) })
        else { return nil }
        self.rawValue = lowered
    }

    /// A part of an already validated, lower-case room name: only length and dots to check.
    init?(canonical part: Substring) {
        guard (1...Self.maxLength).contains(part.utf8.count), !part.utf8.contains(UInt8(ascii: ".")) else { return nil }
        self.rawValue = String(part)
    }

    public var description: String { rawValue }
    public static func < (lhs: UserName, rhs: UserName) -> Bool { lhs.rawValue < rhs.rawValue }

    public init(from decoder: any Decoder) throws {
        let string = try decoder.singleValueContainer().decode(String.self)
        guard let name = UserName(string) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "invalid user name"))
        }
        self = name
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// The protocol an envelope arrived by.
public enum Via: String, Sendable, Hashable, Codable, CaseIterable {
    case ws, rest, mqtt, xmpp, sip, line, system
}

/// What an envelope carries.
public enum EnvelopeKind: String, Sendable, Hashable, Codable, CaseIterable {
    case chat, join, leave, presence, typing, receipt, reaction, edit, retract, call, system

    /// Kinds that are delivered live but never stored nor given a `seq`.
    public var isEphemeral: Bool { self == .typing }
}

/// `string` with `A`–`Z` lower-cased, when it is 1…`maxLength` bytes that are all allowed
/// once folded (room and user names). Only ASCII is folded: Unicode case mapping would turn
/// look-alikes into legal names (the Kelvin sign U+212A lower-cases to `k`, so `\u{212A}elvin`
/// would be `kelvin`).
@inlinable
func foldingASCIIName(_ string: some StringProtocol, maxLength: Int, allowing isAllowed: (UInt8) -> Bool) -> String? {
    let utf8 = string.utf8
    guard (1...maxLength).contains(utf8.count) else { return nil }
    var hasUpper = false
    for byte in utf8 {
        let folded = asciiLowered(byte)
        guard isAllowed(folded) else { return nil }
        hasUpper = hasUpper || folded != byte
    }
    return hasUpper ? String(decoding: utf8.map(asciiLowered), as: UTF8.self) : String(string)
}

@inlinable
func asciiLowered(_ byte: UInt8) -> UInt8 {
    byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
}
