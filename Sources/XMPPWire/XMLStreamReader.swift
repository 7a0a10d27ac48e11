import CLibXML2

/// Reads an XMPP stream incrementally: the stream header, each complete top-level element, the
/// stream's end. Built on libxml2's push parser with SAX2 callbacks.
///
/// Feed it whatever the network delivers, in any split; the events are the same however the
/// bytes were cut into chunks:
///
/// ```swift
/// let reader = XMLStreamReader()
/// for event in try reader.feed(bytes) {
///     switch event {
///     case .streamOpened(let header): …   // answer with our header and features
///     case .stanza(let element): …        // message, presence, iq, or a nonza like <auth/>
///     case .streamClosed: …               // answer </stream:stream> and close
///     }
/// }
/// ```
///
/// After STARTTLS and after SASL success the stream restarts: call ``reset()`` (a new parser)
/// before feeding the bytes of the new stream.
///
/// **Restricted XML.** Comments, processing instructions (the XML declaration aside), any
/// DOCTYPE, and entity references other than the five predefined ones are `restricted-xml`
/// (RFC 6120 §11.1). The parser runs without `XML_PARSE_NOENT`, with `XML_PARSE_NONET`, and with
/// SAX callbacks that stop it at a DOCTYPE, an entity declaration or an entity reference, so no
/// entity is ever declared, expanded or loaded.
///
/// **Encoding.** The stream is UTF-8 whatever its XML declaration says (`XML_PARSE_IGNORE_ENC`).
/// Bytes are checked before libxml2 sees them: a byte sequence that is not UTF-8 is
/// `unsupported-encoding`, a NUL byte `not-well-formed` (so libxml2 never guesses UTF-16 or
/// UCS-4).
///
/// **Limits.** Depth, stanza size and attribute count are bounded by ``Limits``; exceeding one is
/// `policy-violation`. Input is handed to libxml2 in slices of at most 16 KiB and the size limit
/// is checked after each, so the memory held for an unfinished stanza is bounded by
/// ``Limits/maxStanzaBytes`` plus one slice, whatever the size of a feed.
///
/// **Errors.** The first ``XMLStreamError`` is final: the reader is unusable afterwards and every
/// later ``feed(_:)`` throws the same error, until ``reset()``. Events completed in the same
/// feed before the error are lost with ``feed(_:)``; ``feed(_:into:)`` keeps them.
///
/// **End of input.** There is no end-of-file call: a stream that stops without
/// `</stream:stream>` simply yields no ``XMLStreamEvent/streamClosed``. The listener treats the
/// TCP connection closing as the end of the stream.
///
/// Not thread-safe: use one reader from one event loop. All unsafe pointer code of the XMPP wire
/// layer lives in this type.
public final class XMLStreamReader {
    /// The bounds that keep a hostile stream from using unbounded memory or time.
    public struct Limits: Hashable, Sendable {
        /// The deepest element allowed, counting a stanza as depth 1 (the stream element is
        /// depth 0). libxml2 itself refuses more than 256 levels, so at most 250.
        public var maxDepth: Int
        /// The most bytes one top-level element may take on the wire, markup and text included,
        /// counted from the end of what preceded it. Also bounds the stream header and anything
        /// libxml2 buffers between stanzas.
        public var maxStanzaBytes: Int
        /// The most attributes one element may carry, namespace declarations included.
        public var maxAttributes: Int

        /// The default maximum depth.
        public static let defaultMaxDepth = 64
        /// The default maximum stanza size, 256 KiB.
        public static let defaultMaxStanzaBytes = 256 * 1024
        /// The default maximum number of attributes.
        public static let defaultMaxAttributes = 64

        /// Creates limits; each must be positive, and `maxDepth` at most 250.
        public init(
            maxDepth: Int = Limits.defaultMaxDepth,
            maxStanzaBytes: Int = Limits.defaultMaxStanzaBytes,
            maxAttributes: Int = Limits.defaultMaxAttributes
        ) {
            precondition((1...250).contains(maxDepth), "maxDepth must be in 1...250")
            precondition(maxStanzaBytes > 0, "maxStanzaBytes must be positive")
            precondition(maxAttributes > 0, "maxAttributes must be positive")
            self.maxDepth = maxDepth
            self.maxStanzaBytes = maxStanzaBytes
            self.maxAttributes = maxAttributes
        }
    }

    /// The most bytes handed to libxml2 at once; limits are checked after each slice.
    static let sliceBytes = 16 * 1024

    /// The limits this reader enforces.
    public let limits: Limits

