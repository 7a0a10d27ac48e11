import NIOCore

/// A line sent by the server to a line-protocol client.
///
/// ``write(into:)`` encodes it as one line ending with a single `LF`. `MSG` text is escaped with
/// ``LineText/escape(_:)``; every other field has CR and LF replaced by spaces
/// (``LineText/singleLine(_:)``), so a reply can never split into two lines.
public enum LineReply: Hashable, Sendable {
    /// `OK <COMMAND> [<details>]`: the command succeeded. Empty details are omitted.
    case ok(command: String, details: String?)
    /// `ERR <code> <message…>`: the command failed, or the connection is about to be closed.
    case err(code: String, message: String)
    /// `MSG <room> <seq> <ts> <user> <via> <text…>`: a chat line (or another stored kind) in a
    /// room; `ts` is in milliseconds since 1970 and `text` is escaped on the wire.
    case msg(room: String, seq: UInt64, ts: Int64, user: String, via: String, text: String)
    /// `JOINED <room> <user> <via>`: a user entered a room over the protocol `via`.
    case joined(room: String, user: String, via: String)
    /// `PARTED <room> <user> <via>`: a user left a room over the protocol `via`.
    case parted(room: String, user: String, via: String)
    /// `PONG [<token>]`: the answer to `PING`, echoing its token. An empty token is omitted.
    case pong(token: String?)

    /// Writes the reply as one line, ending with `LF`, at the end of `buffer`.
    public func write(into buffer: inout ByteBuffer) {
        switch self {
        case .ok(let command, let details):
            buffer.writeStaticString("OK ")
            buffer.writeSingleLine(command)
            if let details, !details.isEmpty {
                buffer.writeSpace()
                buffer.writeSingleLine(details)
            }
        case .err(let code, let message):
            buffer.writeStaticString("ERR ")
            buffer.writeSingleLine(code)
            if !message.isEmpty {
                buffer.writeSpace()
                buffer.writeSingleLine(message)
            }
        case .msg(let room, let seq, let ts, let user, let via, let text):
            buffer.writeStaticString("MSG ")
            buffer.writeSingleLine(room)
            buffer.writeSpace()
            buffer.writeString(String(seq))
            buffer.writeSpace()
            buffer.writeString(String(ts))
            buffer.writeSpace()
            buffer.writeSingleLine(user)
            buffer.writeSpace()
            buffer.writeSingleLine(via)
            buffer.writeSpace()
            buffer.writeString(LineText.escape(text))
        case .joined(let room, let user, let via), .parted(let room, let user, let via):
            if case .joined = self {
                buffer.writeStaticString("JOINED ")
            } else {
                buffer.writeStaticString("PARTED ")
            }
            buffer.writeSingleLine(room)
            buffer.writeSpace()
            buffer.writeSingleLine(user)
            buffer.writeSpace()
            buffer.writeSingleLine(via)
        case .pong(let token):
            buffer.writeStaticString("PONG")
            if let token, !token.isEmpty {
                buffer.writeSpace()
                buffer.writeSingleLine(token)
            }
        }
        buffer.writeInteger(UInt8.lf)
    }
}

extension LineReply: CustomStringConvertible {
    /// The reply as it appears on the wire, without its ending `LF`.
    public var description: String {
        var buffer = ByteBuffer()
        self.write(into: &buffer)
        return buffer.readString(length: buffer.readableBytes - 1) ?? ""
    }
}

extension ByteBuffer {
    fileprivate mutating func writeSpace() {
        self.writeInteger(UInt8.space)
    }

    fileprivate mutating func writeSingleLine(_ text: String) {
        self.writeString(LineText.singleLine(text))
    }
}
