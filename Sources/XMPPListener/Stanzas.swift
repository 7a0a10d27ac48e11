import Foundation
import SwitchboardCore
import XMPPWire

/// Namespaces the listener speaks.
enum NS {
    static let client = XMLNamespace.client
    static let streams = XMLNamespace.streams
    static let streamErrors = "urn:ietf:params:xml:ns:xmpp-streams"
    static let stanzaErrors = "urn:ietf:params:xml:ns:xmpp-stanzas"
    static let sasl = "urn:ietf:params:xml:ns:xmpp-sasl"
    static let tls = "urn:ietf:params:xml:ns:xmpp-tls"
    static let bind = "urn:ietf:params:xml:ns:xmpp-bind"
    static let session = "urn:ietf:params:xml:ns:xmpp-session"
    static let roster = "jabber:iq:roster"
    static let ping = "urn:xmpp:ping"
    static let discoInfo = "http://jabber.org/protocol/disco#info"
    static let discoItems = "http://jabber.org/protocol/disco#items"
    static let muc = "http://jabber.org/protocol/muc"
    static let mucUser = "http://jabber.org/protocol/muc#user"
    static let sid = "urn:xmpp:sid:0"
    static let delay = "urn:xmpp:delay"
    static let chatStates = "http://jabber.org/protocol/chatstates"
}

/// A bare or full JID: `local@domain/resource`.
struct JID: Hashable, Sendable, CustomStringConvertible {
    var local: String?
    var domain: String
    var resource: String?

    init(local: String?, domain: String, resource: String? = nil) {
        self.local = local
        self.domain = domain
        self.resource = resource
    }

    /// Parses a JID; nil when it is malformed (RFC 7622, without the full PRECIS rules).
    init?(_ text: String) {
        guard !text.isEmpty, text.utf8.count <= 3071 else { return nil }
        var rest = Substring(text)
        var resource: String?
        if let slash = rest.firstIndex(of: "/") {
            resource = String(rest[rest.index(after: slash)...])
            rest = rest[..<slash]
            guard !resource!.isEmpty else { return nil }
        }
        var local: String?
        if let at = rest.firstIndex(of: "@") {
            local = String(rest[..<at])
            rest = rest[rest.index(after: at)...]
            guard !local!.isEmpty else { return nil }
        }
        guard !rest.isEmpty, !rest.contains("@") else { return nil }
        self.init(local: local, domain: rest.lowercased(), resource: resource)
    }

    var bare: JID { JID(local: local, domain: domain) }

    var description: String {
        var text = domain
        if let local { text = "\(local)@\(text)" }
        if let resource { text += "/\(resource)" }
        return text
    }
}

/// Small builders for the elements the listener sends.
enum Stanza {
    static func element(_ name: String, _ namespace: String? = NS.client, _ attributes: [(String, String)] = [],
                        _ children: [XMLElement] = [], text: String? = nil) -> XMLElement {
        var element = XMLElement(name: name, namespace: namespace, attributes: attributes.map { XMLAttribute($0.0, $0.1) })
        for child in children { element.append(child) }
        if let text { element.children.append(.text(text)) }
        return element
    }

    /// `<stream:error><condition/><text/></stream:error>`.
    static func streamError(_ condition: String, text: String?) -> XMLElement {
        var children = [element(condition, NS.streamErrors)]
        if let text { children.append(element("text", NS.streamErrors, text: text)) }
        return element("error", NS.streams, [], children)
    }

    /// An error reply to `stanza` (RFC 6120 §8.3): same name and id, to/from swapped.
    static func error(replyingTo stanza: XMLElement, type: String, condition: String, text: String? = nil,
                      from: String? = nil) -> XMLElement {
        var attributes: [(String, String)] = [("type", "error")]
        if let id = stanza.attribute("id") { attributes.append(("id", id)) }
        if let to = from ?? stanza.attribute("to") { attributes.append(("from", to)) }
        if let sender = stanza.attribute("from") { attributes.append(("to", sender)) }
        var errorChildren = [element(condition, NS.stanzaErrors)]
        if let text { errorChildren.append(element("text", NS.stanzaErrors, text: text)) }
        return element(stanza.name, NS.client, attributes, [element("error", NS.client, [("type", type)], errorChildren)])
    }

    /// `<delay xmlns='urn:xmpp:delay' stamp='…' from='…'/>` for history.
    static func delay(_ millis: Int64, from: String) -> XMLElement {
        element("delay", NS.delay, [("stamp", timestamp(millis)), ("from", from)])
    }

    /// XEP-0082 date-time in UTC with milliseconds.
    static func timestamp(_ millis: Int64) -> String {
        let date = Date(timeIntervalSince1970: Double(millis) / 1000)
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date)
    }

    /// Parses a XEP-0082 date-time (`since` of MUC history) into ms since the epoch.
    static func parseTimestamp(_ text: String) -> Int64? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970 * 1000) }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text).map { Int64($0.timeIntervalSince1970 * 1000) }
    }
}