    /// The libxml2 push parser; its user data is this reader, unretained (the reader owns it).
    private var parser: xmlParserCtxtPtr?
    /// The first error; once set, the reader stays failed until ``reset()``.
    private var failure: XMLStreamError?
    /// Checks that the input is UTF-8 before libxml2 sees it.
    private var utf8 = UTF8Validator()
    /// Events produced by the callbacks during one `xmlParseChunk` call.
    private var pendingEvents: [XMLStreamEvent] = []
    /// `true` once the stream element's start tag was read.
    private var rootSeen = false
    /// Open elements inside the stream element: 1 while a stanza's own content is being read.
    private var depth = 0
    /// The stanza under construction: the stanza itself first, then its open descendants.
    private var stack: [PartialElement] = []
    /// Bytes handed to the current parser.
    private var fedBytes = 0
    /// The stream offset from which the size of the current (or next) stanza is counted: the
    /// end of the last stream-level content libxml2 consumed.
    private var anchor = 0

    /// An element whose end tag has not been read yet, with its character data not yet merged.
    private struct PartialElement {
        var element: XMLElement
        var text: [UInt8] = []

        mutating func flushText() {
            guard !self.text.isEmpty else { return }
            self.element.append(text: String(decoding: self.text, as: UTF8.self))
            self.text.removeAll(keepingCapacity: true)
        }
    }

    /// Creates a reader for a new stream.
    public init(limits: Limits = Limits()) {
        self.limits = limits
        self.parser = nil
        self.parser = self.makeParser()
    }

    deinit {
        if let parser = self.parser {
            XMLStreamReader.free(parser)
        }
    }

    /// Starts over with a new parser for a restarted stream (after STARTTLS or SASL success).
    /// Clears a failure too.
    public func reset() {
        if let parser = self.parser {
            XMLStreamReader.free(parser)
        }
        self.parser = nil
        self.failure = nil
        self.utf8 = UTF8Validator()
        self.pendingEvents = []
        self.rootSeen = false
        self.depth = 0
        self.stack = []
        self.fedBytes = 0
        self.anchor = 0
        self.parser = self.makeParser()
    }

    /// Parses the next bytes of the stream and returns the events they complete, in order.
    ///
    /// - Throws: the stream error that ends the stream; once thrown, every later call throws it.
    public func feed(_ bytes: some Collection<UInt8>) throws(XMLStreamError) -> [XMLStreamEvent] {
        var events: [XMLStreamEvent] = []
        try self.feed(bytes, into: &events)
        return events
    }

    /// Parses the next bytes of the stream and appends the events they complete to `events`.
    ///
    /// When this throws, `events` still holds the events completed before the error.
    public func feed(
        _ bytes: some Collection<UInt8>,
        into events: inout [XMLStreamEvent]
    ) throws(XMLStreamError) {
        if let failure = self.failure {
            throw failure
        }
        let error: XMLStreamError? =
            bytes.withContiguousStorageIfAvailable { buffer in
                self.parse(UnsafeRawBufferPointer(buffer), into: &events)
            }
            ?? Array(bytes).withUnsafeBytes { buffer in
                self.parse(buffer, into: &events)
            }
        if let error {
            throw error
        }
    }

    // MARK: - Parsing

    /// Hands `buffer` to libxml2 slice by slice; returns the error that ends the stream, if any.
    private func parse(_ buffer: UnsafeRawBufferPointer, into events: inout [XMLStreamEvent]) -> XMLStreamError? {
        guard let parser = self.parser else {
            return self.fail(XMLStreamError(condition: .internalServerError, text: "no XML parser"))
        }
        var offset = 0
        while offset < buffer.count {
            let end = min(buffer.count, offset + XMLStreamReader.sliceBytes)
            var slice = UnsafeRawBufferPointer(rebasing: buffer[offset..<end])
            var encodingError: XMLStreamError?
            if let invalid = self.utf8.firstInvalidOffset(in: slice) {
                encodingError =
                    slice[invalid] == 0
                    ? .notWellFormed("NUL character at byte \(self.fedBytes + invalid)")
                    : .unsupportedEncoding("the stream is not UTF-8 (byte \(self.fedBytes + invalid))")
                // Parse what came before the bad byte first, so that an earlier error wins.
                slice = UnsafeRawBufferPointer(rebasing: slice[..<invalid])
            }
            if let base = slice.baseAddress, !slice.isEmpty {
                self.fedBytes += slice.count
                let status = xmlParseChunk(parser, base.assumingMemoryBound(to: CChar.self), Int32(slice.count), 0)
                events.append(contentsOf: self.pendingEvents)
                self.pendingEvents.removeAll(keepingCapacity: true)
                if let failure = self.failure {
                    return failure
                }
                if status != 0 {
                    return self.fail(.notWellFormed("XML error \(status)"))
                }
                if self.stack.isEmpty {
                    self.anchor = max(self.anchor, self.consumedBytes(parser))
                }
                if self.fedBytes - self.anchor > self.limits.maxStanzaBytes {
                    return self.fail(self.stanzaTooLarge())
                }
            }
            if let encodingError {
                return self.fail(encodingError)
            }
            offset = end
        }
        return nil
    }

