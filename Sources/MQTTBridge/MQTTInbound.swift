import Foundation
import SwitchboardCore

/// Why a device's message was dropped (the `reason` label of the drop counter).
enum MQTTDropReason: String, Error, Sendable, CaseIterable {
    case invalidTopic = "invalid_topic"
    case invalidRoom = "invalid_room"
    case invalidSender = "invalid_sender"
    case invalidUTF8 = "invalid_utf8"
    case payloadTooLarge = "payload_too_large"
    case badJSON = "bad_json"
    case invalidKind = "invalid_kind"
    case duplicate = "duplicate"
    case rejected = "rejected"
    case queueOverflow = "queue_overflow"
}

/// A device message mapped to what the bus needs.
struct MQTTInbound: Equatable, Sendable {
    var room: RoomName
    var sender: UserName
    var body: String
    var kind: EnvelopeKind
    var clientID: String?

    /// Kinds a device may send; the rest are made by the server.
    static let sendableKinds: Set<EnvelopeKind> = [.chat, .receipt, .reaction, .edit, .retract, .presence]

    /// Maps `<prefix>/rooms/<room>/in/<sender>` and its payload: UTF-8 text (a chat
    /// body), or a JSON object `{"body", "kind"?, "client_id"?}` when it starts with `{`.
    static func parse(topic: String, payload: [UInt8], prefix: String, maxPayloadBytes: Int) -> Result<MQTTInbound, MQTTDropReason> {
        guard let (roomLevel, senderLevel) = topicLevels(topic, prefix: prefix) else { return .failure(.invalidTopic) }
        // Names must arrive as the canonical lower-case form: a topic is a device's identity.
        guard let room = RoomName(String(roomLevel)), room.rawValue == roomLevel, case .group = room.scope else {
            return .failure(.invalidRoom)
        }
        guard let sender = UserName(String(senderLevel)), sender.rawValue == senderLevel else {
            return .failure(.invalidSender)
        }
        guard payload.count <= maxPayloadBytes else { return .failure(.payloadTooLarge) }
        guard let text = String(validating: payload, as: UTF8.self) else { return .failure(.invalidUTF8) }
        guard text.first == "{" else {
            return .success(MQTTInbound(room: room, sender: sender, body: text, kind: .chat, clientID: nil))
        }
        struct Object: Decodable {
            var body: String
            var kind: String?
            var clientID: String?
            enum CodingKeys: String, CodingKey { case body, kind, clientID = "client_id" }
        }
        guard let object = try? JSONDecoder().decode(Object.self, from: Data(payload)) else { return .failure(.badJSON) }
        var kind = EnvelopeKind.chat
        if let name = object.kind {
            guard let parsed = EnvelopeKind(rawValue: name), sendableKinds.contains(parsed) else { return .failure(.invalidKind) }
            kind = parsed
        }
        return .success(MQTTInbound(room: room, sender: sender, body: object.body, kind: kind, clientID: object.clientID))
    }

    /// The room and sender levels of `<prefix>/rooms/<room>/in/<sender>`, or nil when the
    /// topic has another shape. Scans the UTF-8 bytes once (every device message comes here).
    static func topicLevels(_ topic: String, prefix: String) -> (room: Substring, sender: Substring)? {
        let slash = UInt8(ascii: "/")
        var rest = Substring(topic).utf8
        guard rest.starts(with: prefix.utf8) else { return nil }
        rest = rest.dropFirst(prefix.utf8.count)
        guard rest.starts(with: "/rooms/".utf8) else { return nil }
        rest = rest.dropFirst(7)
        guard let roomEnd = rest.firstIndex(of: slash) else { return nil }
        let room = rest[..<roomEnd]
        rest = rest[roomEnd...]
        guard rest.starts(with: "/in/".utf8) else { return nil }
        let sender = rest.dropFirst(4)
        guard !sender.contains(slash) else { return nil }
        return (Substring(room), Substring(sender))
    }
}
