/// A SIP method token. Methods are case-sensitive (RFC 3261 §7.1); unknown ones are kept.
public struct SIPMethod: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String

    public init(_ rawValue: String) { self.rawValue = rawValue }

    public init(parsing text: String) throws(SIPParseError) {
        guard !text.isEmpty, text.utf8.allSatisfy(isTokenByte) else { throw .syntax("bad method") }
        self.rawValue = text
    }

    public var description: String { rawValue }

    public static let invite = SIPMethod("INVITE")
    public static let ack = SIPMethod("ACK")
    public static let bye = SIPMethod("BYE")
    public static let cancel = SIPMethod("CANCEL")
    public static let options = SIPMethod("OPTIONS")
    public static let register = SIPMethod("REGISTER")
    public static let message = SIPMethod("MESSAGE")
    public static let info = SIPMethod("INFO")
    public static let update = SIPMethod("UPDATE")
    public static let prack = SIPMethod("PRACK")
    public static let subscribe = SIPMethod("SUBSCRIBE")
    public static let notify = SIPMethod("NOTIFY")
    public static let refer = SIPMethod("REFER")
    public static let publish = SIPMethod("PUBLISH")
}

/// RFC 3261 token characters.
@inline(__always) func isTokenByte(_ b: UInt8) -> Bool { tokenBytes[Int(b)] }

private let tokenBytes: [Bool] = (0..<256).map { i in
    let b = UInt8(i)
    return isAlnum(b) || "-.!%*_+`'~".utf8.contains(b)
}

/// A SIP request.
public struct SIPRequest: Hashable, Sendable {
    public var method: SIPMethod
    public var uri: SIPURI
    public var headers: SIPHeaders {
        didSet { checked = nil }
    }
    public var body: [UInt8]
    /// The headers ``validate()`` parsed, so a handler's typed accessors do not parse them
    /// again; dropped whenever `headers` changes. Not part of the request's value.
    private var checked: Checked?

    /// A class, so a request stays small to copy (the parsed headers are a few hundred bytes).
    final class Checked: Sendable {
        let topVia: SIPVia
        let from: SIPAddress
        let to: SIPAddress
        let cseq: SIPCSeq
        let contacts: [SIPAddress]

        init(topVia: SIPVia, from: SIPAddress, to: SIPAddress, cseq: SIPCSeq, contacts: [SIPAddress]) {
            self.topVia = topVia
            self.from = from
            self.to = to
            self.cseq = cseq
            self.contacts = contacts
        }
    }

    public init(method: SIPMethod, uri: SIPURI, headers: SIPHeaders = SIPHeaders(), body: [UInt8] = []) {
        self.method = method
        self.uri = uri
        self.headers = headers
        self.body = body
    }

    public static func == (a: SIPRequest, b: SIPRequest) -> Bool {
        a.method == b.method && a.uri == b.uri && a.headers == b.headers && a.body == b.body
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(method)
        hasher.combine(uri)
        hasher.combine(headers)
        hasher.combine(body)
    }
}

/// A SIP response.
public struct SIPResponse: Hashable, Sendable {
    public var status: Int
    public var reason: String
    public var headers: SIPHeaders
    public var body: [UInt8]

    public init(status: Int, reason: String? = nil, headers: SIPHeaders = SIPHeaders(), body: [UInt8] = []) {
        self.status = status
        self.reason = reason ?? SIPResponse.defaultReason(status)
        self.headers = headers
        self.body = body
    }

    public var isProvisional: Bool { status < 200 }
    public var isSuccess: Bool { (200..<300).contains(status) }

    public static func defaultReason(_ status: Int) -> String {
        switch status {
        case 100: "Trying"
        case 180: "Ringing"
        case 181: "Call Is Being Forwarded"
        case 182: "Queued"
        case 183: "Session Progress"
        case 200: "OK"
        case 202: "Accepted"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 407: "Proxy Authentication Required"
        case 408: "Request Timeout"
        case 413: "Request Entity Too Large"
        case 415: "Unsupported Media Type"
        case 416: "Unsupported URI Scheme"
        case 420: "Bad Extension"
        case 423: "Interval Too Brief"
        case 480: "Temporarily Unavailable"
        case 481: "Call/Transaction Does Not Exist"
        case 482: "Loop Detected"
        case 483: "Too Many Hops"
        case 486: "Busy Here"
        case 487: "Request Terminated"
        case 488: "Not Acceptable Here"
        case 500: "Server Internal Error"
        case 501: "Not Implemented"
        case 503: "Service Unavailable"
        case 505: "Version Not Supported"
        case 513: "Message Too Large"
        case 603: "Decline"
        default: "Unknown"
        }
    }
}

/// A request or a response.
public enum SIPMessage: Hashable, Sendable {
    case request(SIPRequest)
    case response(SIPResponse)

    public var headers: SIPHeaders {
        switch self {
        case .request(let r): r.headers
        case .response(let r): r.headers
        }
    }
}

