/// A name-addr or addr-spec with header parameters: From, To, Contact, Route, Record-Route.
///
/// `"Alice" <sip:alice@example.com>;tag=1928` → display name `Alice`, the URI, parameters `tag`.
public struct SIPAddress: Hashable, Sendable, CustomStringConvertible {
    public var displayName: String?
    public var uri: SIPURI
    public var parameters: [SIPParameter]

    public init(displayName: String? = nil, uri: SIPURI, parameters: [SIPParameter] = []) {
        self.displayName = displayName
        self.uri = uri
        self.parameters = parameters
    }

    public var tag: String? {
        get { parameters[parameter: "tag"] }
        set { parameters.removeAll { $0.name.caseInsensitiveEquals("tag") }; if let newValue { parameters.append(SIPParameter("tag", newValue)) } }
    }

    public init(parsing text: String) throws(SIPParseError) {
        var rest = Substring(text).trimmedSWS
        var displayName: String?
        if rest.firstByte == UInt8(ascii: "\"") {
            // A quoted display name with quoted-pairs.
            var name: [UInt8] = []
            var index = rest.after(rest.startIndex)
            var closed = false
            while index != rest.endIndex {
                let b = rest.utf8[index]
                if b == UInt8(ascii: "\\") {
                    index = rest.after(index)
                    guard index != rest.endIndex else { break }
                    name.append(rest.utf8[index])
                } else if b == UInt8(ascii: "\"") {
                    closed = true
                    break
                } else {
                    name.append(b)
                }
                index = rest.after(index)
            }
            guard closed else { throw .syntax("unterminated quoted display name") }
            displayName = String(decoding: name, as: UTF8.self)
            rest = rest[rest.after(index)...].trimmedSWS
            guard rest.firstByte == UInt8(ascii: "<") else { throw .syntax("display name without <URI>") }
        }
        if let open = rest.byteIndex(of: UInt8(ascii: "<")) {
            if displayName == nil {
                let name = rest[..<open].trimmedSWS
                if !name.isEmpty { displayName = String(name) }
            }
            let inner = rest[rest.after(open)...]
            guard let close = inner.byteIndex(of: UInt8(ascii: ">")) else { throw .syntax("missing > in address") }
            self.uri = try SIPURI(parsing: inner[..<close])
            let after = inner[inner.after(close)...].trimmedSWS
            guard after.isEmpty || after.firstByte == UInt8(ascii: ";") else { throw .syntax("junk after address") }
            self.parameters = try [SIPParameter].parse(after)
        } else {
            guard displayName == nil else { throw .syntax("bad address") }
            // addr-spec: parameters after the URI belong to the header, not the URI.
            let semi = rest.byteIndex(of: UInt8(ascii: ";")) ?? rest.endIndex
            let uriText = rest[..<semi].trimmedSWS
            guard !uriText.containsByte(32), !uriText.containsByte(UInt8(ascii: ",")) else { throw .syntax("bad address") }
            self.uri = try SIPURI(parsing: uriText)
            self.parameters = try [SIPParameter].parse(rest[semi...])
        }
        self.displayName = displayName
    }

    public var description: String {
        var out = ""
        if let displayName {
            out += "\"" + displayName.replacingQuotes() + "\" "
        }
        out += "<\(uri)>" + parameters.serialized
        return out
    }
}

extension String {
    fileprivate func replacingQuotes() -> String {
        var out = String.UnicodeScalarView()
        for c in unicodeScalars {
            if c == "\r" || c == "\n" { continue }
            if c == "\"" || c == "\\" { out.append("\\") }
            out.append(c)
        }
        return String(out)
    }
}

/// One Via value: `SIP/2.0/UDP host:port;branch=z9hG4bK…;rport`.
public struct SIPVia: Hashable, Sendable, CustomStringConvertible {
    public var transport: String
    public var host: String
    public var port: Int?
    public var parameters: [SIPParameter]

