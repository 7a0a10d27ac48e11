/// A parameter of a URI or header field: `;name=value` or a bare `;name`.
public struct SIPParameter: Hashable, Sendable {
    public var name: String
    public var value: String?
    public init(_ name: String, _ value: String? = nil) {
        self.name = name
        self.value = value
    }
}

extension Array where Element == SIPParameter {
    /// The value of the first parameter called `name` (case-insensitive); `""` for a bare one.
    public subscript(parameter name: String) -> String? {
        guard let p = first(where: { $0.name.caseInsensitiveEquals(name) }) else { return nil }
        return p.value ?? ""
    }

    public func has(_ name: String) -> Bool { contains { $0.name.caseInsensitiveEquals(name) } }

    public mutating func set(_ name: String, _ value: String?) {
        if let index = firstIndex(where: { $0.name.caseInsensitiveEquals(name) }) {
            self[index].value = value
        } else {
            append(SIPParameter(name, value))
        }
    }

    var serialized: String {
        var out = ""
        for p in self {
            out += ";"
            out += p.name
            if let value = p.value {
                out += "="
                out += value
            }
        }
        return out
    }

    /// Parses `;a=b;c`. An empty parameter (`;;`, a trailing `;`) is an error; URI parameters
    /// are unescaped (`%6C%72` is `lr`), header parameters are tokens or quoted strings.
    static func parse(_ text: Substring, unescaping: Bool = false) throws(SIPParseError) -> [SIPParameter] {
        let bytes = text.utf8.span
        return try parse(bytes, 0..<bytes.count, unescaping: unescaping)
    }

    /// ``parse(_:unescaping:)`` of the bytes in `range`.
    static func parse(_ bytes: Span<UInt8>, _ range: Range<Int>, unescaping: Bool = false) throws(SIPParseError) -> [SIPParameter] {
        let text = bytes.trimmingSWS(range)
        guard !text.isEmpty else { return [] }
        guard bytes[text.lowerBound] == UInt8(ascii: ";") else { throw .syntax("parameters must start with ;") }
        var out: [SIPParameter] = []
        var count = 1
        for i in text where bytes[i] == UInt8(ascii: ";") { count += 1 }
        out.reserveCapacity(count)
        var start = text.lowerBound + 1
        while true {
            let end = bytes.firstOffset(of: UInt8(ascii: ";"), in: start..<text.upperBound) ?? text.upperBound
            let piece = bytes.trimmingSWS(start..<end)
            guard !piece.isEmpty else { throw .syntax("empty parameter") }
            var name = piece
            var value: Range<Int>?
            if let eq = bytes.firstOffset(of: UInt8(ascii: "="), in: piece) {
                name = bytes.trimmingSWS(piece.lowerBound..<eq)
                value = bytes.trimmingSWS((eq + 1)..<piece.upperBound)
            }
            guard !name.isEmpty else { throw .syntax("parameter without a name") }
            if unescaping {
                let nameText = try SIPURI.unescape(bytes, name)
                var valueText: String?
                if let value { valueText = try SIPURI.unescape(bytes, value) }
                out.append(SIPParameter(nameText, valueText))
            } else {
                var valueText: String?
                if let value { valueText = bytes.string(value) }
                out.append(SIPParameter(bytes.string(name), valueText))
            }
            if end == text.upperBound { return out }
            start = end + 1
        }
    }
}

/// A SIP or SIPS URI (RFC 3261 §19.1), or any other absolute URI kept as text.
///
/// `sip:alice@example.com:5060;transport=tcp?Subject=hi` → scheme `sip`, user `alice`,
/// host `example.com`, port 5060, parameters `transport=tcp`, headers `Subject=hi`.
/// The user part is stored unescaped (`%40` → `@`) and escaped again when serialized.
public struct SIPURI: Hashable, Sendable, CustomStringConvertible {
    public var scheme: String
    public var user: String?
    public var password: String?
    public var host: String
    public var port: Int?
    public var parameters: [SIPParameter]
    public var headers: String?
    /// For schemes other than sip/sips: everything after the colon.
    public var opaque: String?

