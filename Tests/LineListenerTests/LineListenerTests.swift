import Foundation
import Logging
import ServiceLifecycle
import SwitchboardCore
import SwitchboardStore
import SwitchboardTesting
import Testing
@testable import LineListener

/// A line listener with a real bus and SQLite store in a temporary directory,
/// run in-process inside a ServiceGroup exactly as `switchboard serve` runs it.
struct Harness {
    let port: Int
    let group: ServiceGroup
    let runTask: Task<Void, any Error>

    static func start(_ configure: (inout SwitchboardConfiguration) -> Void = { _ in }) async throws -> Harness {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sb-line-\(UUID().uuidString)").path
        let store = try SQLiteStore(path: directory + "/switchboard.sqlite")
        for name in ["alice", "bob"] {
            let credentials = try StoredCredentials.derive(user: UserName(name)!, password: "\(name)-pw", realm: "localhost", iterations: 4096)
            try await store.createAccount(credentials, now: 0)
        }
        var config = SwitchboardConfiguration.defaults()
        let port = TestSocket.freePort()
        config.set("line", "port", .int(port))
        config.set("server", "shutdown_grace_seconds", .int(2))
        configure(&config)
        let bus = try LocalBus(store: store, configuration: LocalBus.Configuration(config))
        var logger = Logger(label: "test")
        logger.logLevel = .error
        let context = ListenerContext(
            section: "line", configuration: config, bus: bus, accounts: store, rooms: store,
            authenticator: PasswordAuthenticator(accounts: store, dummyIterations: 4096), logger: logger)
        let listener = try LineListener.descriptor.makeService(context)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: BusService(bus: bus)), .init(service: listener)], logger: logger))
        let runTask = Task { try await group.run() }
        let deadline = ContinuousClock.now + .seconds(10)
        while !listener.isReady, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        return Harness(port: port, group: group, runTask: runTask)
    }

    func stop() async throws {
        await group.triggerGracefulShutdown()
        try await runTask.value
    }

    func client(_ user: String) throws -> TestSocket {
        let socket = try TestSocket(port: port)
        try socket.send("AUTH \(user) \(user)-pw\n")
        #expect(try socket.line() == "OK AUTH \(user)")
        return socket
    }
}

/// Serialized: the test socket blocks its thread while it waits, so only one test at a time
/// may hold a cooperative thread that way.
@Suite(.serialized) struct LineListenerTests {
    @Test func pipelinedCommandsAreAnsweredInOrder() async throws {
        let harness = try await Harness.start()
        let alice = try harness.client("alice")
        try alice.send("PING 1\nJOIN lobby\nSAY lobby one\nBOGUS\nSAY lobby two\nWHO lobby\nHISTORY lobby 2\nPART lobby\nPING 2\n")
        let lines = try alice.lines(until: "PONG 2")
        #expect(lines.count == 11)
        #expect(lines[0] == "PONG 1")
        #expect(lines[1] == "OK JOIN lobby 1")
        #expect(lines[2] == "OK SAY 2")
        #expect(lines[3].hasPrefix("ERR unknown_command "))
        #expect(lines[4] == "OK SAY 3")
        #expect(lines[5] == "OK WHO lobby alice/line")
        #expect(lines[6].hasPrefix("MSG lobby 2 ") && lines[6].hasSuffix(" alice line one"))
        #expect(lines[7].hasPrefix("MSG lobby 3 ") && lines[7].hasSuffix(" alice line two"))
        #expect(lines[8] == "OK HISTORY lobby 2")
        #expect(lines[9] == "OK PART lobby")
        try await harness.stop()
    }

    @Test func halfClosedClientGetsEveryAnswerThenTheClose() async throws {
        let harness = try await Harness.start()
        let bob = try harness.client("bob")
        try bob.send("JOIN lobby\n")
        #expect(try bob.line() == "OK JOIN lobby 1")
        let alice = try TestSocket(port: harness.port)
        try alice.send("AUTH alice alice-pw\nJOIN lobby\nSAY lobby hello\nTELL bob psst\n")
        alice.shutdownWrite()
        #expect(try alice.linesUntilClosed() == ["OK AUTH alice", "OK JOIN lobby 2", "OK SAY 3", "OK TELL 1"])
        let seen = try bob.lines(until: "MSG dm.alice.bob")
        #expect(seen.contains("JOINED lobby alice line"))
        #expect(seen.contains { $0.hasPrefix("MSG lobby 3 ") && $0.hasSuffix(" alice line hello") })
        #expect(seen.last?.hasSuffix(" alice line psst") == true)
        try await harness.stop()
    }

    @Test func shutdownAnswersWhatWasSentThenSaysGoodbye() async throws {
        let harness = try await Harness.start()
        let alice = try harness.client("alice")
        try alice.send("JOIN lobby\n")
        #expect(try alice.line() == "OK JOIN lobby 1")
        let stopping = Task { try await harness.stop() }
        let rest = try alice.linesUntilClosed()
        #expect(rest.last?.hasPrefix("ERR shutting_down ") == true)
        try await stopping.value
        #expect(throws: TestSocketError.self) { _ = try TestSocket(port: harness.port) }
    }

    @Test func tooManyConnectionsAreRefusedWithAnError() async throws {
        let harness = try await Harness.start { $0.set("line", "max_connections", .int(2)) }
        let first = try harness.client("alice")
        let second = try harness.client("bob")
        let third = try TestSocket(port: harness.port)
        let answer = try third.linesUntilClosed()
        #expect(answer.count == 1 && answer[0].hasPrefix("ERR too_many_connections "))
        try first.send("PING\n")
        #expect(try first.line() == "PONG")
        _ = second
        try await harness.stop()
    }
}
