/// Reads SIP messages: one per UDP datagram (``parse(datagram:)``), or framed by
/// Content-Length on a stream (``SIPStreamFramer``).
///
/// Header lines are unfolded, compact names expanded, and every limit of ``SIPLimits`` is
/// checked. What the parser guarantees is structure (start line, header syntax, body length);
/// ``SIPRequest/validate()`` checks the mandatory request headers.
public struct SIPParser: Sendable {
    public var limits: SIPLimits

    public init(limits: SIPLimits = .default) {
        self.limits = limits
    }

    /// Parses one datagram. Leading CRLFs (keepalives) are skipped; a body longer than
    /// Content-Length is truncated to it, a shorter one is an error (RFC 3261 §18.3).
    public func parse(datagram: [UInt8]) throws(SIPParseError) -> SIPMessage {
        guard datagram.count <= limits.maxMessageBytes else {
            throw .tooLarge("message of \(datagram.count) bytes exceeds \(limits.maxMessageBytes)")
        }
        var start = 0
        while start < datagram.count, datagram[start] == 13 || datagram[start] == 10 { start += 1 }
        guard start < datagram.count else { throw .syntax("empty message") }
        let headEnd: Int, bodyStart: Int
        if let end = SIPParser.findHeaderEnd(datagram, from: start) {
            (headEnd, bodyStart) = end
        } else {
            // Some senders end a body-less datagram after the last header line.
            headEnd = datagram.count
            bodyStart = datagram.count
        }
        let (startLine, headers) = try parseHead(datagram[start..<headEnd])
        let available = datagram.count - bodyStart
        let length = try SIPParser.contentLength(headers) ?? available
        guard length <= available else {
            throw SIPParseError(code: "bad_content_length",
                                message: "Content-Length \(length) exceeds the \(available) bytes received", status: 400)
                .with(headers: headers)
        }
        return try makeMessage(startLine: startLine, headers: headers, body: Array(datagram[bodyStart..<(bodyStart + length)]))
    }

    /// Start line and header fields of a head (without the blank line).
    func parseHead(_ head: ArraySlice<UInt8>) throws(SIPParseError) -> (String, SIPHeaders) {
        // Offsets into a Span of the head: no slice of the datagram (each one a reference to
        // retain and release) is made per line or per field.
        let bytes = head.span
        // Sized once: grown from empty, the two arrays below were five reallocations a message.
        var lines: [Range<Int>] = []
        lines.reserveCapacity(24)
        var lineStart = 0
        for index in 0..<bytes.count where bytes[index] == 10 {
            var lineEnd = index
            if lineEnd > lineStart, bytes[lineEnd - 1] == 13 { lineEnd -= 1 }
            lines.append(lineStart..<lineEnd)
            lineStart = index + 1
        }
        if lineStart < bytes.count {
            var lineEnd = bytes.count
            if bytes[lineEnd - 1] == 13 { lineEnd -= 1 }
            lines.append(lineStart..<lineEnd)
        }
        guard let first = lines.first, !first.isEmpty else { throw .syntax("missing start line") }
        guard first.count <= limits.maxLineBytes else { throw .tooLarge("start line too long") }
        guard let startLine = SIPParser.utf8String(bytes, first) else { throw .syntax("start line is not UTF-8") }

        var fields: [SIPHeaders.Field] = []
        fields.reserveCapacity(lines.count - 1)
        // The current field: its first line, or a copy with its continuation lines folded in
        // (rare), so that most fields are not copied here.
        var pending: Range<Int>?
        var folded: [UInt8]?
        func addField(_ line: Span<UInt8>, _ range: Range<Int>) throws(SIPParseError) {
            guard fields.count < limits.maxHeaders else {
                throw .tooLarge("more than \(limits.maxHeaders) header fields")
            }
            guard let colon = line.firstOffset(of: UInt8(ascii: ":"), in: range) else {
                throw .syntax("header line without a colon")
            }
            // A line never starts with whitespace here (that is a continuation line).
            let nameRange = line.trimmingSWS(range.lowerBound..<colon)
            guard !nameRange.isEmpty, line.allSatisfy(in: nameRange, isTokenByte) else { throw .syntax("bad header name") }
            // The value without surrounding spaces and tabs, trimmed before it becomes a String.
            guard let value = SIPParser.utf8String(line, line.trimmingSWS((colon + 1)..<range.upperBound)) else {
                throw .syntax("header value is not UTF-8")
            }
            let name = line.extracting(nameRange).withUnsafeBufferPointer { SIPHeaders.canonicalName(utf8: $0) }
            fields.append(SIPHeaders.Field(name: name ?? line.string(nameRange), value: value))
        }
        func flush() throws(SIPParseError) {
            if let folded {
                let span = folded.span
                try addField(span, 0..<span.count)
            } else if let pending {
                try addField(bytes, pending)
            }
            pending = nil
            folded = nil
        }
        // An error in a header line keeps the fields read before it, so that a server can still
        // answer (400, 413) a request whose Via, From, To, Call-ID and CSeq came first.
        do throws(SIPParseError) {
            for line in lines.dropFirst() {
                guard line.count <= limits.maxLineBytes else { throw .tooLarge("header line too long") }
                if !line.isEmpty, bytes[line.lowerBound].isSIPWhitespace {
                    // A continuation line: folded into the previous field with one space.
                    if folded == nil {
                        guard let pending else { throw .syntax("continuation line without a header") }
                        folded = []
                        for i in pending { folded!.append(bytes[i]) }
                    }
                    folded!.append(32)
                    var i = line.lowerBound
                    while i < line.upperBound, bytes[i].isSIPWhitespace { i += 1 }
                    while i < line.upperBound {
                        folded!.append(bytes[i])
                        i += 1
                    }
                    guard folded!.count <= limits.maxLineBytes else { throw .tooLarge("header line too long") }
                } else {
                    try flush()
                    if !line.isEmpty { pending = line }
                }
            }
            try flush()
        } catch {
            throw error.with(headers: SIPHeaders(fields))
        }
        return (startLine, SIPHeaders(fields))
    }