// MARK: - Typed header access

/// The header fields every request and response carries, typed.
public protocol SIPHeaderCarrying {
    var headers: SIPHeaders { get set }
}

extension SIPRequest: SIPHeaderCarrying {}
extension SIPResponse: SIPHeaderCarrying {}

extension SIPHeaderCarrying {
    public var callID: String? { headers["Call-ID"] }

    public func cseq() throws(SIPParseError) -> SIPCSeq { try headers.parsedCSeq() }

    public func from() throws(SIPParseError) -> SIPAddress { try headers.parsedAddress("From") }

    public func to() throws(SIPParseError) -> SIPAddress { try headers.parsedAddress("To") }

    /// Every Via, top first.
    public func vias() throws(SIPParseError) -> [SIPVia] {
        var out: [SIPVia] = []
        for value in headers.values("Via") { out.append(try SIPVia(parsing: value)) }
        return out
    }

    public func topVia() throws(SIPParseError) -> SIPVia { try headers.parsedTopVia() }

    /// Contact values; `*` is returned as nil in ``contactsAreWildcard``.
    public func contacts() throws(SIPParseError) -> [SIPAddress] { try headers.parsedContacts() }

    public var contactsAreWildcard: Bool { headers.values("Contact").contains("*") }

    public func routes(_ name: String = "Route") throws(SIPParseError) -> [SIPAddress] {
        var out: [SIPAddress] = []
        for value in headers.values(name) { out.append(try SIPAddress(parsing: value)) }
        return out
    }

    /// Max-Forwards, 0…255; nil when absent.
    public func maxForwards() throws(SIPParseError) -> Int? {
        guard let value = headers["Max-Forwards"] else { return nil }
        guard let n = parseDecimal(value), n <= 255 else { throw .invalidHeader("Max-Forwards") }
        return n
    }

    /// Expires in seconds; nil when absent. Values above 2^32-1 are invalid.
    public func expires() throws(SIPParseError) -> Int? {
        guard let value = headers["Expires"] else { return nil }
        guard let n = parseDecimal(value), n <= Int(UInt32.max) else { throw .invalidHeader("Expires") }
        return n
    }
}

extension SIPHeaders {
    /// To, From, Call-ID and CSeq exactly once; Max-Forwards, Expires and Content-Type at most
    /// once. One pass over the fields, whatever their number.
    func checkOccurrences() throws(SIPParseError) {
        var seen = (0, 0, 0, 0, 0, 0, 0)
        for i in fields.indices {
            // Compared in place (a local copy of the name would be retained and released).
            switch fields[i].name.utf8.count {
            case 2 where fields[i].name.caseInsensitiveEquals("To"): seen.0 += 1
            case 4 where fields[i].name.caseInsensitiveEquals("From"): seen.1 += 1
            case 7 where fields[i].name.caseInsensitiveEquals("Call-ID"): seen.2 += 1
            case 4 where fields[i].name.caseInsensitiveEquals("CSeq"): seen.3 += 1
            case 12 where fields[i].name.caseInsensitiveEquals("Max-Forwards"): seen.4 += 1
            case 7 where fields[i].name.caseInsensitiveEquals("Expires"): seen.5 += 1
            case 12 where fields[i].name.caseInsensitiveEquals("Content-Type"): seen.6 += 1
            default: break
            }
        }
        guard seen.0 == 1, seen.1 == 1, seen.2 == 1, seen.3 == 1, seen.4 <= 1, seen.5 <= 1, seen.6 <= 1 else {
            // Which one, in the order RFC 3261 §8.1.1 lists them.
            for (name, n) in [("To", seen.0), ("From", seen.1), ("Call-ID", seen.2), ("CSeq", seen.3)] where n != 1 {
                throw n == 0 ? .missingHeader(name) : .syntax("more than one \(name) header")
            }
            for (name, n) in [("Max-Forwards", seen.4), ("Expires", seen.5), ("Content-Type", seen.6)] where n > 1 {
                throw .syntax("more than one \(name) header")
            }
            return
        }
    }

    func parsedCSeq() throws(SIPParseError) -> SIPCSeq {
        guard let value = self["CSeq"] else { throw .missingHeader("CSeq") }
        return try SIPCSeq(parsing: value)
    }

    func parsedAddress(_ name: String) throws(SIPParseError) -> SIPAddress {
        guard let value = self[name] else { throw .missingHeader(name) }
        return try SIPAddress(parsing: value)
    }

    func parsedTopVia() throws(SIPParseError) -> SIPVia {
        guard let first = values("Via").first else { throw .missingHeader("Via") }
        return try SIPVia(parsing: first)
    }

    func parsedContacts() throws(SIPParseError) -> [SIPAddress] {
        var out: [SIPAddress] = []
        for value in values("Contact") where value != "*" { out.append(try SIPAddress(parsing: value)) }
        return out
    }
}

