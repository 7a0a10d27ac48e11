/// Why a line could not be parsed into a ``LineCommand``.
///
/// The listener answers it as `ERR <code> <message>` and keeps the connection open. `code` is an
/// open set of strings, so more codes can be added without breaking clients or callers.
public struct LineParseError: Error, Hashable, Sendable {
    /// The machine-readable error code, e.g. ``Code/badArguments``.
    public var code: String
    /// A human-readable explanation that gives the expected syntax, e.g.
    /// `usage: SAY <room> <text>`. It never contains CR or LF.
    public var message: String

    /// Creates an error with the given code and message.
    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }

    /// The codes produced by ``LineCommandParser``.
    public enum Code {
        /// The command word is not one of the protocol's commands.
        public static let unknownCommand = "unknown_command"
        /// The command is known but its arguments do not match its syntax.
        public static let badArguments = "bad_arguments"
    }

    /// An ``Code/unknownCommand`` error with the given message.
    public static func unknownCommand(_ message: String) -> LineParseError {
        LineParseError(code: Code.unknownCommand, message: message)
    }

    /// A ``Code/badArguments`` error with the given message.
    public static func badArguments(_ message: String) -> LineParseError {
        LineParseError(code: Code.badArguments, message: message)
    }
}
