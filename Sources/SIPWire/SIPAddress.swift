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
        let text = text.trimmingSIPWhitespace()
        var displayName: String?
        var rest = Substring(text)
        if rest.hasPrefix("\"") {
            var name = ""
            var index = rest.index(after: rest.startIndex)
            var closed = false
            while index < rest.endIndex {
                let c = rest[index]
                if c == "\\" {
                    index = rest.index(after: index)
                    guard index < rest.endIndex else { break }
                    name.append(rest[index])
                } else if c == "\"" {
                    closed = true
                    break
                } else {
                    name.append(c)
                }
                index = rest.index(after: index)
            }
            guard closed else { throw .syntax("unterminated quoted display name") }
            displayName = name
            rest = rest[rest.index(after: index)...]
            guard rest.drop(while: { $0 == " " || $0 == "\t" }).hasPrefix("<") else {
                throw .syntax("display name without <URI>")
            }
        }
        if let open = rest.firstIndex(of: "<") {
            if displayName == nil {
                let name = String(rest[..<open]).trimmingSIPWhitespace()
                if !name.isEmpty { displayName = name }
            }
            guard let close = rest[open...].firstIndex(of: ">") else { throw .syntax("missing > in address") }
            self.uri = try SIPURI(parsing: String(rest[rest.index(after: open)..<close]))
            let after = rest[rest.index(after: close)...].drop(while: { $0 == " " || $0 == "\t" })
            guard after.isEmpty || after.hasPrefix(";") else { throw .syntax("junk after address") }
            self.parameters = try [SIPParameter].parse(after)
        } else {
            guard displayName == nil else { throw .syntax("bad address") }
            // addr-spec: parameters after the URI belong to the header, not the URI.
            let semi = rest.firstIndex(of: ";") ?? rest.endIndex
            let uriText = String(rest[..<semi]).trimmingSIPWhitespace()
            guard !uriText.contains(" "), !uriText.contains(",") else { throw .syntax("bad address") }
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
        let text = text.trimmingSIPWhitespace()
        // sent-protocol may contain LWS around the slashes.
        let parts = text.split(separator: "/", maxSplits: 2)
        guard parts.count == 3,
              String(parts[0]).trimmingSIPWhitespace().uppercased() == "SIP",
              String(parts[1]).trimmingSIPWhitespace() == "2.0"
        else { throw .syntax("bad Via protocol") }
        let third = parts[2].drop(while: { $0 == " " || $0 == "\t" })
        guard let space = third.firstIndex(where: { $0 == " " || $0 == "\t" }) else { throw .syntax("bad Via") }
        transport = third[..<space].uppercased()
        guard !transport.isEmpty, transport.utf8.allSatisfy({ isAlnum($0) || $0 == UInt8(ascii: "-") }) else {
            throw .syntax("bad Via transport")
        }
        var rest = third[space...].drop(while: { $0 == " " || $0 == "\t" })
        var paramsText: Substring = ""
        if let semi = rest.firstIndex(of: ";") {
            paramsText = rest[semi...]
            rest = rest[..<semi]
        }
        let hostport = String(rest).trimmingSIPWhitespace()
        let probe = try SIPURI(parsing: "sip:" + hostport.replacingOccurrencesOfSpaces())
        host = probe.host
        port = probe.port
        parameters = try [SIPParameter].parse(paramsText)
        if let branch = parameters[parameter: "branch"], branch.isEmpty { throw .syntax("empty Via branch") }
    }

    public var description: String {
        "SIP/2.0/\(transport) \(host)" + (port.map { ":\($0)" } ?? "") + parameters.serialized
    }
}

extension String {
    fileprivate func replacingOccurrencesOfSpaces() -> String {
        String(unicodeScalars.filter { $0 != " " && $0 != "\t" })
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
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard parts.count == 2, let n = parseDecimal(parts[0]), n <= Int(UInt32.max) else {
            throw .missingHeader("CSeq")
        }
        number = UInt32(n)
        method = try SIPMethod(parsing: String(parts[1]))
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