    /// Records the first error and stops the parser (safe from within a SAX callback).
    @discardableResult
    private func fail(_ error: XMLStreamError) -> XMLStreamError {
        if self.failure == nil {
            self.failure = error
        }
        if let parser = self.parser {
            xmlStopParser(parser)
        }
        return self.failure ?? error
    }

    private func stanzaTooLarge() -> XMLStreamError {
        .policyViolation("stanza larger than \(self.limits.maxStanzaBytes) bytes (max_stanza_bytes)")
    }

    /// How many bytes of the stream libxml2 has consumed.
    private func consumedBytes(_ parser: xmlParserCtxtPtr) -> Int {
        Int(xmlByteConsumed(parser))
    }

    // MARK: - SAX events

    private func startElement(
        localName: UnsafePointer<xmlChar>?,
        namespace: UnsafePointer<xmlChar>?,
        namespaceCount: Int32,
        namespaces: UnsafeMutablePointer<UnsafePointer<xmlChar>?>?,
        attributeCount: Int32,
        attributes: UnsafeMutablePointer<UnsafePointer<xmlChar>?>?
    ) {
        let name = XMLStreamReader.string(localName)
        let namespace = namespace.map { XMLStreamReader.string($0) }
        if Int(attributeCount) + Int(namespaceCount) > self.limits.maxAttributes {
            self.fail(.policyViolation("more than \(self.limits.maxAttributes) attributes on <\(name)> (max_attributes)"))
            return
        }
        let parsedAttributes = XMLStreamReader.attributes(attributes, count: Int(attributeCount))

        guard self.rootSeen else {
            self.rootSeen = true
            guard namespace == XMLNamespace.streams else {
                self.fail(.invalidNamespace("the stream element must be in \(XMLNamespace.streams)"))
                return
            }
            guard name == "stream" else {
                self.fail(.badFormat("the root element must be <stream:stream>, not <\(name)>"))
                return
            }
            var declarations: [XMLNamespaceDeclaration] = []
            if let namespaces {
                for index in 0..<Int(namespaceCount) {
                    declarations.append(
                        XMLNamespaceDeclaration(
                            prefix: namespaces[2 * index].map { XMLStreamReader.string($0) },
                            namespace: XMLStreamReader.attributeValue(XMLStreamReader.string(namespaces[2 * index + 1]))
                        )
                    )
                }
            }
            if let parser = self.parser {
                self.anchor = self.consumedBytes(parser)
            }
            self.pendingEvents.append(
                .streamOpened(XMLStreamHeader(attributes: parsedAttributes, namespaceDeclarations: declarations))
            )
            return
        }

        self.depth += 1
        if self.depth > self.limits.maxDepth {
            self.fail(.policyViolation("elements nested deeper than \(self.limits.maxDepth) (max_depth)"))
            return
        }
        if !self.stack.isEmpty {
            self.stack[self.stack.count - 1].flushText()
        }
        self.stack.append(
            PartialElement(element: XMLElement(name: name, namespace: namespace, attributes: parsedAttributes))
        )
    }

    private func endElement() {
        guard self.depth > 0 else {
            self.pendingEvents.append(.streamClosed)
            return
        }
        self.depth -= 1
        guard var finished = self.stack.popLast() else { return }
        finished.flushText()
        if self.stack.isEmpty {
            if let parser = self.parser {
                let end = self.consumedBytes(parser)
                if end - self.anchor > self.limits.maxStanzaBytes {
                    self.fail(self.stanzaTooLarge())
                    return
                }
                self.anchor = end
            }
            self.pendingEvents.append(.stanza(finished.element))
        } else {
            self.stack[self.stack.count - 1].element.append(finished.element)
        }
    }

