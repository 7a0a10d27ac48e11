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
        // The parts come back as a tuple assigned at once: assigning the fields one by one,
        // or delegating to init(displayName:uri:parameters:), made the optimizer build the
        // value twice and copy it (a retain and a release of every field, per address).
        (displayName, uri, parameters) = try SIPAddress.parts(parsing: text)
    }

    private static func parts(parsing text: String) throws(SIPParseError) -> (String?, SIPURI, [SIPParameter]) {
        let bytes = text.utf8.span
        var rest = bytes.trimmingSWS(0..<bytes.count)
        var displayName: String?
        if !rest.isEmpty, bytes[rest.lowerBound] == UInt8(ascii: "\"") {
            // A quoted display name with quoted-pairs.
            var name: [UInt8] = []
            var index = rest.lowerBound + 1
            var closed = false
            while index < rest.upperBound {
                let b = bytes[index]
                if b == UInt8(ascii: "\\") {
                    index += 1
                    guard index < rest.upperBound else { break }
                    name.append(bytes[index])
                } else if b == UInt8(ascii: "\"") {
                    closed = true
                    break
                } else {
                    name.append(b)
                }
                index += 1
            }
            guard closed else { throw .syntax("unterminated quoted display name") }
            displayName = String(decoding: name, as: UTF8.self)
            rest = bytes.trimmingSWS((index + 1)..<rest.upperBound)
            guard !rest.isEmpty, bytes[rest.lowerBound] == UInt8(ascii: "<") else { throw .syntax("display name without <URI>") }
        }
        if let open = bytes.firstOffset(of: UInt8(ascii: "<"), in: rest) {
            if displayName == nil {
                let name = bytes.trimmingSWS(rest.lowerBound..<open)
                if !name.isEmpty { displayName = bytes.string(name) }
            }
            let inner = (open + 1)..<rest.upperBound
            guard let close = bytes.firstOffset(of: UInt8(ascii: ">"), in: inner) else { throw .syntax("missing > in address") }
            let uri = try SIPURI.parse(bytes, inner.lowerBound..<close)
            let after = bytes.trimmingSWS((close + 1)..<rest.upperBound)
            guard after.isEmpty || bytes[after.lowerBound] == UInt8(ascii: ";") else { throw .syntax("junk after address") }
            return (displayName, uri, try [SIPParameter].parse(bytes, after))
        } else {
            guard displayName == nil else { throw .syntax("bad address") }
            // addr-spec: parameters after the URI belong to the header, not the URI.
            let semi = bytes.firstOffset(of: UInt8(ascii: ";"), in: rest) ?? rest.upperBound
            let uriText = bytes.trimmingSWS(rest.lowerBound..<semi)
            guard !bytes.contains(32, in: uriText), !bytes.contains(UInt8(ascii: ","), in: uriText) else {
                throw .syntax("bad address")
            }
            let uri = try SIPURI.parse(bytes, uriText)
            return (nil, uri, try [SIPParameter].parse(bytes, semi..<rest.upperBound))
        }
    }

    public var description: String {
        var out = ""
        if let displayName {
            out += "\"" + displayName.replacingQuotes() + "\" "
        }
        // Appended piece by piece: interpolating `uri` copied it into the interpolation.
        out += "<"
        out += uri.description
        out += ">"
        out += parameters.serialized
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
        let bytes = text.utf8.span
        let text = bytes.trimmingSWS(0..<bytes.count)
        // sent-protocol may contain LWS around the slashes: SIP / 2.0 / UDP.
        guard let slash1 = bytes.firstOffset(of: UInt8(ascii: "/"), in: text),
              bytes.equals(bytes.trimmingSWS(text.lowerBound..<slash1), "sip", ignoringCase: true)
        else { throw .syntax("bad Via protocol") }
        let afterName = (slash1 + 1)..<text.upperBound
        guard let slash2 = bytes.firstOffset(of: UInt8(ascii: "/"), in: afterName),
              bytes.equals(bytes.trimmingSWS(afterName.lowerBound..<slash2), "2.0")
        else { throw .syntax("bad Via protocol") }
        let third = bytes.trimmingSWS((slash2 + 1)..<text.upperBound)
        guard let space = bytes.firstOffset(in: third, where: \.isSIPWhitespace) else { throw .syntax("bad Via") }
        let transportRange = third.lowerBound..<space
        guard !transportRange.isEmpty, bytes.allSatisfy(in: transportRange, { isAlnum($0) || $0 == UInt8(ascii: "-") }) else {
            throw .syntax("bad Via transport")
        }
        transport = bytes.uppercasedString(transportRange)
        var rest = bytes.trimmingSWS(space..<third.upperBound)
        var paramsRange = rest.upperBound..<rest.upperBound
        if let semi = bytes.firstOffset(of: UInt8(ascii: ";"), in: rest) {
            paramsRange = semi..<rest.upperBound
            rest = rest.lowerBound..<semi
        }
        // LWS may sit around the colon of sent-by (RFC 3261 §25.1): dropped before parsing.
        if bytes.firstOffset(in: rest, where: \.isSIPWhitespace) != nil {
            var joined: [UInt8] = []
            for i in rest where !bytes[i].isSIPWhitespace { joined.append(bytes[i]) }
            let compact = joined.span
            (host, port) = try SIPURI.parseHostPort(compact, 0..<compact.count)
        } else {
            (host, port) = try SIPURI.parseHostPort(bytes, rest)
        }
        parameters = try [SIPParameter].parse(bytes, paramsRange)
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
func parseDecimal(_ text: Substring) -> Int? {
    let bytes = text.utf8.span
    return bytes.decimal(0..<bytes.count)
}

func parseDecimal(_ text: String) -> Int? {
    let bytes = text.utf8.span
    return bytes.decimal(0..<bytes.count)
}