extension SIPRequest {
    // The typed accessors of a validated request answer from what validate() parsed.

    public func cseq() throws(SIPParseError) -> SIPCSeq {
        if let checked { return checked.cseq }
        return try headers.parsedCSeq()
    }

    public func from() throws(SIPParseError) -> SIPAddress {
        if let checked { return checked.from }
        return try headers.parsedAddress("From")
    }

    public func to() throws(SIPParseError) -> SIPAddress {
        if let checked { return checked.to }
        return try headers.parsedAddress("To")
    }

    public func topVia() throws(SIPParseError) -> SIPVia {
        if let checked { return checked.topVia }
        return try headers.parsedTopVia()
    }

    public func contacts() throws(SIPParseError) -> [SIPAddress] {
        if let checked { return checked.contacts }
        return try headers.parsedContacts()
    }

    /// Checks what RFC 3261 §8.1.1 makes mandatory, so a handler can trust the typed accessors:
    /// To, From, Call-ID, CSeq (same method as the request line, number below 2^31), a parsable
    /// top Via, a sane Max-Forwards. Keeps what it parsed for those accessors.
    public mutating func validate() throws(SIPParseError) {
        try headers.checkOccurrences()
        // Every Via must parse; the top one is kept.
        var topVia: SIPVia?
        for value in headers.values("Via") {
            let via = try SIPVia(parsing: value)
            if topVia == nil { topVia = via }
        }
        guard let topVia else { throw .missingHeader("Via") }
        let from = try headers.parsedAddress("From")
        let to = try headers.parsedAddress("To")
        guard let callID = headers["Call-ID"] else { throw .missingHeader("Call-ID") }
        guard !callID.isEmpty, !callID.utf8.contains(32) else { throw .invalidHeader("Call-ID") }
        let cseq = try headers.parsedCSeq()
        guard cseq.number < 1 << 31 else { throw .syntax("CSeq number too large") }
        guard cseq.method == method else { throw .syntax("CSeq method \(cseq.method) does not match \(method)") }
        _ = try maxForwards()
        _ = try expires()
        let contacts = try headers.parsedContacts()
        checked = Checked(topVia: topVia, from: from, to: to, cseq: cseq, contacts: contacts)
    }
}

// MARK: - Serialization

extension SIPRequest {
    /// The wire form, with Content-Length set to the body's size.
    public func serialize() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256 + body.count + headers.count * 40)
        SIPSerializer.writeLine("\(method.rawValue) \(uri) SIP/2.0", into: &out)
        SIPSerializer.writeHeaders(headers, bodyCount: body.count, into: &out)
        out.append(contentsOf: body)
        return out
    }
}

extension SIPResponse {
    public func serialize() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256 + body.count + headers.count * 40)
        SIPSerializer.writeLine("SIP/2.0 \(status) \(reason)", into: &out)
        SIPSerializer.writeHeaders(headers, bodyCount: body.count, into: &out)
        out.append(contentsOf: body)
        return out
    }
}

extension SIPMessage {
    public func serialize() -> [UInt8] {
        switch self {
        case .request(let r): r.serialize()
        case .response(let r): r.serialize()
        }
    }
}

enum SIPSerializer {
    /// A start line without any CR or LF inside, then CRLF.
    static func writeLine(_ line: String, into out: inout [UInt8]) {
        for b in line.utf8 where b != 13 && b != 10 { out.append(b) }
        out.append(contentsOf: "\r\n".utf8)
    }

    static func writeHeaders(_ headers: SIPHeaders, bodyCount: Int, into out: inout [UInt8]) {
        // By index: iterating the fields would copy (retain) each one.
        let fields = headers.fields
        for i in fields.indices where !fields[i].name.caseInsensitiveEquals("Content-Length") {
            // Only token characters in a name: nothing can end the line early.
            appendFiltered(fields[i].name.utf8, into: &out, keeping: isTokenByte)
            out.append(contentsOf: ": ".utf8)
            // A value never carries CR or LF onto the wire.
            appendFiltered(fields[i].value.utf8, into: &out) { $0 != 13 && $0 != 10 }
            out.append(contentsOf: "\r\n".utf8)
        }
        out.append(contentsOf: "Content-Length: \(bodyCount)\r\n\r\n".utf8)
    }

    /// Appends the bytes that pass `keep`: checked and copied straight from the string's
    /// storage when all do (nearly always), byte by byte otherwise.
    @inline(__always)
    private static func appendFiltered(_ bytes: String.UTF8View, into out: inout [UInt8], keeping keep: (UInt8) -> Bool) {
        let copied = bytes.withContiguousStorageIfAvailable { buffer -> Bool in
            for b in buffer where !keep(b) { return false }
            out.append(contentsOf: buffer)
            return true
        }
        if copied == true { return }
        for b in bytes where keep(b) { out.append(b) }
    }
}