    public init(transport: String, host: String, port: Int?, parameters: [SIPParameter]) {
        self.transport = transport
        self.host = host
        self.port = port
        self.parameters = parameters
    }

    public var branch: String? { parameters[parameter: "branch"] }

    public init(parsing text: String) throws(SIPParseError) {
        let text = Substring(text).trimmedSWS
        // sent-protocol may contain LWS around the slashes: SIP / 2.0 / UDP.
        guard let slash1 = text.byteIndex(of: UInt8(ascii: "/")),
              text[..<slash1].trimmedSWS.asciiLowercased == "sip"
        else { throw .syntax("bad Via protocol") }
        let afterName = text[text.after(slash1)...]
        guard let slash2 = afterName.byteIndex(of: UInt8(ascii: "/")), afterName[..<slash2].trimmedSWS == "2.0" else {
            throw .syntax("bad Via protocol")
        }
        let third = afterName[afterName.after(slash2)...].trimmedSWS
        guard let space = third.utf8.firstIndex(where: \.isSIPWhitespace) else { throw .syntax("bad Via") }
        let transportText = third[..<space]
        guard !transportText.isEmpty, transportText.utf8.allSatisfy({ isAlnum($0) || $0 == UInt8(ascii: "-") }) else {
            throw .syntax("bad Via transport")
        }
        transport = transportText.utf8.contains(where: \.isASCIILowercase)
            ? String(decoding: transportText.utf8.map(\.asciiUppercased), as: UTF8.self)
            : String(transportText)
        var rest = third[space...].trimmedSWS
        var paramsText: Substring = ""
        if let semi = rest.byteIndex(of: UInt8(ascii: ";")) {
            paramsText = rest[semi...]
            rest = rest[..<semi]
        }
        // LWS may sit around the colon of sent-by (RFC 3261 §25.1): dropped before parsing.
        let hostport = rest.utf8.contains(where: \.isSIPWhitespace)
            ? Substring(String(decoding: rest.utf8.filter { $0 != 32 && $0 != 9 }, as: UTF8.self)) : rest
        (host, port) = try SIPURI.parseHostPort(hostport)
        parameters = try [SIPParameter].parse(paramsText)
        if let branch = parameters[parameter: "branch"], branch.isEmpty { throw .syntax("empty Via branch") }
    }

    public var description: String {
        "SIP/2.0/\(transport) \(host)" + (port.map { ":\($0)" } ?? "") + parameters.serialized
    }
}


/// `CSeq: 4711 INVITE`.
public struct SIPCSeq: Hashable, Sendable, CustomStringConvertible {
    public var number: UInt32
    public var method: SIPMethod

    public init(number: UInt32, method: SIPMethod) {
        self.number = number
        self.method = method
    }

    public init(parsing text: String) throws(SIPParseError) {
        // `1*DIGIT LWS Method`, scanned in place (every request has one).
        let value = Substring(text).trimmedSWS
        guard let space = value.utf8.firstIndex(where: \.isSIPWhitespace),
              let n = parseDecimal(value[..<space]), n <= Int(UInt32.max)
        else { throw .invalidHeader("CSeq") }
        let methodText = value[space...].trimmedSWS
        guard !methodText.isEmpty, !methodText.utf8.contains(where: \.isSIPWhitespace) else { throw .invalidHeader("CSeq") }
        number = UInt32(n)
        method = try SIPMethod(parsing: String(methodText))
    }

    public var description: String { "\(number) \(method.rawValue)" }
}

/// A non-negative decimal (1*DIGIT, leading zeros allowed); nil when not all digits or too large.
func parseDecimal(_ text: some StringProtocol) -> Int? {
    guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
    let significant = text.utf8.drop(while: { $0 == 48 })
    guard significant.count <= 12 else { return nil }
    return significant.reduce(0) { $0 * 10 + Int($1 - 48) }
}
