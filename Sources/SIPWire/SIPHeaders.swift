/// The header fields of a SIP message, in wire order.
///
/// Names are kept in their canonical long form (compact forms such as `v` or `i` are expanded
/// when parsed) and compared case-insensitively. A field that carries a comma-separated list
/// (Via, Contact, Route…) may appear once per value or once with all values; ``values(_:)``
/// returns the flat list either way.
public struct SIPHeaders: Hashable, Sendable, Sequence {
    public struct Field: Hashable, Sendable {
        public var name: String
        public var value: String
        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    public private(set) var fields: [Field]

    public init(_ fields: [Field] = []) {
        self.fields = fields
    }

    public init(_ pairs: [(String, String)]) {
        self.fields = pairs.map { Field(name: SIPHeaders.canonicalName($0.0), value: $0.1) }
    }

    public func makeIterator() -> IndexingIterator<[Field]> { fields.makeIterator() }
    public var count: Int { fields.count }

    /// The first value of `name`, whole (not split at commas).
    public subscript(name: String) -> String? {
        let key = SIPHeaders.lookupName(name)
        // By index: a `for field in fields` loop copies (retains) each field it looks at.
        for i in fields.indices where fields[i].name.caseInsensitiveEquals(key) { return fields[i].value }
        return nil
    }

    /// Every field value of `name`, whole.
    public func all(_ name: String) -> [String] {
        let key = SIPHeaders.lookupName(name)
        var out: [String] = []
        for i in fields.indices where fields[i].name.caseInsensitiveEquals(key) { out.append(fields[i].value) }
        return out
    }

    /// Stored names are canonical and compared without case, so only compact forms need mapping.
    @inline(__always) static func lookupName(_ name: String) -> String {
        guard name.utf8.count == 1, let long = compactForm(name.utf8.first!) else { return name }
        return long
    }

    /// Every value of a list header, split at commas outside quotes and angle brackets.
    public func values(_ name: String) -> [String] {
        let key = SIPHeaders.lookupName(name)
        var out: [String] = []
        // Appended in place: no array per field, none to flatten.
        for i in fields.indices where fields[i].name.caseInsensitiveEquals(key) {
            SIPHeaders.splitList(fields[i].value, into: &out)
        }
        return out
    }

    public func contains(_ name: String) -> Bool { self[name] != nil }

    /// How many fields called `name` there are.
    public func count(of name: String) -> Int {
        let key = SIPHeaders.lookupName(name)
        var n = 0
        for i in fields.indices where fields[i].name.caseInsensitiveEquals(key) { n += 1 }
        return n
    }

    /// Room for `count` fields without reallocating (a response built field by field).
    public mutating func reserveCapacity(_ count: Int) {
        fields.reserveCapacity(count)
    }

    public mutating func add(_ name: String, _ value: String) {
        fields.append(Field(name: SIPHeaders.canonicalName(name), value: value))
    }

    /// Adds a field before every other one (a proxy's Via, Record-Route).
    public mutating func prepend(_ name: String, _ value: String) {
        let key = SIPHeaders.canonicalName(name)
        let index = fields.firstIndex { $0.name.caseInsensitiveEquals(key) } ?? 0
        fields.insert(Field(name: key, value: value), at: index)
    }

    /// Replaces every field of `name` with one field holding `value`.
    public mutating func set(_ name: String, _ value: String) {
        let key = SIPHeaders.canonicalName(name)
        if let index = fields.firstIndex(where: { $0.name.caseInsensitiveEquals(key) }) {
            fields[index].value = value
            var seen = false
            fields.removeAll { field in
                guard field.name.caseInsensitiveEquals(key) else { return false }
                defer { seen = true }
                return seen
            }
        } else {
            add(key, value)
        }
    }

    public mutating func remove(_ name: String) {
        let key = SIPHeaders.canonicalName(name)
        fields.removeAll { $0.name.caseInsensitiveEquals(key) }
    }