    /// The URI in `range` of `bytes` (surrounding spaces and tabs allowed): an address's `<…>`
    /// is parsed where it sits.
    static func parse(_ bytes: Span<UInt8>, _ range: Range<Int>) throws(SIPParseError) -> SIPURI {
        let text = bytes.trimmingSWS(range)
        guard let colon = bytes.firstOffset(of: UInt8(ascii: ":"), in: text), colon != text.lowerBound else {
            throw .syntax("URI without a scheme: \(bytes.string(text).prefix(64))")
        }
        let schemeRange = text.lowerBound..<colon
        guard isAlpha(bytes[text.lowerBound]), bytes.allSatisfy(in: schemeRange, {
            isAlnum($0) || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".")
        }) else { throw .syntax("bad URI scheme") }
        let scheme = bytes.lowercasedString(schemeRange)
        var rest = (colon + 1)..<text.upperBound
        guard scheme == "sip" || scheme == "sips" else {
            guard !rest.isEmpty, !bytes.contains(32, in: rest) else { throw .syntax("bad URI") }
            return SIPURI(scheme: scheme, user: nil, password: nil, host: "", port: nil, parameters: [], headers: nil,
                          opaque: bytes.string(rest))
        }
        var user: String?, password: String?, headers: String?
        var parameters: [SIPParameter] = []
        // The user part may hold `;` and `?` (user-unreserved) but never an unescaped `@`,
        // which neither parameters nor headers allow: split there first.
        if let at = bytes.firstOffset(of: UInt8(ascii: "@"), in: rest) {
            let userinfo = rest.lowerBound..<at
            rest = (at + 1)..<rest.upperBound
            var userPart = userinfo
            if let c = bytes.firstOffset(of: UInt8(ascii: ":"), in: userinfo) {
                password = try unescape(bytes, (c + 1)..<userinfo.upperBound)
                userPart = userinfo.lowerBound..<c
            }
            guard !userPart.isEmpty else { throw .syntax("empty user in URI") }
            guard bytes.allSatisfy(in: userPart, SIPURI.isUserByte) else { throw .syntax("bad character in URI user") }
            user = try unescape(bytes, userPart)
        }
        if let q = bytes.firstOffset(of: UInt8(ascii: "?"), in: rest) {
            headers = bytes.string((q + 1)..<rest.upperBound)
            rest = rest.lowerBound..<q
        }
        var hostport = rest
        if let semi = bytes.firstOffset(of: UInt8(ascii: ";"), in: rest) {
            hostport = rest.lowerBound..<semi
            parameters = try [SIPParameter].parse(bytes, semi..<rest.upperBound, unescaping: true)
        }
        let (host, port) = try parseHostPort(bytes, hostport)
        return SIPURI(scheme: scheme, user: user, password: password, host: host, port: port, parameters: parameters,
                      headers: headers, opaque: nil)
    }

    /// `host[:port]` (IPv6 references in brackets): the host lower-cased and checked, the port
    /// 1–65535. Shared by URIs and the Via sent-by.
    static func parseHostPort(_ bytes: Span<UInt8>, _ range: Range<Int>) throws(SIPParseError) -> (host: String, port: Int?) {
        if !range.isEmpty, bytes[range.lowerBound] == UInt8(ascii: "[") {
            guard let close = bytes.firstOffset(of: UInt8(ascii: "]"), in: range) else { throw .syntax("bad IPv6 reference") }
            let host = bytes.lowercasedString(range.lowerBound..<(close + 1))
            let after = (close + 1)..<range.upperBound
            guard !after.isEmpty else { return (host, nil) }
            guard bytes[after.lowerBound] == UInt8(ascii: ":"), let p = port(bytes, (after.lowerBound + 1)..<after.upperBound) else {
                throw .syntax("bad port")
            }
            return (host, p)
        }
        var hostRange = range
        var portNumber: Int?
        if let c = bytes.firstOffset(of: UInt8(ascii: ":"), in: range) {
            guard let p = port(bytes, (c + 1)..<range.upperBound) else { throw .syntax("bad port") }
            portNumber = p
            hostRange = range.lowerBound..<c
        }
        guard !hostRange.isEmpty, bytes.allSatisfy(in: hostRange, {
            isAlnum($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_")
        }) else { throw .syntax("bad host in URI") }
        return (bytes.lowercasedString(hostRange), portNumber)
    }

    /// A decimal port 1…65535.
    private static func port(_ bytes: Span<UInt8>, _ range: Range<Int>) -> Int? {
        guard let n = bytes.decimal(range), (1...65_535).contains(n) else { return nil }
        return n
    }

    public var description: String {
        guard isSIP else { return "\(scheme):\(opaque ?? "")" }
        var out = "\(scheme):"
        if let user {
            out += SIPURI.escapeUser(user)
            if let password { out += ":" + SIPURI.escapeUser(password) }
            out += "@"
        }
        out += host
        if let port { out += ":\(port)" }
        for p in parameters {
            out += ";" + SIPURI.escape(p.name, allowed: SIPURI.paramUnreserved)
            if let value = p.value { out += "=" + SIPURI.escape(value, allowed: SIPURI.paramUnreserved) }
        }
        if let headers { out += "?" + headers }
        return out
    }

    /// The address of record: `sip:user@host` without port or parameters.
    public var addressOfRecord: String {
        "\(scheme):" + (user.map { SIPURI.escapeUser($0) + "@" } ?? "") + host
    }

    /// `user@host:port` ignoring case of host and scheme parameters: enough to match a
    /// registered contact to the URI in a request.
    public var matchKey: String {
        "\(user ?? "")@\(host):\(port ?? (scheme == "sips" ? 5061 : 5060))"
    }

    static func isUserByte(_ b: UInt8) -> Bool { userBytes[Int(b)] }

    private static let userBytes: [Bool] = (0..<256).map { i in
        let b = UInt8(i)
        return isAlnum(b) || "-_.!~*'()&=+$,;?/%".utf8.contains(b)
    }

    /// The bytes of `range` with `%XX` escapes decoded; the result must be UTF-8.
    static func unescape(_ bytes: Span<UInt8>, _ range: Range<Int>) throws(SIPParseError) -> String {
        guard bytes.contains(UInt8(ascii: "%"), in: range) else { return bytes.string(range) }
        var out: [UInt8] = []
        out.reserveCapacity(range.count)
        var i = range.lowerBound
        while i < range.upperBound {
            let b = bytes[i]
            if b == UInt8(ascii: "%") {
                guard i + 2 < range.upperBound, let hv = hexValue(bytes[i + 1]), let lv = hexValue(bytes[i + 2]) else {
                    throw .syntax("bad escape in URI")
                }
                out.append(hv << 4 | lv)
                i += 3
            } else {
                out.append(b)
                i += 1
            }
        }
        guard let s = String(validating: out, as: UTF8.self) else { throw .syntax("URI escape is not UTF-8") }
        return s
    }

    static let paramUnreserved = Set("-_.!~*'()[]/:&+$".utf8)
    static let userUnreserved = Set("-_.!~*'()&=+$,;?/".utf8)

    static func escapeUser(_ text: String) -> String { escape(text, allowed: userUnreserved) }

    /// Percent-escapes every byte that is not alphanumeric or in `allowed`.
    static func escape(_ text: String, allowed: Set<UInt8>) -> String {
        var out = ""
        for b in text.utf8 {
            if isAlnum(b) || allowed.contains(b) {
                out.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                out += "%" + String(b >> 4, radix: 16, uppercase: true) + String(b & 0xF, radix: 16, uppercase: true)
            }
        }
        return out
    }
}

