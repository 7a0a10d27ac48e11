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
        let text = text.trimmedSWS
        guard !text.isEmpty else { return [] }
        guard text.firstByte == UInt8(ascii: ";") else { throw .syntax("parameters must start with ;") }
        var rest = text[text.after(text.startIndex)...]
        var out: [SIPParameter] = []
        out.reserveCapacity(rest.utf8.reduce(1) { $1 == UInt8(ascii: ";") ? $0 + 1 : $0 })
        // Piece by piece, without an array of the pieces first.
        while true {
            let end = rest.byteIndex(of: UInt8(ascii: ";")) ?? rest.endIndex
            let trimmed = rest[..<end].trimmedSWS
            guard !trimmed.isEmpty else { throw .syntax("empty parameter") }
            var nameText = trimmed, valueText: Substring?
            if let eq = trimmed.byteIndex(of: UInt8(ascii: "=")) {
                nameText = trimmed[..<eq].trimmedSWS
                valueText = trimmed[trimmed.after(eq)...].trimmedSWS
            }
            guard !nameText.isEmpty else { throw .syntax("parameter without a name") }
            if unescaping {
                out.append(SIPParameter(try SIPURI.unescape(nameText), try valueText.map { v throws(SIPParseError) in try SIPURI.unescape(v) }))
            } else {
                out.append(SIPParameter(String(nameText), valueText.map(String.init)))
            }
            if end == rest.endIndex { return out }
            rest = rest[rest.after(end)...]
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

    /// Parses a URI inside a larger value (an address's `<…>`) without copying it out first.
    init(parsing text: Substring) throws(SIPParseError) {
        let text = text.trimmedSWS
        guard let colon = text.byteIndex(of: UInt8(ascii: ":")), colon != text.startIndex else {
            throw .syntax("URI without a scheme: \(text.prefix(64))")
        }
        let schemeText = text[..<colon]
        guard schemeText.utf8.allSatisfy({ isAlnum($0) || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") }),
              let first = schemeText.firstByte, isAlpha(first)
        else { throw .syntax("bad URI scheme") }
        let scheme = schemeText.asciiLowercased
        self.scheme = scheme
        self.parameters = []
        self.headers = nil
        self.password = nil
        self.user = nil
        self.port = nil
        self.opaque = nil
        var rest = text[text.after(colon)...]
        guard scheme == "sip" || scheme == "sips" else {
            guard !rest.isEmpty, !rest.containsByte(32) else { throw .syntax("bad URI") }
            self.host = ""
            self.opaque = String(rest)
            return
        }
        // The user part may hold `;` and `?` (user-unreserved) but never an unescaped `@`,
        // which neither parameters nor headers allow: split there first.
        if let at = rest.byteIndex(of: UInt8(ascii: "@")) {
            let userinfo = rest[..<at]
            rest = rest[rest.after(at)...]
            var userPart = userinfo
            if let c = userinfo.byteIndex(of: UInt8(ascii: ":")) {
                password = try SIPURI.unescape(userinfo[userinfo.after(c)...])
                userPart = userinfo[..<c]
            }
            guard !userPart.isEmpty else { throw .syntax("empty user in URI") }
            guard userPart.utf8.allSatisfy(SIPURI.isUserByte) else { throw .syntax("bad character in URI user") }
            user = try SIPURI.unescape(userPart)
        }
        if let q = rest.byteIndex(of: UInt8(ascii: "?")) {
            headers = String(rest[rest.after(q)...])
            rest = rest[..<q]
        }
        var hostport = rest
        if let semi = rest.byteIndex(of: UInt8(ascii: ";")) {
            hostport = rest[..<semi]
            parameters = try [SIPParameter].parse(rest[semi...], unescaping: true)
        }
        (host, port) = try SIPURI.parseHostPort(hostport)
    }

    /// `host[:port]` (IPv6 references in brackets): the host lower-cased and checked, the port
    /// 1–65535. Shared by URIs and the Via sent-by.
    static func parseHostPort(_ hostport: Substring) throws(SIPParseError) -> (host: String, port: Int?) {
        if hostport.firstByte == UInt8(ascii: "[") {
            guard let close = hostport.byteIndex(of: UInt8(ascii: "]")) else { throw .syntax("bad IPv6 reference") }
            let after = hostport[hostport.after(close)...]
            guard !after.isEmpty else { return (hostport[...close].asciiLowercased, nil) }
            guard after.firstByte == UInt8(ascii: ":"), let p = after[after.after(after.startIndex)...].portNumber else {
                throw .syntax("bad port")
            }
            return (hostport[...close].asciiLowercased, p)
        }
        var hostText = hostport
        var port: Int?
        if let c = hostport.byteIndex(of: UInt8(ascii: ":")) {
            guard let p = hostport[hostport.after(c)...].portNumber else { throw .syntax("bad port") }
            port = p
            hostText = hostport[..<c]
        }
        guard !hostText.isEmpty, hostText.utf8.allSatisfy({
            isAlnum($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_")
        }) else { throw .syntax("bad host in URI") }
        return (hostText.asciiLowercased, port)
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

    static func unescape(_ text: Substring) throws(SIPParseError) -> String {
        guard text.containsByte(UInt8(ascii: "%")) else { return String(text) }
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let b = iterator.next() {
            if b == UInt8(ascii: "%") {
                guard let h = iterator.next(), let l = iterator.next(), let hv = hexValue(h), let lv = hexValue(l) else {
                    throw .syntax("bad escape in URI")
                }
                bytes.append(hv << 4 | lv)
            } else {
                bytes.append(b)
            }
        }
        guard let s = String(validating: bytes, as: UTF8.self) else { throw .syntax("URI escape is not UTF-8") }
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
