/// A command sent by a line-protocol client, as parsed by ``LineCommandParser``.
///
/// Names (rooms, users) are plain strings here; the listener validates them. `<text…>` fields are
/// already unescaped.
public enum LineCommand: Hashable, Sendable {
    /// `HISTORY` without a limit returns this many envelopes.
    public static let defaultHistoryLimit = 50
    /// The accepted values of the `HISTORY` limit.
    public static let historyLimitRange = 1...1000

    /// `AUTH <user> <password…>`: authenticates the connection. The password is the rest of the
    /// line and may contain spaces.
    case auth(user: String, password: String)
    /// `JOIN <room> [<since-seq>]`: joins a room, first replaying envelopes with a sequence number
    /// larger than `since` when it is given.
    case join(room: String, since: UInt64?)
    /// `PART <room>`: leaves a room.
    case part(room: String)
    /// `SAY <room> <text…>`: posts `text` (unescaped) to a joined room.
    case say(room: String, text: String)
    /// `TELL <user> <text…>`: sends `text` (unescaped) to a user as a direct message.
    case tell(user: String, text: String)
    /// `HISTORY <room> [<limit>]`: the newest envelopes of a room; `nil` means
    /// ``defaultHistoryLimit``.
    case history(room: String, limit: Int?)
    /// `WHO <room>`: who is in a room.
    case who(room: String)
    /// `ROOMS`: the list of group rooms.
    case rooms
    /// `PING [<token…>]`: answered with `PONG [<token>]`; keeps the connection alive.
    case ping(token: String?)
    /// `QUIT`: answered with `OK QUIT`, then the connection is closed.
    case quit

    /// The upper-case command word, e.g. `"SAY"`, as used in `OK <COMMAND>` replies.
    public var name: String {
        switch self {
        case .auth: "AUTH"
        case .join: "JOIN"
        case .part: "PART"
        case .say: "SAY"
        case .tell: "TELL"
        case .history: "HISTORY"
        case .who: "WHO"
        case .rooms: "ROOMS"
        case .ping: "PING"
        case .quit: "QUIT"
        }
    }
}
