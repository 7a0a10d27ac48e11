/// An error with an extensible, machine-readable `code` (snake_case, as sent on
/// the wire: WS `error.code`, line `ERR <code>`) and a human message.
///
/// A struct rather than a frozen enum so listeners can add codes without
/// touching the core.
public struct SwitchboardError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The snake_case code clients branch on.
    public var code: Code
    /// A sentence for people.
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// A snake_case error code.
    public struct Code: RawRepresentable, Hashable, Sendable, ExpressibleByStringLiteral, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public init(stringLiteral value: String) { self.rawValue = value }
        public var description: String { rawValue }

        public static let invalidRoom: Code = "invalid_room"
        public static let invalidUser: Code = "invalid_user"
        public static let invalidBody: Code = "invalid_body"
        public static let bodyTooLarge: Code = "body_too_large"
        public static let invalidAttrs: Code = "invalid_attrs"
        public static let invalidClientID: Code = "invalid_client_id"
        public static let invalidKind: Code = "invalid_kind"
        public static let forbidden: Code = "forbidden"
        public static let notJoined: Code = "not_joined"
        public static let noSuchRoom: Code = "no_such_room"
        public static let noSuchUser: Code = "no_such_user"
        public static let tooManyRooms: Code = "too_many_rooms"
        public static let storageUnavailable: Code = "storage_unavailable"
        public static let sessionClosed: Code = "session_closed"
        public static let shuttingDown: Code = "shutting_down"
        public static let authFailed: Code = "auth_failed"
        public static let authRequired: Code = "auth_required"
        public static let rateLimited: Code = "rate_limited"
        public static let lineTooLong: Code = "line_too_long"
        public static let invalidUTF8: Code = "invalid_utf8"
        public static let unknownCommand: Code = "unknown_command"
        public static let badArguments: Code = "bad_arguments"
        public static let idleTimeout: Code = "idle_timeout"
        public static let tooManyConnections: Code = "too_many_connections"
        public static let slowConsumer: Code = "slow_consumer"
        public static let flood: Code = "flood"
        public static let directRoom: Code = "direct_room"
        public static let alreadyAuthenticated: Code = "already_authenticated"
    }
}