    /// The bytes as a String, nil when they are not UTF-8. Nearly every line of a SIP message
    /// is ASCII, which is UTF-8 as it stands: checked here with a loop the compiler
    /// specializes, instead of the standard library's generic validation (which looked up
    /// type metadata for every header line).
    private static func utf8String(_ bytes: Span<UInt8>, _ range: Range<Int>) -> String? {
        if bytes.allSatisfy(in: range, { $0 < 0x80 }) { return bytes.string(range) }
        return bytes.extracting(range).withUnsafeBufferPointer { String(validating: $0, as: UTF8.self) }
    }

    func makeMessage(startLine: String, headers: SIPHeaders, body: [UInt8]) throws(SIPParseError) -> SIPMessage {
        // Split at single spaces, as bytes (the grammar is bytes; Character splitting also ran
        // grapheme breaking over every start line).
        let line = Substring(startLine)
        if startLine.hasPrefix("SIP/") {
            // `SIP/2.0 <code> <reason phrase, which may hold spaces>`
            guard let space = line.byteIndex(of: 32), line[..<space] == "SIP/2.0" else {
                throw SIPParseError.syntax("bad status line").with(headers: headers)
            }
            let rest = line[line.after(space)...]
            let reasonSpace = rest.byteIndex(of: 32)
            let code = rest[..<(reasonSpace ?? rest.endIndex)]
            guard code.utf8.count == 3, let status = Int(code), (100...699).contains(status) else {
                throw SIPParseError.syntax("bad status code").with(headers: headers)
            }
            let reason = reasonSpace.map { String(rest[rest.after($0)...]) } ?? ""
            return .response(SIPResponse(status: status, reason: reason, headers: headers, body: body))
        }
        let parts = line.splitBytes(32)
        guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw SIPParseError.syntax("request line is not `METHOD URI SIP/2.0`").with(headers: headers)
        }
        let method: SIPMethod
        do { method = try SIPMethod(parsing: String(parts[0])) } catch { throw error.with(headers: headers) }
        guard parts[2] == "SIP/2.0" || parts[2].uppercased() == "SIP/2.0" else {
            if parts[2].uppercased().hasPrefix("SIP/") { throw SIPParseError.version(String(parts[2])).with(headers: headers) }
            throw SIPParseError.syntax("bad SIP version").with(headers: headers)
        }
        let uriText = parts[1]
        guard uriText.firstByte != UInt8(ascii: "<") else {
            throw SIPParseError.syntax("Request-URI in angle brackets").with(headers: headers)
        }
        let uri: SIPURI
        do { uri = try SIPURI(parsing: uriText) } catch { throw error.with(headers: headers) }
        return .request(SIPRequest(method: method, uri: uri, headers: headers, body: body))
    }

    /// The Content-Length value; nil when absent. Two different values or a non-number is an error.
    static func contentLength(_ headers: SIPHeaders) throws(SIPParseError) -> Int? {
        let values = headers.all("Content-Length")
        guard let first = values.first else { return nil }
        guard values.allSatisfy({ $0 == first }), first.utf8.count <= 9, first.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
              let n = Int(first)
        else {
            throw SIPParseError(code: "bad_content_length", message: "bad Content-Length", status: 400).with(headers: headers)
        }
        return n
    }

    /// Index of the end of the head and of the body's start: after CRLFCRLF (or a bare LFLF).
    static func findHeaderEnd(_ bytes: [UInt8], from start: Int) -> (Int, Int)? {
        var i = start
        while i + 1 < bytes.count {
            if bytes[i] == 10 {
                if bytes[i + 1] == 10 { return (i, i + 2) }
                if bytes[i + 1] == 13, i + 2 < bytes.count, bytes[i + 2] == 10 { return (i, i + 3) }
            }
            i += 1
        }
        return nil
    }
}