    private func characters(_ bytes: UnsafePointer<xmlChar>?, count: Int32) {
        guard let bytes, count > 0 else { return }
        let buffer = UnsafeBufferPointer(start: bytes, count: Int(count))
        if self.stack.isEmpty {
            // Between stanzas only whitespace (keepalives, pretty-printing) is acceptable.
            let isWhitespace = buffer.allSatisfy { $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }
            guard isWhitespace else {
                self.fail(.badFormat("character data between stanzas"))
                return
            }
            if let parser = self.parser {
                self.anchor = max(self.anchor, self.consumedBytes(parser))
            }
            return
        }
        self.stack[self.stack.count - 1].text.append(contentsOf: buffer)
    }

    private func structuredError(_ error: xmlErrorPtr) {
        let level = error.pointee.level
        guard level == XML_ERR_ERROR || level == XML_ERR_FATAL else { return }
        let code = Int(error.pointee.code)
        let message = error.pointee.message.map { String(cString: $0) } ?? "XML error \(code)"
        let text = message.trimmingWhitespace
        let result: XMLStreamError
        if Int(error.pointee.domain) == Int(XML_FROM_NAMESPACE.rawValue),
            code == Int(XML_NS_ERR_UNDEFINED_NAMESPACE.rawValue)
        {
            result = .badNamespacePrefix(text)
        } else if self.cursorIsAtMarkupDeclaration() {
            // `<!DOCTYPE` inside the stream element reaches libxml2 as broken content.
            result = .restrictedXML("DOCTYPE or markup declaration")
        } else {
            result = .notWellFormed(text)
        }
        // Not `fail(_:)`: stopping the parser while libxml2 is reporting its own error is not
        // safe, and a fatal error disables further callbacks anyway.
        if self.failure == nil {
            self.failure = result
        }
    }

    /// Whether libxml2's cursor is at `<!DOCTYPE`, `<!ENTITY`, `<!ELEMENT`, `<!ATTLIST` or
    /// `<!NOTATION`.
    private func cursorIsAtMarkupDeclaration() -> Bool {
        guard let input = self.parser?.pointee.input, let cursor = input.pointee.cur,
            let end = input.pointee.end
        else { return false }
        let available = end - cursor
        guard available >= 3, cursor[0] == UInt8(ascii: "<"), cursor[1] == UInt8(ascii: "!") else {
            return false
        }
        let keywords = ["DOCTYPE", "ENTITY", "ELEMENT", "ATTLIST", "NOTATION"]
        let rest = UnsafeBufferPointer(start: cursor + 2, count: min(available - 2, 8))
        return keywords.contains { keyword in
            let utf8 = Array(keyword.utf8)
            // A cut-off keyword at the end of the buffer counts: it is not well-formed either way.
            let length = min(utf8.count, rest.count)
            return length > 0 && rest.prefix(length).elementsEqual(utf8.prefix(length))
        }
    }

    // MARK: - libxml2

    /// `xmlInitParser` once per process, before the first parser is created.
    private static let libraryInitialized: Bool = {
        xmlInitParser()
        return true
    }()

