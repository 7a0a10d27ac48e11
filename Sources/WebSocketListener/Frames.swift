import Foundation
import NIOCore
import SwitchboardCore

/// A client frame on `/ws`, decoded leniently: unknown fields are ignored,
/// known fields must have the right type.
struct ClientFrame: Decodable, Sendable {
    var op: String
    var user: String?
    var password: String?
    var token: String?
    var room: String?
    var to: String?
    var body: String?
    var kind: String?
    var clientID: String?
    var attrs: [String: String]?
    var since: Int64?
    var before: Int64?
    var limit: Int64?

    enum CodingKeys: String, CodingKey {
        case op, user, password, token, room, to, body, kind, attrs, since, before, limit
        case clientID = "client_id"
    }

    /// Why a frame could not be decoded, with what could still be read of it.
    struct Failure: Error {
        var error: SwitchboardError
        var op: String?
        var room: String?
        var clientID: String?
    }

    /// Decodes one text message; the failure carries what the client should see.
    static func decode(_ bytes: ByteBuffer) -> Result<ClientFrame, Failure> {
        let data = Data(bytes.readableBytesView)
        let problem: SwitchboardError
        do {
            return .success(try JSONDecoder().decode(ClientFrame.self, from: data))
        } catch let DecodingError.dataCorrupted(context) where context.codingPath.isEmpty {
            return .failure(Failure(error: SwitchboardError(.invalidJSON, "the frame is not valid JSON")))
        } catch let DecodingError.typeMismatch(_, context) where context.codingPath.isEmpty {
            return .failure(Failure(error: SwitchboardError(.invalidJSON, "the frame must be a JSON object")))
        } catch let DecodingError.keyNotFound(key, _) {
            problem = SwitchboardError(.badRequest, "missing field '\(key.stringValue)'")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            problem = SwitchboardError(.badRequest, "field '\(path(context))' has the wrong type")
        } catch let DecodingError.dataCorrupted(context) {
            problem = SwitchboardError(.badRequest, "field '\(path(context))' is invalid")
        } catch {
            return .failure(Failure(error: SwitchboardError(.invalidJSON, "the frame is not valid JSON")))
        }
        // A JSON object with a bad field: name the request it was, as far as it can be read.
        let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        return .failure(Failure(error: problem, op: object?["op"] as? String, room: object?["room"] as? String,
                                clientID: object?["client_id"] as? String))
    }

    private static func path(_ context: DecodingError.Context) -> String {
        context.codingPath.map(\.stringValue).joined(separator: ".")
    }
}

extension SwitchboardError.Code {
    static let invalidJSON: Self = "invalid_json"
    static let badRequest: Self = "bad_request"
    static let unknownOp: Self = "unknown_op"
    static let binaryNotSupported: Self = "binary_not_supported"
    static let messageTooLarge: Self = "message_too_large"
    static let invalidToken: Self = "invalid_token"
    static let roomExists: Self = "room_exists"
    static let notFound: Self = "not_found"
    static let methodNotAllowed: Self = "method_not_allowed"
    static let requestTooLarge: Self = "request_too_large"
}

/// Server frames, written by hand in a fixed key order (like the envelope).
enum ServerFrame {
    static func envelope(_ envelope: Envelope) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(190 + envelope.body.utf8.count)
        out.append(contentsOf: #"{"op":"envelope","envelope":"#.utf8)
        envelope.writeJSON(into: &out)
        out.append(UInt8(ascii: "}"))
        return out
    }

    static func authenticated(_ user: UserName) -> [UInt8] {
        object(op: "authenticated") { field("user", user.rawValue, into: &$0) }
    }

    static func ack(_ ack: Ack) -> [UInt8] {
        object(op: "ack") { out in
            ackFields(ack, into: &out)
        }
    }

    /// The fields of an ack (shared with the REST answer): room, id, seq, ts, client_id?.
    static func ackFields(_ ack: Ack, into out: inout [UInt8]) {
        field("room", ack.room.rawValue, into: &out)
        field("id", ack.id, into: &out)
        field("seq", ack.seq, into: &out)
        field("ts", ack.ts, into: &out)
        if let clientID = ack.clientID { field("client_id", clientID, into: &out) }
    }

