/// Writes ``XMLElement`` trees and the stream header as XML text, escaped correctly.
///
/// An element is written in the context of the stream it goes into: ``defaultNamespace`` is the
/// default namespace in scope there (`jabber:client` inside a client stream) and ``prefixes``
/// the prefixes declared on the stream header (`stream` for ``XMLNamespace/streams``). An element
/// in the in-scope default namespace is written without a declaration, one whose namespace has a
/// declared prefix is written with that prefix (`<stream:features>`), and any other gets an
/// `xmlns='…'` that its descendants inherit. Prefixed attributes (other than `xml:`) get an
/// `xmlns:prefix='…'` on their element.
///
/// Character data and attribute values are escaped so that ``XMLStreamReader`` reads back the
/// same tree; characters that XML 1.0 does not allow at all (U+0000–U+0008, U+000B, U+000C,
/// U+000E–U+001F, U+FFFE, U+FFFF) are replaced with U+FFFD, since they cannot be written even
/// as character references.
public struct XMLSerializer: Sendable {
    /// The default namespace in scope where elements are written.
    public var defaultNamespace: String?
    /// Namespace name → prefix, for the prefixes declared where elements are written.
    public var prefixes: [String: String]

    /// Creates a serializer for elements written where `defaultNamespace` and `prefixes` are in
    /// scope.
    public init(defaultNamespace: String? = nil, prefixes: [String: String] = [:]) {
        self.defaultNamespace = defaultNamespace
        self.prefixes = prefixes
    }

    /// For stanzas inside a stream opened with ``streamHeader(contentNamespace:attributes:)``
    /// with the `jabber:client` content namespace.
    public static let clientStream = XMLSerializer(
        defaultNamespace: XMLNamespace.client,
        prefixes: [XMLNamespace.streams: "stream"]
    )

    /// The element as XML text.
    public func serialize(_ element: XMLElement) -> String {
        var output = ""
        self.serialize(element, into: &output)
        return output
    }

    /// Appends the element as XML text to `output`.
    public func serialize(_ element: XMLElement, into output: inout String) {
        Self.write(element, defaultNamespace: self.defaultNamespace, prefixes: self.prefixes, into: &output)
    }

    /// The opening of a stream: the XML declaration and `<stream:stream>` with the content
    /// namespace as default namespace, the `stream` prefix, then `attributes` (`from`, `id`,
    /// `version`, `xml:lang`, …) in order.
    public static func streamHeader(
        contentNamespace: String = XMLNamespace.client,
        attributes: [XMLAttribute]
    ) -> String {
        var output = "<?xml version='1.0'?><stream:stream xmlns='"
        output += Self.escapeAttributeValue(contentNamespace)
        output += "' xmlns:stream='\(XMLNamespace.streams)'"
        for attribute in attributes {
            output += " \(attribute.name)='\(Self.escapeAttributeValue(attribute.value))'"
        }
        output += ">"
        return output
    }

    /// The closing of a stream.
    public static let streamFooter = "</stream:stream>"

    /// Character data escaped for element content: `&`, `<` and `>` as entity references, CR as
    /// `&#13;` (a raw CR would be read back as LF), disallowed characters replaced with U+FFFD.
    public static func escapeText(_ text: String) -> String {
        self.escape(text, isAttribute: false)
    }

    /// An attribute value escaped for either quote: `&`, `<`, `>`, `"` and `'` as entity
    /// references, TAB, LF and CR as character references (raw ones would be read back as
    /// spaces), disallowed characters replaced with U+FFFD.
    public static func escapeAttributeValue(_ value: String) -> String {
        self.escape(value, isAttribute: true)
    }

    /// Whether XML 1.0 allows the character at all (its `Char` production).
    public static func isAllowed(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09, 0x0A, 0x0D, 0x20...0xD7FF, 0xE000...0xFFFD, 0x10000...0x10FFFF: true
        default: false
        }
    }

    // MARK: - Implementation

    private static func escape(_ string: String, isAttribute: Bool) -> String {
        let needsWork = string.unicodeScalars.contains { scalar in
            switch scalar {
            case "&", "<", ">", "\r": true
            case "\"", "'", "\t", "\n": isAttribute
            default: !self.isAllowed(scalar)
            }
        }
        guard needsWork else { return string }
        var output = ""
        output.reserveCapacity(string.utf8.count + 16)
        for scalar in string.unicodeScalars {
            switch scalar {
            case "&": output += "&amp;"
            case "<": output += "&lt;"
            case ">": output += "&gt;"
            case "\r": output += "&#13;"
            case "\"" where isAttribute: output += "&quot;"
            case "'" where isAttribute: output += "&apos;"
            case "\t" where isAttribute: output += "&#9;"
            case "\n" where isAttribute: output += "&#10;"
            default:
                output.unicodeScalars.append(self.isAllowed(scalar) ? scalar : "\u{FFFD}")
            }
        }
        return output
    }

    private static func write(
        _ element: XMLElement,
        defaultNamespace: String?,
        prefixes: [String: String],
        into output: inout String
    ) {
        var scope = prefixes
        var childDefault = defaultNamespace
        var declarations = ""
        let qualifiedName: String
        if element.namespace == defaultNamespace {
            qualifiedName = element.name
        } else if let namespace = element.namespace, let prefix = prefixes[namespace] {
            qualifiedName = "\(prefix):\(element.name)"
        } else {
            qualifiedName = element.name
            declarations += " xmlns='\(self.escapeAttributeValue(element.namespace ?? ""))'"
            childDefault = element.namespace
        }

        var attributes = ""
        for attribute in element.attributes {
            let name: String
            if let namespace = attribute.namespace {
                if namespace == XMLNamespace.xml {
                    name = "xml:\(attribute.localName)"
                } else {
                    var prefix = scope[namespace] ?? attribute.prefix ?? "ns"
                    if prefix == "xml" || prefix == "xmlns" {
                        prefix = "ns"
                    }
                    if scope[namespace] != prefix {
                        // The prefix now means this namespace here and below.
                        scope = scope.filter { $0.value != prefix }
                        scope[namespace] = prefix
                        declarations += " xmlns:\(prefix)='\(self.escapeAttributeValue(namespace))'"
                    }
                    name = "\(prefix):\(attribute.localName)"
                }
            } else {
                name = attribute.localName
            }
            attributes += " \(name)='\(self.escapeAttributeValue(attribute.value))'"
        }

        output += "<"
        output += qualifiedName
        output += declarations
        output += attributes
        guard !element.children.isEmpty else {
            output += "/>"
            return
        }
        output += ">"
        for child in element.children {
            switch child {
            case .element(let child):
                self.write(child, defaultNamespace: childDefault, prefixes: scope, into: &output)
            case .text(let text):
                output += self.escapeText(text)
            }
        }
        output += "</\(qualifiedName)>"
    }
}
