import Foundation
import NIOCore
import SwitchboardCore
import Testing
@testable import WebSocketListener

@Suite struct ClientFrameTests {
    func decode(_ text: String) -> Result<ClientFrame, SwitchboardError> {
        ClientFrame.decode(ByteBuffer(string: text)).mapError(\.error)
    }

    @Test func aBadFieldStillNamesTheRequest() {
        guard case .failure(let failure) = ClientFrame.decode(ByteBuffer(string: #"{"op":"send","room":"lobby","body":5,"client_id":"m-2"}"#)) else {
            Issue.record("decoded")
            return
        }
        #expect(failure.error.code.rawValue == "bad_request")
        #expect(failure.op == "send")
        #expect(failure.room == "lobby")
        #expect(failure.clientID == "m-2")
    }

    @Test func decodesASend() throws {
        let frame = try decode(#"{"op":"send","room":"lobby","body":"hi","client_id":"c-1","attrs":{"reply_to":"x"},"extra":1}"#).get()
        #expect(frame.op == "send")
        #expect(frame.room == "lobby")
        #expect(frame.body == "hi")
        #expect(frame.clientID == "c-1")
        #expect(frame.attrs == ["reply_to": "x"])
    }

    @Test(arguments: ["not json", "[1,2]", "\"text\"", "{", ""])
    func nonObjectsAreInvalidJSON(_ text: String) {
        guard case .failure(let error) = decode(text) else { Issue.record("decoded \(text)"); return }
        #expect(error.code.rawValue == "invalid_json")
    }

    @Test(arguments: [#"{"room":"lobby"}"#, #"{"op":1}"#, #"{"op":"join","since":"x"}"#, #"{"op":"send","attrs":{"a":1}}"#])
    func wrongFieldsAreBadRequests(_ text: String) {
        guard case .failure(let error) = decode(text) else { Issue.record("decoded \(text)"); return }
        #expect(error.code.rawValue == "bad_request")
    }
}

@Suite struct ServerFrameTests {
    func json(_ bytes: [UInt8]) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
    }

    @Test func envelopeFrameWrapsTheCanonicalEnvelope() throws {
        let envelope = Envelope(id: "01JD3M8Q7Z5X2W6YH9K4T1R0AB", room: RoomName("lobby")!, seq: 42, ts: 1_732_236_000_123,
                                from: Sender(user: UserName("alice")!, via: .ws), kind: .chat, body: "he said \"hi\"\n")
        let frame = ServerFrame.envelope(envelope)
        #expect(frame == Array(#"{"op":"envelope","envelope":"#.utf8) + envelope.jsonBytes() + [UInt8(ascii: "}")])
        let object = try json(frame)
        #expect(object["op"] as? String == "envelope")
    }

    @Test func ackCarriesClientID() throws {
        let ack = Ack(room: RoomName("lobby")!, id: "01J", seq: 7, ts: 5, clientID: "c-\"1")
        let object = try json(ServerFrame.ack(ack))
        #expect(object["op"] as? String == "ack")
        #expect(object["seq"] as? Int == 7)
        #expect(object["client_id"] as? String == "c-\"1")
        #expect(object["room"] as? String == "lobby")
        let without = try json(ServerFrame.ack(Ack(room: RoomName("lobby")!, id: "01J", seq: 7, ts: 5, clientID: nil)))
        #expect(without["client_id"] == nil)
    }

    @Test func errorNamesTheRequest() throws {
        let object = try json(ServerFrame.error(SwitchboardError(.invalidRoom, "bad"), request: "join", room: "Bad Room"))
        #expect(object["code"] as? String == "invalid_room")
        #expect(object["request"] as? String == "join")
        #expect(object["room"] as? String == "Bad Room")
    }

    @Test func occupantsAndHistoryAreArrays() throws {
        let occupants = try json(ServerFrame.occupants(RoomName("lobby")!, [Occupant(user: UserName("bob")!, via: .line)]))
        #expect((occupants["occupants"] as? [[String: String]]) == [["user": "bob", "via": "line"]])
        let history = try json(ServerFrame.history(RoomName("lobby")!, []))
        #expect((history["envelopes"] as? [Any])?.isEmpty == true)
    }
}

@Suite struct TextFrameTests {
    @Test(arguments: [0, 5, 125, 126, 200, 65_535, 65_536, 70_000])
    func headerCarriesTheLength(_ count: Int) {
        let payload = [UInt8](repeating: UInt8(ascii: "x"), count: count)
        let frame = ServerFrame.textFrame(payload, allocator: ByteBufferAllocator())
        let bytes = Array(frame.readableBytesView)
        #expect(bytes[0] == 0x81, "FIN + text opcode")
        #expect(bytes[1] & 0x80 == 0, "server frames are not masked")
        // RFC 6455 §5.2: a 7-bit length, or 126 and 16 bits, or 127 and 64 bits.
        let header: Int
        switch count {
        case ..<126:
            header = 2
            #expect(Int(bytes[1]) == count)
        case ...65_535:
            header = 4
            #expect(bytes[1] == 126)
            #expect(Int(bytes[2]) << 8 | Int(bytes[3]) == count)
        default:
            header = 10
            #expect(bytes[1] == 127)
            #expect(bytes[2..<10].reduce(0) { $0 << 8 | Int($1) } == count)
        }
        #expect(bytes.count == header + count)
        #expect(Array(bytes[header...]) == payload)
    }
}

@Suite struct TextPayloadTests {
    @Test(arguments: [
        [UInt8](), Array("plain ascii".utf8), Array("grüße 👋 日本".utf8), [0xEF, 0xBB, 0xBF],  // BOM
    ])
    func validUTF8IsAccepted(_ bytes: [UInt8]) {
        #expect(WebSocketConnection.isUTF8(ByteBuffer(bytes: bytes)))
    }

    @Test(arguments: [
        [0xC0, 0xAF],              // overlong '/'
        [0xED, 0xA0, 0x80],        // a UTF-16 surrogate
        [0xF4, 0x90, 0x80, 0x80],  // above U+10FFFF
        [0xE2, 0x82],              // truncated sequence
        [0x61, 0x80, 0x62],        // stray continuation byte
        [0xFF],
    ])
    func invalidUTF8IsRefused(_ bytes: [UInt8]) {
        #expect(!WebSocketConnection.isUTF8(ByteBuffer(bytes: bytes)))
    }

    @Test func onlyTheReadableBytesCount() {
        var buffer = ByteBuffer(bytes: [0xFF, 0x68, 0x69])
        buffer.moveReaderIndex(forwardBy: 1)
        #expect(WebSocketConnection.isUTF8(buffer))
    }
}
