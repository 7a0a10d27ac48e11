/// What ``XMLStreamReader`` reports as the bytes of an XMPP stream arrive.
public enum XMLStreamEvent: Hashable, Sendable {
    /// The stream header, `<stream:stream …>`, was read completely.
    case streamOpened(XMLStreamHeader)
    /// A complete top-level element (a stanza, or a nonza such as `<starttls/>` or `<auth>`).
    case stanza(XMLElement)
    /// The closing `</stream:stream>` tag was read.
    case streamClosed
}

/// A namespace declaration (`xmlns='…'` or `xmlns:prefix='…'`) on the stream header.
public struct XMLNamespaceDeclaration: Hashable, Sendable {
    /// The declared prefix, e.g. `stream`; `nil` for the default namespace (`xmlns='…'`).
    public var prefix: String?
    /// The namespace name, e.g. `jabber:client`.
    public var namespace: String

    /// Creates a declaration.
    public init(prefix: String?, namespace: String) {
        self.prefix = prefix
        self.namespace = namespace
    }
}

/// The opening `<stream:stream>` tag: its attributes and namespace declarations.
///
/// The reader has checked that the element is `stream` in ``XMLNamespace/streams``; whether the
/// content namespace (``defaultNamespace``) is acceptable, e.g. `jabber:client`, is for the
/// listener to decide (`invalid-namespace` otherwise).
public struct XMLStreamHeader: Hashable, Sendable {
    /// The attributes in document order (`to`, `from`, `version`, `xml:lang`, …).
    public var attributes: [XMLAttribute]
    /// The namespace declarations in document order.
    public var namespaceDeclarations: [XMLNamespaceDeclaration]

    /// Creates a header.
    public init(attributes: [XMLAttribute], namespaceDeclarations: [XMLNamespaceDeclaration]) {
        self.attributes = attributes
        self.namespaceDeclarations = namespaceDeclarations
    }

    /// The value of the attribute with this qualified name (`to`, `version`, `xml:lang`), if any.
    public func attribute(_ name: String) -> String? {
        self.attributes.first { $0.name == name }?.value
    }

    /// The default namespace declared on the header (the content namespace), if any.
    public var defaultNamespace: String? {
        self.namespaceDeclarations.first { $0.prefix == nil }?.namespace
    }
}