extension SIPParseError {
    /// The headers read before the error, so a server can still answer with a 4xx.
    public var partialHeaders: SIPHeaders? { _partial?.headers }

    func with(headers: SIPHeaders) -> SIPParseError {
        var copy = self
        copy._partial = PartialHeaders(headers: headers)
        return copy
    }
}

/// Boxed so that the error stays small.
final class PartialHeaders: Hashable, Sendable {
    let headers: SIPHeaders
    init(headers: SIPHeaders) { self.headers = headers }
    static func == (a: PartialHeaders, b: PartialHeaders) -> Bool { a.headers == b.headers }
    func hash(into hasher: inout Hasher) { hasher.combine(headers) }
}

/// Frames SIP messages on a byte stream (TCP) by Content-Length.
public struct SIPStreamFramer: Sendable {
    public let parser: SIPParser
    private var buffer: [UInt8] = []
    private var readIndex = 0
    /// CR/LF bytes skipped in a row between messages.
    private var blankRun = 0
    /// Keepalive pings seen and not yet taken.
    private var pings = 0

    public init(parser: SIPParser = SIPParser()) {
        self.parser = parser
    }

    public mutating func append<Bytes: Sequence>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        if readIndex > 0, readIndex >= buffer.count / 2 {
            buffer.removeFirst(readIndex)
            readIndex = 0
        }
        buffer.append(contentsOf: bytes)
    }

    public var bufferedBytes: Int { buffer.count - readIndex }

    /// The next complete message, nil when more bytes are needed. An error leaves the stream
    /// unusable: the caller answers it if it can and closes the connection.
    public mutating func next() throws(SIPParseError) -> SIPMessage? {
        // CRLFs before a start line are skipped (RFC 3261 §7.5); each CRLFCRLF among them,
        // even split over reads, is a keepalive ping (RFC 5626 §3.5.1).
        while readIndex < buffer.count, buffer[readIndex] == 13 || buffer[readIndex] == 10 {
            readIndex += 1
            blankRun += 1
            if blankRun == 4 {
                pings += 1
                blankRun = 0
            }
        }
        guard readIndex < buffer.count else { return nil }
        blankRun = 0
        guard let (headEnd, bodyStart) = SIPParser.findHeaderEnd(buffer, from: readIndex) else {
            if bufferedBytes > parser.limits.maxMessageBytes {
                throw .tooLarge("header block exceeds \(parser.limits.maxMessageBytes) bytes")
            }
            return nil
        }
        let (startLine, headers) = try parser.parseHead(buffer[readIndex..<headEnd])
        let length = try SIPParser.contentLength(headers) ?? 0
        guard bodyStart - readIndex + length <= parser.limits.maxMessageBytes else {
            throw SIPParseError.tooLarge("message exceeds \(parser.limits.maxMessageBytes) bytes").with(headers: headers)
        }
        guard buffer.count - bodyStart >= length else { return nil }
        let body = Array(buffer[bodyStart..<(bodyStart + length)])
        readIndex = bodyStart + length
        return try parser.makeMessage(startLine: startLine, headers: headers, body: body)
    }

    /// The keepalive pings (CRLFCRLF) seen by ``next()`` since the last call; each is to be
    /// answered with one CRLF, the pong.
    public mutating func takePings() -> Int {
        defer { pings = 0 }
        return pings
    }
}
