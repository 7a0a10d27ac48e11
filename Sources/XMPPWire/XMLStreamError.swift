/// Why an XMPP stream cannot be read further: an RFC 6120 §4.9 stream error.
///
/// Every ``XMLStreamError`` is fatal for the stream: the listener sends
/// `<stream:error><condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text>…</text></stream:error>`
/// and closes. ``Condition`` is an open set of names, so conditions can be added without breaking
/// callers.
public struct XMLStreamError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The defined condition, named as on the wire.
    public var condition: Condition
    /// A human-readable explanation for the `<text/>` child; never contains markup of its own
    /// (the serializer escapes it anyway).
    public var text: String

    /// Creates an error.
    public init(condition: Condition, text: String) {
        self.condition = condition
        self.text = text
    }

    /// An RFC 6120 stream error condition, e.g. `not-well-formed`.
    public struct Condition: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        /// The element name of the condition, as on the wire.
        public var rawValue: String

        /// Creates a condition from its element name.
        public init(rawValue: String) {
            self.rawValue = rawValue
        }

        /// The element name of the condition.
        public var description: String { self.rawValue }

        /// XML that XMPP forbids: a comment, a processing instruction, a DOCTYPE / DTD, or an
        /// entity reference other than the five predefined ones (RFC 6120 §11.1).
        public static let restrictedXML = Condition(rawValue: "restricted-xml")
        /// Input that is not well-formed XML (RFC 6120 §4.9.3.13).
        public static let notWellFormed = Condition(rawValue: "not-well-formed")
        /// A limit was exceeded: depth, stanza size or attribute count (RFC 6120 §4.9.3.14).
        public static let policyViolation = Condition(rawValue: "policy-violation")
        /// The stream element is not in ``XMLNamespace/streams``, or the content namespace is not
        /// supported (RFC 6120 §4.9.3.10).
        public static let invalidNamespace = Condition(rawValue: "invalid-namespace")
        /// XML that cannot be processed though well-formed, e.g. a root element that is not
        /// `<stream>` or character data between stanzas (RFC 6120 §4.9.3.1).
        public static let badFormat = Condition(rawValue: "bad-format")
        /// A prefix without a namespace declaration (RFC 6120 §4.9.3.2).
        public static let badNamespacePrefix = Condition(rawValue: "bad-namespace-prefix")
        /// Bytes that are not UTF-8 (RFC 6120 §4.9.3.22).
        public static let unsupportedEncoding = Condition(rawValue: "unsupported-encoding")
        /// The reader could not work at all (libxml2 could not allocate a parser).
        public static let internalServerError = Condition(rawValue: "internal-server-error")
    }

    /// `restricted-xml` with this text.
    public static func restrictedXML(_ text: String) -> XMLStreamError {
        XMLStreamError(condition: .restrictedXML, text: text)
    }

    /// `not-well-formed` with this text.
    public static func notWellFormed(_ text: String) -> XMLStreamError {
        XMLStreamError(condition: .notWellFormed, text: text)
    }

    /// `policy-violation` with this text, which names the limit.
    public static func policyViolation(_ text: String) -> XMLStreamError {
        XMLStreamError(condition: .policyViolation, text: text)
    }

    /// `invalid-namespace` with this text.
    public static func invalidNamespace(_ text: String) -> XMLStreamError {
        XMLStreamError(condition: .invalidNamespace, text: text)
    }

    /// `bad-format` with this text.
    public static func badFormat(_ text: String) -> XMLStreamError {
        XMLStreamError(condition: .badFormat, text: text)
    }

    /// `bad-namespace-prefix` with this text.
    public static func badNamespacePrefix(_ text: String) -> XMLStreamError {
        XMLStreamError(condition: .badNamespacePrefix, text: text)
    }

    /// `unsupported-encoding` with this text.
    public static func unsupportedEncoding(_ text: String) -> XMLStreamError {
        XMLStreamError(condition: .unsupportedEncoding, text: text)
    }

    /// `condition: text`.
    public var description: String {
        "\(self.condition.rawValue): \(self.text)"
    }
}