    /// Removes the first value of a list header (the top Via), keeping the others.
    public mutating func removeFirstValue(_ name: String) {
        let key = SIPHeaders.canonicalName(name)
        guard let index = fields.firstIndex(where: { $0.name.caseInsensitiveEquals(key) }) else { return }
        let rest = SIPHeaders.splitList(fields[index].value).dropFirst()
        if rest.isEmpty {
            fields.remove(at: index)
        } else {
            fields[index].value = rest.joined(separator: ", ")
        }
    }

    // MARK: Names

    /// RFC 3261 §7.3.3 compact forms (and a few from later RFCs), by their lower-case letter.
    static func compactForm(_ letter: UInt8) -> String? {
        switch letter.asciiLowercased {
        case UInt8(ascii: "i"): "Call-ID"
        case UInt8(ascii: "m"): "Contact"
        case UInt8(ascii: "e"): "Content-Encoding"
        case UInt8(ascii: "l"): "Content-Length"
        case UInt8(ascii: "c"): "Content-Type"
        case UInt8(ascii: "f"): "From"
        case UInt8(ascii: "s"): "Subject"
        case UInt8(ascii: "k"): "Supported"
        case UInt8(ascii: "t"): "To"
        case UInt8(ascii: "v"): "Via"
        case UInt8(ascii: "r"): "Refer-To"
        case UInt8(ascii: "o"): "Event"
        case UInt8(ascii: "u"): "Allow-Events"
        case UInt8(ascii: "x"): "Session-Expires"
        default: nil
        }
    }

    /// The canonical spelling: compact forms expanded, well-known names in their RFC case.
    public static func canonicalName(_ name: String) -> String {
        canonicalName(utf8: name.utf8) ?? name
    }

    /// The canonical spelling of a compact form or a well-known name (RFC 3261 and a few
    /// later RFCs); nil for any other name. A switch over literals: no String is made, no
    /// table is hashed or retained for the name of each header line.
    static func canonicalName(utf8 name: some Collection<UInt8>) -> String? {
        @inline(__always) func equal(_ lower: StaticString) -> Bool {
            lower.withUTF8Buffer { equalIgnoringASCIICase($0, name) }
        }
        switch name.count {
        case 1: return compactForm(name.first!)
        case 2: if equal("to") { return "To" }
        case 3: if equal("via") { return "Via" }
        case 4:
            if equal("from") { return "From" }
            if equal("cseq") { return "CSeq" }
            if equal("date") { return "Date" }
            if equal("path") { return "Path" }
        case 5:
            if equal("route") { return "Route" }
            if equal("allow") { return "Allow" }
            if equal("event") { return "Event" }
        case 6:
            if equal("accept") { return "Accept" }
            if equal("server") { return "Server" }
        case 7:
            if equal("call-id") { return "Call-ID" }
            if equal("contact") { return "Contact" }
            if equal("expires") { return "Expires" }
            if equal("require") { return "Require" }
            if equal("subject") { return "Subject" }
            if equal("warning") { return "Warning" }
        case 8:
            if equal("priority") { return "Priority" }
            if equal("refer-to") { return "Refer-To" }
            if equal("reply-to") { return "Reply-To" }
        case 9:
            if equal("call-info") { return "Call-Info" }
            if equal("supported") { return "Supported" }
            if equal("timestamp") { return "Timestamp" }
        case 10:
            if equal("user-agent") { return "User-Agent" }
            if equal("alert-info") { return "Alert-Info" }
            if equal("error-info") { return "Error-Info" }
        case 11:
            if equal("in-reply-to") { return "In-Reply-To" }
            if equal("min-expires") { return "Min-Expires" }
            if equal("retry-after") { return "Retry-After" }
            if equal("unsupported") { return "Unsupported" }
        case 12:
            if equal("max-forwards") { return "Max-Forwards" }
            if equal("content-type") { return "Content-Type" }
            if equal("record-route") { return "Record-Route" }
            if equal("allow-events") { return "Allow-Events" }
            if equal("mime-version") { return "MIME-Version" }
            if equal("organization") { return "Organization" }
        case 13:
            if equal("authorization") { return "Authorization" }
            if equal("proxy-require") { return "Proxy-Require" }
        case 14: if equal("content-length") { return "Content-Length" }
        case 15:
            if equal("accept-encoding") { return "Accept-Encoding" }
            if equal("accept-language") { return "Accept-Language" }
            if equal("session-expires") { return "Session-Expires" }
        case 16:
            if equal("content-encoding") { return "Content-Encoding" }
            if equal("content-language") { return "Content-Language" }
            if equal("www-authenticate") { return "WWW-Authenticate" }
        case 18: if equal("proxy-authenticate") { return "Proxy-Authenticate" }
        case 19:
            if equal("proxy-authorization") { return "Proxy-Authorization" }
            if equal("authentication-info") { return "Authentication-Info" }
            if equal("content-disposition") { return "Content-Disposition" }
        default: break
        }
        return nil
    }