    static func joined(_ room: RoomName, seq: UInt64) -> [UInt8] {
        object(op: "joined") { out in
            field("room", room.rawValue, into: &out)
            field("seq", seq, into: &out)
        }
    }

    static func left(_ room: RoomName) -> [UInt8] {
        object(op: "left") { field("room", room.rawValue, into: &$0) }
    }

    static func history(_ room: RoomName, _ envelopes: [Envelope]) -> [UInt8] {
        object(op: "history") { out in
            field("room", room.rawValue, into: &out)
            out.append(contentsOf: #","envelopes":"#.utf8)
            envelopeArray(envelopes, into: &out)
        }
    }

    static func occupants(_ room: RoomName, _ occupants: [Occupant]) -> [UInt8] {
        object(op: "occupants") { out in
            field("room", room.rawValue, into: &out)
            out.append(contentsOf: #","occupants":"#.utf8)
            occupantArray(occupants, into: &out)
        }
    }

    static func error(_ error: SwitchboardError, request: String? = nil, room: String? = nil, clientID: String? = nil) -> [UInt8] {
        object(op: "error") { out in
            field("code", error.code.rawValue, into: &out)
            field("message", error.message, into: &out)
            if let request { field("request", request, into: &out) }
            if let room { field("room", room, into: &out) }
            if let clientID { field("client_id", clientID, into: &out) }
        }
    }

    static let pong: [UInt8] = Array(#"{"op":"pong"}"#.utf8)

    /// `payload` as one complete, unmasked, final text frame (RFC 6455 §5.2), ready for the socket.
    static func textFrame(_ payload: [UInt8], allocator: ByteBufferAllocator) -> ByteBuffer {
        var frame = allocator.buffer(capacity: payload.count + 10)
        frame.writeInteger(UInt8(0x81))
        if payload.count < 126 {
            frame.writeInteger(UInt8(payload.count))
        } else if payload.count <= Int(UInt16.max) {
            frame.writeInteger(UInt8(126))
            frame.writeInteger(UInt16(payload.count))
        } else {
            frame.writeInteger(UInt8(127))
            frame.writeInteger(UInt64(payload.count))
        }
        frame.writeBytes(payload)
        return frame
    }

    // MARK: Building blocks

    static func object(op: String, _ fields: (inout [UInt8]) -> Void) -> [UInt8] {
        var out: [UInt8] = Array(#"{"op":"#.utf8)
        JSONWriter.string(op, into: &out)
        fields(&out)
        out.append(UInt8(ascii: "}"))
        return out
    }

    /// Appends `,"name":"value"` (every field follows `op` or another field).
    static func field(_ name: String, _ value: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: ","))
        JSONWriter.string(name, into: &out)
        out.append(UInt8(ascii: ":"))
        JSONWriter.string(value, into: &out)
    }

    static func field(_ name: String, _ value: some BinaryInteger, into out: inout [UInt8]) {
        out.append(UInt8(ascii: ","))
        JSONWriter.string(name, into: &out)
        out.append(UInt8(ascii: ":"))
        out.append(contentsOf: String(value).utf8)
    }

    static func envelopeArray(_ envelopes: [Envelope], into out: inout [UInt8]) {
        out.append(UInt8(ascii: "["))
        for (index, envelope) in envelopes.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            envelope.writeJSON(into: &out)
        }
        out.append(UInt8(ascii: "]"))
    }

    static func occupantArray(_ occupants: [Occupant], into out: inout [UInt8]) {
        out.append(UInt8(ascii: "["))
        for (index, occupant) in occupants.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            out.append(contentsOf: #"{"user":"#.utf8)
            JSONWriter.string(occupant.user.rawValue, into: &out)
            out.append(contentsOf: #","via":"#.utf8)
            JSONWriter.string(occupant.via.rawValue, into: &out)
            out.append(UInt8(ascii: "}"))
        }
        out.append(UInt8(ascii: "]"))
    }
}
