/// Why bytes could not be read as a SIP message.
///
/// `status` is the response a server sends when it can still answer (it read a request line
/// and a usable Via): 400 for bad syntax, 413 for an oversize message, 505 for another
/// version. `code` is an open set of machine-readable strings, as in the other *Wire targets.
public struct SIPParseError: Error, Hashable, Sendable, CustomStringConvertible {
    public var code: String
    public var message: String
    /// The SIP status code that answers this error.
    public var status: Int
    var _partial: PartialHeaders?

    public init(code: String, message: String, status: Int = 400) {
        self.code = code
        self.message = message
        self.status = status
    }

    public var description: String { "\(code): \(message)" }

    public static func syntax(_ message: String) -> SIPParseError {
        SIPParseError(code: "bad_syntax", message: message, status: 400)
    }
    public static func missingHeader(_ name: String) -> SIPParseError {
        SIPParseError(code: "missing_header", message: "missing \(name) header", status: 400)
    }
    /// A header that is present but whose value does not parse.
    public static func invalidHeader(_ name: String) -> SIPParseError {
        SIPParseError(code: "invalid_header", message: "invalid \(name) header", status: 400)
    }
    public static func tooLarge(_ message: String) -> SIPParseError {
        SIPParseError(code: "too_large", message: message, status: 413)
    }
    public static func version(_ version: String) -> SIPParseError {
        SIPParseError(code: "bad_version", message: "unsupported version \(version)", status: 505)
    }
}
