import Foundation
import Testing
@testable import SwitchboardCore

@Suite struct ConfigurationTests {
    func write(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sb-\(UUID().uuidString).toml").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func problems(_ text: String, env: [String: String] = [:]) throws -> [String] {
        let path = try write(text)
        do {
            _ = try SwitchboardConfiguration.load(path: path, environment: env)
            return []
        } catch {
            return error.problems
        }
    }

    @Test func shippedConfigurationIsValid() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../conf/switchboard.toml").path
        let config = try SwitchboardConfiguration.load(path: path, environment: [:])
        #expect(config.int("line", "port") == 7777)
        #expect(config.string("server", "domain") == "localhost")
        #expect(config.int("websocket", "port") == 8080)
        #expect(config.int("xmpp", "port") == 5222)
        #expect(config.int("sip", "port") == 5060)
        #expect(config.string("mqtt", "prefix") == "switchboard")
        #expect(config.bool("xmpp", "allow_plain_without_tls") == false)
        #expect(config.int("history", "wal_sync_interval_ms") == 2)
    }

    @Test func defaultsApplyToMissingKeys() throws {
        let config = try SwitchboardConfiguration.load(path: try write("[line]\nport = 7001\n"), environment: [:])
        #expect(config.int("line", "port") == 7001)
        #expect(config.int("line", "max_line_bytes") == 16_384)
        #expect(config.int("limits", "max_body_bytes") == 16_384)
    }

    @Test func everyProblemIsReportedByKey() throws {
        let found = try problems("""
            [line]
            port = "abc"
            prot = 1
            max_connections = 0
            [log]
            level = "loud"
            [nonsense]
            x = 1
            [server]
            domain = "bad domain!"
            """)
        #expect(found.contains { $0.hasPrefix("line.port: expected an integer") })
        #expect(found.contains("unknown key 'line.prot'"))
        #expect(found.contains { $0.hasPrefix("line.max_connections: 0 is out of range") })
        #expect(found.contains { $0.hasPrefix("log.level: \"loud\" is not one of") })
        #expect(found.contains("unknown section 'nonsense'"))
        #expect(found.contains { $0.hasPrefix("server.domain:") })
        #expect(found.count == 6)
    }

    @Test func portRangeIsChecked() throws {
        #expect(try problems("[line]\nport = 70000\n").first?.hasPrefix("line.port: 70000 is out of range 1...65535") == true)
    }

    @Test func syntaxErrorsNameTheFileAndLine() throws {
        let found = try problems("[line\nport = 1\n")
        #expect(found.count == 1)
        #expect(found.first?.contains(":1:") == true)
    }

    @Test func environmentOverridesTheFile() throws {
        let config = try SwitchboardConfiguration.load(
            path: try write("[line]\nport = 7001\n"),
            environment: ["SWITCHBOARD_LINE_PORT": "7002", "SWITCHBOARD_XMPP_ALLOW_PLAIN_WITHOUT_TLS": "true", "HOME": "/root"])
        #expect(config.int("line", "port") == 7002)
        #expect(config.bool("xmpp", "allow_plain_without_tls"))
    }

    @Test func badEnvironmentIsReportedByName() throws {
        let found = try problems("", env: [
            "SWITCHBOARD_LINE_PORT": "abc", "SWITCHBOARD_LINE_PROT": "1", "SWITCHBOARD_BOGUS_X": "1",
            "SWITCHBOARD_CONFIG": "ignored",
        ])
        #expect(found.contains { $0.hasPrefix("line.port (from SWITCHBOARD_LINE_PORT): expected an integer") })
        #expect(found.contains { $0.contains("SWITCHBOARD_LINE_PROT") && $0.contains("unknown key 'line.prot'") })
        #expect(found.contains { $0.contains("SWITCHBOARD_BOGUS_X") && $0.contains("unknown section 'bogus'") })
        #expect(found.count == 3)
    }

    @Test func missingFileIsAnError() {
        #expect(throws: ConfigurationError.self) {
            _ = try SwitchboardConfiguration.load(path: "/nonexistent/switchboard.toml", environment: [:])
        }
    }

    @Test func registryRefusesEnabledListenersItDoesNotHave() throws {
        var config = SwitchboardConfiguration.defaults()
        config.set("xmpp", "enabled", .bool(true))
        config.set("line", "enabled", .bool(false))
        let registry = ListenerRegistry([])
        #expect(throws: ConfigurationError.self) {
            _ = try registry.services(configuration: config) { _ in fatalError("not reached") }
        }
    }
}

@Suite struct TokenBucketTests {
    @Test func refillsAtTheRateUpToTheBurst() {
        var bucket = TokenBucket(rate: 10, burst: 3)
        let t0: UInt64 = 1_000_000_000
        func takes(_ n: Int, at t: UInt64) -> [Bool] { (0..<n).map { _ in bucket.take(nowNanos: t) } }
        #expect(takes(4, at: t0) == [true, true, true, false])
        #expect(takes(2, at: t0 + 100_000_000) == [true, false])
        // A long pause refills only up to the burst.
        #expect(takes(4, at: t0 + 60_000_000_000) == [true, true, true, false])
    }
}