// Initializers live in an extension so that the struct keeps its synthesized memberwise
// initializer: building the parsed value through an explicit initializer made the optimizer
// construct it twice and copy it (a retain and a release of every field, per URI parsed).
extension SIPURI {
    public init(
        scheme: String = "sip", user: String? = nil, host: String, port: Int? = nil,
        parameters: [SIPParameter] = [], headers: String? = nil
    ) {
        self.scheme = scheme
        self.user = user
        self.password = nil
        self.host = host
        self.port = port
        self.parameters = parameters
        self.headers = headers
        self.opaque = nil
    }

    public var isSIP: Bool { scheme == "sip" || scheme == "sips" }

    public init(parsing text: String) throws(SIPParseError) {
        try self.init(parsing: Substring(text))
    }

    /// Parses a URI inside a larger value (the Request-URI of a start line).
    init(parsing text: Substring) throws(SIPParseError) {
        let bytes = text.utf8.span
        self = try SIPURI.parse(bytes, 0..<bytes.count)
    }
}

func isAlpha(_ b: UInt8) -> Bool { (b | 0x20) >= 0x61 && (b | 0x20) <= 0x7A }
func isAlnum(_ b: UInt8) -> Bool { isAlpha(b) || (b >= 0x30 && b <= 0x39) }
func hexValue(_ b: UInt8) -> UInt8? {
    switch b {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): b - 0x30
    case UInt8(ascii: "a")...UInt8(ascii: "f"): b - 0x61 + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): b - 0x41 + 10
    default: nil
    }
}