    /// Splits a list header value at commas that are outside quoted strings and `<…>`.
    public static func splitList(_ value: String) -> [String] {
        var parts: [String] = []
        splitList(value, into: &parts)
        return parts
    }

    /// ``splitList(_:)`` appending to `parts`.
    static func splitList(_ value: String, into parts: inout [String]) {
        let utf8 = value.utf8
        guard utf8.contains(UInt8(ascii: ",")) else {
            let whole = value.trimmingSIPWhitespace()
            if !whole.isEmpty { parts.append(whole) }
            return
        }
        var start = utf8.startIndex
        while true {
            let end = listItemEnd(in: utf8, from: start)
            // ASCII delimiters sit on character boundaries, so the UTF-8 index slices the string.
            let part = String(value[start..<end]).trimmingSIPWhitespace()
            if !part.isEmpty { parts.append(part) }
            guard end != utf8.endIndex else { return }
            start = utf8.index(after: end)
        }
    }

    /// Where the list item starting at `start` ends: the first comma from there that is outside
    /// quoted strings (with `\` escapes) and `<…>`, or `endIndex`.
    static func listItemEnd<Bytes: Collection<UInt8>>(in bytes: Bytes, from start: Bytes.Index) -> Bytes.Index {
        var inQuotes = false, inAngle = false, escaped = false
        var index = start
        while index != bytes.endIndex {
            let byte = bytes[index]
            if escaped {
                escaped = false
            } else if inQuotes && byte == UInt8(ascii: "\\") {
                escaped = true
            } else if byte == UInt8(ascii: "\"") {
                inQuotes.toggle()
            } else if !inQuotes && byte == UInt8(ascii: "<") {
                inAngle = true
            } else if !inQuotes && byte == UInt8(ascii: ">") {
                inAngle = false
            } else if !inQuotes && !inAngle && byte == UInt8(ascii: ",") {
                return index
            }
            index = bytes.index(after: index)
        }
        return index
    }
}

extension String {
    func caseInsensitiveEquals(_ other: String) -> Bool {
        guard utf8.count == other.utf8.count else { return false }
        return self == other || equalIgnoringASCIICase(utf8, other.utf8)
    }

    /// Without leading and trailing spaces and tabs (SIP's LWS once unfolded).
    func trimmingSIPWhitespace() -> String {
        let utf8 = self.utf8
        guard let first = utf8.first, let last = utf8.last else { return self }
        if !first.isSIPWhitespace && !last.isSIPWhitespace { return self }
        guard let start = utf8.firstIndex(where: { !$0.isSIPWhitespace }),
              let end = utf8.lastIndex(where: { !$0.isSIPWhitespace })
        else { return "" }
        return String(self[start...end])
    }
}

extension UInt8 {
    /// A space or a tab: SIP's linear whitespace once continuation lines are unfolded.
    var isSIPWhitespace: Bool { self == 32 || self == 9 }
}

extension ArraySlice<UInt8> {
    /// Without leading and trailing spaces and tabs; indices stay those of the whole array.
    func trimmingSIPWhitespace() -> ArraySlice<UInt8> {
        var lower = startIndex, upper = endIndex
        while lower < upper, self[lower].isSIPWhitespace { lower += 1 }
        while upper > lower, self[upper - 1].isSIPWhitespace { upper -= 1 }
        return self[lower..<upper]
    }
}
