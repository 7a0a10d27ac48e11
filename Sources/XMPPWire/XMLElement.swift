/// Namespace names that the XMPP wire layer knows by heart.
public enum XMLNamespace {
    /// The stream namespace, bound to the `stream:` prefix on `<stream:stream>`.
    public static let streams = "http://etherx.jabber.org/streams"
    /// The content namespace of client-to-server streams: the default namespace of their stanzas.
    public static let client = "jabber:client"
    /// The content namespace of server-to-server streams.
    public static let server = "jabber:server"
    /// The namespace that the reserved `xml:` prefix is bound to (`xml:lang`, `xml:space`).
    public static let xml = "http://www.w3.org/XML/1998/namespace"
}

/// One attribute of an ``XMLElement``.
///
/// `name` is the qualified name as written (`type`, `xml:lang`); `namespace` is the namespace its
/// prefix is bound to, or `nil` for an unprefixed attribute (which, in XML, is in no namespace
/// whatever the element's default namespace).
public struct XMLAttribute: Hashable, Sendable {
    /// The qualified name, e.g. `to` or `xml:lang`.
    public var name: String
    /// The namespace the prefix of ``name`` is bound to; `nil` for an unprefixed attribute.
    public var namespace: String?
    /// The value, with references resolved and whitespace normalized as XML prescribes.
    public var value: String

    /// Creates an attribute. A name with the `xml:` prefix is put in ``XMLNamespace/xml`` when no
    /// namespace is given.
    public init(_ name: String, _ value: String, namespace: String? = nil) {
        self.name = name
        self.value = value
        if namespace == nil, name.hasPrefix("xml:") {
            self.namespace = XMLNamespace.xml
        } else {
            self.namespace = namespace
        }
    }

    /// The part of ``name`` after the prefix, e.g. `lang` for `xml:lang`.
    public var localName: String {
        guard let colon = self.name.firstIndex(of: ":") else { return self.name }
        return String(self.name[self.name.index(after: colon)...])
    }

    /// The prefix of ``name``, e.g. `xml` for `xml:lang`; `nil` when unprefixed.
    public var prefix: String? {
        guard let colon = self.name.firstIndex(of: ":") else { return nil }
        return String(self.name[..<colon])
    }
}

/// An XML element as a small value tree: what ``XMLStreamReader`` yields for each stanza and what
/// ``XMLSerializer`` writes.
///
/// Names are namespace-resolved: `name` is the local name and `namespace` the namespace name
/// (for a stanza of a client stream, the inherited default namespace `jabber:client`; for
/// `<stream:error>`, ``XMLNamespace/streams``). Prefixes of elements are not kept, since they
/// carry no meaning. Adjacent character data — text, character and entity references, CDATA
/// sections — is merged into one ``Node/text(_:)`` node, so a tree does not depend on how the
/// bytes were split or escaped.
public struct XMLElement: Hashable, Sendable {
    /// A child of an element: an element or a run of character data.
    public enum Node: Hashable, Sendable {
        /// A child element.
        case element(XMLElement)
        /// Character data, unescaped.
        case text(String)
    }

    /// The local name, e.g. `message`.
    public var name: String
    /// The namespace name, e.g. `jabber:client`; `nil` for an element in no namespace.
    public var namespace: String?
    /// The attributes in document order, namespace declarations excluded.
    public var attributes: [XMLAttribute]
    /// Child elements and text, in document order.
    public var children: [Node]

    /// Creates an element.
    public init(
        name: String,
        namespace: String? = nil,
        attributes: [XMLAttribute] = [],
        children: [Node] = []
    ) {
        self.name = name
        self.namespace = namespace
        self.attributes = attributes
        self.children = children
    }

    /// The value of the attribute with this qualified name (`type`, `xml:lang`), if any.
    public func attribute(_ name: String) -> String? {
        self.attributes.first { $0.name == name }?.value
    }

    /// The value of the attribute with this local name in this namespace (`nil`: unprefixed).
    public func attribute(_ localName: String, namespace: String?) -> String? {
        self.attributes.first { $0.namespace == namespace && $0.localName == localName }?.value
    }

    /// Sets, replaces or (with `nil`) removes the attribute with this qualified name.
    public mutating func setAttribute(_ name: String, _ value: String?) {
        let index = self.attributes.firstIndex { $0.name == name }
        switch (index, value) {
        case (let index?, let value?): self.attributes[index].value = value
        case (let index?, nil): self.attributes.remove(at: index)
        case (nil, let value?): self.attributes.append(XMLAttribute(name, value))
        case (nil, nil): break
        }
    }

    /// The child elements, in order, without the text between them.
    public var elements: [XMLElement] {
        self.children.compactMap { node -> XMLElement? in
            if case .element(let element) = node { element } else { nil }
        }
    }

    /// The first child element with this local name, in any namespace.
    public func child(named name: String) -> XMLElement? {
        for case .element(let element) in self.children where element.name == name {
            return element
        }
        return nil
    }

    /// The first child element with this local name and namespace (`nil`: no namespace).
    public func child(named name: String, namespace: String?) -> XMLElement? {
        for case .element(let element) in self.children
        where element.name == name && element.namespace == namespace {
            return element
        }
        return nil
    }

    /// The concatenated character data of the direct children (not of grandchildren).
    public var text: String {
        var text = ""
        for case .text(let run) in self.children {
            text += run
        }
        return text
    }

    /// Appends a child element.
    public mutating func append(_ element: XMLElement) {
        self.children.append(.element(element))
    }

    /// Appends character data, merged with a text node that ends the children, if any.
    public mutating func append(text: String) {
        guard !text.isEmpty else { return }
        if case .text(let last)? = self.children.last {
            self.children[self.children.count - 1] = .text(last + text)
        } else {
            self.children.append(.text(text))
        }
    }
}