    private func makeParser() -> xmlParserCtxtPtr? {
        precondition(XMLStreamReader.libraryInitialized)
        var handler = xmlSAXHandler()
        handler.initialized = UInt32(XML_SAX2_MAGIC)
        handler.startElementNs = { context, localName, _, uri, namespaceCount, namespaces, attributeCount, _, attributes in
            XMLStreamReader.reader(context)?.startElement(
                localName: localName,
                namespace: uri,
                namespaceCount: namespaceCount,
                namespaces: namespaces,
                attributeCount: attributeCount,
                attributes: attributes
            )
        }
        handler.endElementNs = { context, _, _, _ in
            XMLStreamReader.reader(context)?.endElement()
        }
        handler.characters = { context, bytes, count in
            XMLStreamReader.reader(context)?.characters(bytes, count: count)
        }
        handler.ignorableWhitespace = { context, bytes, count in
            XMLStreamReader.reader(context)?.characters(bytes, count: count)
        }
        handler.cdataBlock = { context, bytes, count in
            XMLStreamReader.reader(context)?.characters(bytes, count: count)
        }
        handler.comment = { context, _ in
            XMLStreamReader.reader(context)?.fail(.restrictedXML("comment"))
        }
        handler.processingInstruction = { context, _, _ in
            XMLStreamReader.reader(context)?.fail(.restrictedXML("processing instruction"))
        }
        handler.internalSubset = { context, _, _, _ in
            XMLStreamReader.reader(context)?.fail(.restrictedXML("DOCTYPE"))
        }
        handler.externalSubset = { context, _, _, _ in
            XMLStreamReader.reader(context)?.fail(.restrictedXML("DOCTYPE"))
        }
        handler.entityDecl = { context, _, _, _, _, _ in
            XMLStreamReader.reader(context)?.fail(.restrictedXML("entity declaration"))
        }
        handler.getEntity = { context, name in
            XMLStreamReader.reader(context)?.fail(.restrictedXML("entity reference &\(XMLStreamReader.string(name));"))
            return nil
        }
        handler.getParameterEntity = { context, name in
            XMLStreamReader.reader(context)?.fail(.restrictedXML("parameter entity reference %\(XMLStreamReader.string(name));"))
            return nil
        }
        handler.reference = { context, name in
            XMLStreamReader.reader(context)?.fail(.restrictedXML("entity reference &\(XMLStreamReader.string(name));"))
        }
        handler.resolveEntity = { context, _, _ in
            XMLStreamReader.reader(context)?.fail(.restrictedXML("external entity"))
            return nil
        }
        handler.serror = { context, error in
            guard let error else { return }
            XMLStreamReader.reader(context)?.structuredError(error)
        }

        let userData = Unmanaged.passUnretained(self).toOpaque()
        guard let parser = xmlCreatePushParserCtxt(&handler, userData, nil, 0, nil) else {
            self.failure = XMLStreamError(condition: .internalServerError, text: "no XML parser")
            return nil
        }
        // NONET: never load anything. IGNORE_ENC: the stream is UTF-8 whatever the XML
        // declaration says. Never NOENT: it would substitute (and load) entities.
        let options = XML_PARSE_NONET.rawValue | XML_PARSE_IGNORE_ENC.rawValue
        xmlCtxtUseOptions(parser, Int32(options))
        return parser
    }

    private static func free(_ parser: xmlParserCtxtPtr) {
        if let document = parser.pointee.myDoc {
            xmlFreeDoc(document)
            parser.pointee.myDoc = nil
        }
        xmlFreeParserCtxt(parser)
    }

    /// The reader behind a callback's user data, or `nil` once it has failed (libxml2 may still
    /// report events after a non-fatal error; they are ignored).
    private static func reader(_ context: UnsafeMutableRawPointer?) -> XMLStreamReader? {
        guard let context else { return nil }
        let reader = Unmanaged<XMLStreamReader>.fromOpaque(context).takeUnretainedValue()
        return reader.failure == nil ? reader : nil
    }

    private static func string(_ pointer: UnsafePointer<xmlChar>?) -> String {
        guard let pointer else { return "" }
        return String(cString: pointer)
    }

    /// SAX2 attributes: five pointers each (local name, prefix, URI, value start, value end).
    private static func attributes(
        _ pointers: UnsafeMutablePointer<UnsafePointer<xmlChar>?>?,
        count: Int
    ) -> [XMLAttribute] {
        guard let pointers, count > 0 else { return [] }
        var attributes: [XMLAttribute] = []
        attributes.reserveCapacity(count)
        for index in 0..<count {
            let base = 5 * index
            let localName = XMLStreamReader.string(pointers[base])
            let prefix = pointers[base + 1].map { XMLStreamReader.string($0) }
            let namespace = pointers[base + 2].map { XMLStreamReader.string($0) }
            var value = ""
            if let start = pointers[base + 3], let end = pointers[base + 4], end > start {
                value = String(decoding: UnsafeBufferPointer(start: start, count: end - start), as: UTF8.self)
            }
            attributes.append(
                XMLAttribute(
                    prefix.map { "\($0):\(localName)" } ?? localName,
                    XMLStreamReader.attributeValue(value),
                    namespace: namespace
                )
            )
        }
        return attributes
    }

    /// Without entity substitution, libxml2 hands over `&amp;` and `&#38;` in attribute values
    /// as `&#38;` (every other reference is resolved, and any other `&` is an error), so each `&`
    /// in a value starts `&#38;`.
    private static func attributeValue(_ raw: String) -> String {
        guard raw.utf8.contains(UInt8(ascii: "&")) else { return raw }
        return raw.replacing("&#38;", with: "&")
    }
}

@available(*, unavailable)
extension XMLStreamReader: Sendable {}

extension String {
    /// The string without leading and trailing ASCII whitespace (libxml2 messages end in `\n`).
    fileprivate var trimmingWhitespace: String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\n" || $0 == "\r" || $0 == "\t" }
        guard let first = self.firstIndex(where: { !isSpace($0) }),
            let last = self.lastIndex(where: { !isSpace($0) })
        else { return "" }
        return String(self[first...last])
    }
}
