import SwitchboardCore
import Testing
@testable import MQTTBridge

@Suite struct MQTTInboundTests {
    func parse(_ topic: String, _ payload: String, max: Int = 1024) -> Result<MQTTInbound, MQTTDropReason> {
        MQTTInbound.parse(topic: topic, payload: Array(payload.utf8), prefix: "switchboard", maxPayloadBytes: max)
    }

    @Test func plainTextIsAChatBodyFromTheLastTopicLevel() throws {
        let inbound = try parse("switchboard/rooms/lobby/in/sensor-1", "21.5 °C").get()
        #expect(inbound == MQTTInbound(room: RoomName("lobby")!, sender: UserName("sensor-1")!, body: "21.5 °C", kind: .chat, clientID: nil))
    }

    @Test func jsonObjectCarriesKindAndClientID() throws {
        let inbound = try parse("switchboard/rooms/lobby/in/dev", #"{"body":"ok","kind":"receipt","client_id":"m-1"}"#).get()
        #expect(inbound.body == "ok")
        #expect(inbound.kind == .receipt)
        #expect(inbound.clientID == "m-1")
    }

    @Test func aMultiLevelPrefixWorks() throws {
        let inbound = try MQTTInbound.parse(topic: "site/a/rooms/lab/in/dev", payload: Array("x".utf8), prefix: "site/a", maxPayloadBytes: 10).get()
        #expect(inbound.room.rawValue == "lab")
    }

    @Test(arguments: [
        ("switchboard/rooms/lobby/out", MQTTDropReason.invalidTopic),
        ("switchboard/rooms/lobby/in/dev/extra", .invalidTopic),
        ("other/rooms/lobby/in/dev", .invalidTopic),
        ("switchboardx/rooms/lobby/in/dev", .invalidTopic),
        ("switchboard/rooms/lobby/inbox/dev", .invalidTopic),
        ("switchboard/rooms/lobby", .invalidTopic),
        ("switchboard/lobby/in/dev", .invalidTopic),
        ("switchboard/rooms//in/dev", .invalidRoom),
        ("switchboard/rooms/Lobby/in/dev", .invalidRoom),
        ("switchboard/rooms/bad room/in/dev", .invalidRoom),
        ("switchboard/rooms/dm.a.b/in/a", .invalidRoom),
        ("switchboard/rooms/lobby/in/no.dots", .invalidSender),
        ("switchboard/rooms/lobby/in/", .invalidSender),
    ])
    func badTopicsAreDropped(_ topic: String, _ reason: MQTTDropReason) {
        #expect(parse(topic, "hi") == .failure(reason))
    }

    @Test func badPayloadsAreDropped() {
        #expect(MQTTInbound.parse(topic: "switchboard/rooms/lobby/in/dev", payload: [0xff, 0xfe], prefix: "switchboard",
                                  maxPayloadBytes: 100) == .failure(.invalidUTF8))
        #expect(parse("switchboard/rooms/lobby/in/dev", String(repeating: "x", count: 101), max: 100) == .failure(.payloadTooLarge))
        #expect(parse("switchboard/rooms/lobby/in/dev", "{not json") == .failure(.badJSON))
        #expect(parse("switchboard/rooms/lobby/in/dev", #"{"kind":"chat"}"#) == .failure(.badJSON))
        #expect(parse("switchboard/rooms/lobby/in/dev", #"{"body":"x","kind":"join"}"#) == .failure(.invalidKind))
    }
}

@Suite struct MQTTSettingsTests {
    func settings(_ overrides: [String: String] = [:]) throws -> MQTTSettings {
        var environment = ["SWITCHBOARD_MQTT_RECONNECT_MIN_MS": "100", "SWITCHBOARD_MQTT_RECONNECT_MAX_MS": "1000"]
        environment.merge(overrides) { $1 }
        return MQTTSettings(try SwitchboardConfiguration.load(path: nil, environment: environment))
    }

    @Test func backoffGrowsWithJitterAndIsCapped() throws {
        let settings = try settings()
        for failures in 1...30 {
            let wait = settings.backoff(failures: failures)
            #expect(wait >= .milliseconds(100))
            #expect(wait <= .milliseconds(1000))
            if failures == 1 { #expect(wait == .milliseconds(100)) }
        }
        let late = (0..<50).map { _ in settings.backoff(failures: 10) }
        #expect(Set(late).count > 1, "jitter spreads reconnects")
    }

    @Test func roomPatterns() throws {
        let all = try settings()
        #expect(all.bridges(RoomName("anything")!))
        let some = try settings(["SWITCHBOARD_MQTT_ROOMS": "lobby,sensors.*"])
        #expect(some.bridges(RoomName("lobby")!))
        #expect(some.bridges(RoomName("sensors.kitchen")!))
        #expect(!some.bridges(RoomName("random")!))
    }
}
