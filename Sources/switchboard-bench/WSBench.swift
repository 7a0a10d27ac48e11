import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// How the WebSocket load generators open their connections.
struct ConnectOptions: ParsableArguments {
    @Option(help: "Server address.") var host = "127.0.0.1"
    @Option(help: "WebSocket (and REST) port of the server.") var port: Int
    @Option(help: "Bind client sockets to this many source addresses 127.0.0.<first>… round robin (0: let the kernel choose).")
    var sourceAddresses = 0
    @Option(help: "Last octet of the first source address (with --source-addresses).") var firstSource = 2
    @Option(help: "Connections set up at a time (upgrade, auth, join) before the next batch starts.") var batch = 250
    @Option(help: "Seconds allowed for setting up all connections.") var setupTimeout: Double = 180

    func validate() throws {
        guard sourceAddresses >= 0, firstSource >= 1, firstSource + sourceAddresses <= 255, batch >= 1 else {
            throw ValidationError("bad --source-addresses / --first-source / --batch")
        }
    }

    func bootstrap(group: any EventLoopGroup, index: Int, _ initializer: @escaping @Sendable (any Channel) throws -> Void) throws -> ClientBootstrap {
        var bootstrap = ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(20))
            .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try initializer(channel) } }
        if sourceAddresses > 0 {
            bootstrap = bootstrap.bind(to: try SocketAddress(ipAddress: "127.0.0.\(firstSource + index % sourceAddresses)", port: 0))
        }
        return bootstrap
    }
}

/// Connects `count` clients in batches of `options.batch`: each batch is connected and
/// ready (upgraded, authenticated, joined) before the next one starts.
func connectInBatches(
    count: Int, options: ConnectOptions, group: any EventLoopGroup, port: Int,
    _ make: (Int) throws -> (ClientBootstrap, EventLoopFuture<Void>)
) async throws -> [any Channel] {
    var channels: [any Channel] = []
    channels.reserveCapacity(count)
    let deadline = monoNanos() + UInt64(options.setupTimeout * 1e9)
    var next = 0
    while next < count {
        let end = min(count, next + options.batch)
        var connects: [EventLoopFuture<any Channel>] = []
        var readies: [EventLoopFuture<Void>] = []
        for i in next..<end {
            let (bootstrap, ready) = try make(i)
            connects.append(bootstrap.connect(host: options.host, port: port))
            readies.append(ready)
        }
        for connect in connects {
            do {
                channels.append(try await connect.get())
            } catch {
                for channel in channels { channel.close(promise: nil) }
                throw LoadError("connection \(channels.count + 1) of \(count) failed: \(error)")
            }
        }
        let remaining = Double(deadline > monoNanos() ? deadline - monoNanos() : 0) / 1e9
        do {
            try await waitAllReady(readies, timeout: max(remaining, 1), on: group)
        } catch {
            for channel in channels { channel.close(promise: nil) }
            throw error
        }
        next = end
        if next % 5000 == 0 || next == count { note("\(next)/\(count) connections ready") }
    }
    return channels
}

/// Waits for every future, failing after `timeout` seconds.
func waitAllReady(_ futures: [EventLoopFuture<Void>], timeout: Double, on group: any EventLoopGroup) async throws {
    let loop = group.next()
    let all = EventLoopFuture.andAllSucceed(futures, on: loop)
    let timer = loop.scheduleTask(in: .milliseconds(Int64(timeout * 1000))) {
        throw LoadError("clients not ready after \(Int(timeout)) s")
    }
    let first = loop.makePromise(of: Void.self)
    all.cascade(to: first)
    timer.futureResult.cascadeFailure(to: first)
    defer { timer.cancel() }
    try await first.futureResult.get()
}

/// Closes every channel and waits until they are gone.
func closeAll(_ channels: [any Channel]) async {
    for channel in channels { channel.close(promise: nil) }
    for channel in channels { try? await channel.closeFuture.get() }
}

/// `switchboard-bench ws`: room fan-out over WebSocket (and across protocols).
///
/// `clients` receivers join one room (WebSocket connections authenticated with bearer tokens,
/// several connections per user, or line-protocol connections), then one sender (WebSocket or
/// line) sends `rate` messages per second — or, with `--saturate`, as fast as a window of
/// unacknowledged sends (and of messages not yet delivered everywhere) allows. Each body starts
/// with its send time (CLOCK_MONOTONIC, ns) and index; receivers live in this process, so
/// `now - sent` is the end-to-end latency. One NIO event loop group, one thread per core.
struct WSLoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ws", abstract: "Room fan-out over WebSocket: deliveries/s and end-to-end latency (also line <-> ws).")

    @OptionGroup var connect: ConnectOptions
    @Option(help: "Line-protocol port (when a participant speaks line).") var linePort: Int?
    @Option(help: "Receiving connections (the sender comes on top).") var clients = 1000
    @Option(help: "Distinct receiver users; connection i logs in as user i % users.") var users = 100
    @Option(help: "Protocol of the receivers: ws | line.") var receiversVia: Via = .ws
    @Option(help: "Protocol of the sender: ws | line.") var senderVia: Via = .ws
    @Option(help: "Receiver users are <prefix>000…; the sender is <prefix>snd.") var userPrefix = "bench"
    @Option(help: "Password of every user.") var password = ""
    @Option(help: "Room.") var room = "bench"
    @Option(help: "Messages per second from the sender (paced mode).") var rate = 1000
    @Option(help: "Seconds of sending (paced mode).") var seconds: Double = 10
    @Flag(help: "Send as fast as the windows allow instead of pacing.") var saturate = false
    @Option(help: "Messages to send with --saturate.") var messages = 2000
    @Option(help: "--saturate: most unacknowledged sends.") var window = 64
    @Option(help: "--saturate: most messages not yet delivered to every receiver (0: no bound).") var deliveryWindow = 256
    @Option(help: "Message body size in bytes.") var bodyBytes = 64
    @Option(help: "Keep at most about this many latency samples (receivers sample messages evenly).") var maxSamples = 4_000_000
    @Option(help: "Seconds to let join traffic settle before sending.") var settle: Double = 1
    @Option(help: "Seconds to wait for stragglers after the last send.") var drainTimeout: Double = 30

    func validate() throws {
        guard clients >= 1, users >= 1, rate >= 1, seconds > 0, bodyBytes >= 32, messages >= 1, window >= 1 else {
            throw ValidationError("clients, users, rate, seconds, messages, window must be positive and body-bytes at least 32")
        }
        if (receiversVia == .line || senderVia == .line) && linePort == nil {
            throw ValidationError("--line-port is needed when a participant speaks line")
        }
        if senderVia == .line && saturate { throw ValidationError("--saturate needs a WebSocket sender") }
    }

    func run() async throws {
        let limit = raiseOpenFileLimit()
        if clients + 100 > limit { note("warning: \(clients) connections but only \(limit) open files allowed") }
        try await runOnGroup { group in try await runLoad(group: group) }
    }

    private func receiverUser(_ i: Int) -> String {
        String(format: "%@%03d", userPrefix, receiversVia == .ws ? i % users : i)
    }

    private var senderUser: String { userPrefix + "snd" }

    private func runLoad(group: MultiThreadedEventLoopGroup) async throws -> [String: Any] {
        let total = saturate ? messages : Int((Double(rate) * seconds).rounded())
        let state = LoadState()
        let counters = WSCounters()
        let stride = max(1, Int((Double(total) * Double(clients) / Double(maxSamples)).rounded(.up)))
        let wsSettings = WSSettings(
            host: connect.host, port: connect.port, room: room, total: total,
            intervalNanos: saturate ? 0 : UInt64(1e9 / Double(rate)), window: window,
            deliveryWindow: deliveryWindow, receivers: clients, bodyBytes: bodyBytes, sampleStride: stride)
        let lineSettings = LoadSettings(
            wireProtocol: .line, room: room, password: password, total: total,
            intervalNanos: UInt64(1e9 / Double(rate)), bodyBytes: bodyBytes)

        // Tokens: one POST /api/v1/token per WebSocket user.
        var wsUsers: [String] = []
        if receiversVia == .ws { wsUsers += (0..<min(users, clients)).map(receiverUser) }
        if senderVia == .ws { wsUsers.append(senderUser) }
        let setupStart = monoNanos()
        let tokens = try await fetchTokens(group: group, host: connect.host, port: connect.port, users: wsUsers, password: password)
        let tokenSeconds = Double(monoNanos() - setupStart) / 1e9

        func participant(role: WSClientHandler.Role, index: Int, user: String, via: Via) throws -> (ClientBootstrap, EventLoopFuture<Void>) {
            let ready = group.next().makePromise(of: Void.self)
            let bootstrap: ClientBootstrap
            switch via {
            case .ws:
                let token = tokens[user] ?? ""
                bootstrap = try connect.bootstrap(group: group, index: index) { channel in
                    try channel.pipeline.syncOperations.addHandler(WSClientHandler(
                        role: role, index: index, user: user, token: token, settings: wsSettings, state: state,
                        counters: counters, ready: ready))
                }
            case .line:
                bootstrap = try connect.bootstrap(group: group, index: index) { channel in
                    try channel.pipeline.syncOperations.addHandler(LoadClientHandler(
                        role: role == .sender ? .sender : .receiver, user: user, settings: lineSettings,
                        state: state, ready: ready))
                }
            }
            return (bootstrap, ready.futureResult)
        }

        let receiverPort = receiversVia == .ws ? connect.port : linePort!
        let receivers = try await connectInBatches(count: clients, options: connect, group: group, port: receiverPort) { i in
            try participant(role: .receiver, index: i, user: receiverUser(i), via: receiversVia)
        }
        let senderPort = senderVia == .ws ? connect.port : linePort!
        let senderChannels: [any Channel]
        do {
            senderChannels = try await connectInBatches(count: 1, options: connect, group: group, port: senderPort) { _ in
                try participant(role: .sender, index: clients, user: senderUser, via: senderVia)
            }
        } catch {
            await closeAll(receivers)
            throw error
        }
        let setupSeconds = Double(monoNanos() - setupStart) / 1e9
        // Let the join envelopes reach everyone.
        try await Task.sleep(for: .milliseconds(Int64(settle * 1000)))
        state.resetErrors()
        let closedBefore = counters.closedByServer.load(ordering: .relaxed)
        let framesBefore = counters.framesReceived.load(ordering: .relaxed)

        let cpuBefore = processCPUSeconds()
        let sender = senderChannels[0]
        sender.pipeline.fireUserInboundEventTriggered(LoadStart())
        let expected = total * clients
        let sendBudget = saturate ? Double(total) / 100 + 120 : seconds * 3 + 30
        let sendDone = await waitFor(seconds: sendBudget) { state.senderDone.load(ordering: .acquiring) }
        let allArrived = await waitFor(seconds: drainTimeout) { state.delivered.load(ordering: .relaxed) >= expected }
        _ = await waitFor(seconds: 5) { state.acks.load(ordering: .relaxed) >= state.sent.load(ordering: .relaxed) }
        let cpu = processCPUSeconds() - cpuBefore
        let closedByServer = counters.closedByServer.load(ordering: .relaxed) - closedBefore
        let frames = counters.framesReceived.load(ordering: .relaxed) - framesBefore

        counters.closing.store(true, ordering: .relaxed)
        await closeAll(senderChannels + receivers)

        let snapshot = state.snapshot()
        let firstSend = state.firstSend.load(ordering: .relaxed)
        let lastSend = state.lastSend.load(ordering: .relaxed)
        let lastReceive = state.lastReceive.load(ordering: .relaxed)
        let sent = state.sent.load(ordering: .relaxed)
        let delivered = state.delivered.load(ordering: .relaxed)
        let sendWindow = Double(lastSend - firstSend) / 1e9
        let deliveryWindowSeconds = lastReceive > firstSend ? Double(lastReceive - firstSend) / 1e9 : 0
        var result: [String: Any] = [
            "bench": "ws",
            "receivers_via": receiversVia.rawValue,
            "sender_via": senderVia.rawValue,
            "mode": saturate ? "saturate" : "paced",
            "host": connect.host,
            "port": connect.port,
            "clients": clients,
            "users": receiversVia == .ws ? min(users, clients) : clients,
            "rate": saturate ? 0 : rate,
            "seconds": saturate ? 0 : seconds,
            "messages": total,
            "window": saturate ? window : 0,
            "delivery_window": saturate ? deliveryWindow : 0,
            "body_bytes": bodyBytes,
            "source_addresses": connect.sourceAddresses,
            "token_seconds": round3(tokenSeconds),
            "setup_seconds": round3(setupSeconds),
            "sent": sent,
            "sender_finished": sendDone,
            "send_rate": sendWindow > 0 ? (Double(sent - 1) / sendWindow).rounded() : 0,
            "expected_deliveries": sent * clients,
            "delivered": delivered,
            "frames_received": frames,
            "all_arrived": allArrived,
            "lost": max(0, sent * clients - delivered),
            "out_of_order": snapshot.outOfOrder,
            "closed_by_server": closedByServer,
            "delivery_seconds": round3(deliveryWindowSeconds),
            "delivered_per_s": deliveryWindowSeconds > 0 ? (Double(delivered) / deliveryWindowSeconds).rounded() : 0,
            "sample_stride": receiversVia == .ws ? stride : 1,
            "latency": LatencySummary(nanos: snapshot.samples).json,
            "acks": state.acks.load(ordering: .relaxed),
            "ack_latency": LatencySummary(nanos: snapshot.ackSamples).json,
            "errors": snapshot.errorCount,
            "first_errors": snapshot.firstErrors,
            "client_cpu_seconds": round3(cpu),
            "client_rss_kib": ownRSSKiB(),
            "event_loop_threads": System.coreCount,
        ]
        result["ok"] = sendDone && allArrived && snapshot.errorCount == 0 && sent == total && closedByServer == 0
        return result
    }
}

/// `switchboard-bench ws-idle`: opens `clients` WebSocket connections (auth with a bearer
/// token, join one room) and holds them idle, answering the server's pings, until stdin
/// closes (or `--hold` seconds pass). Prints one JSON line when every connection is ready and
/// one when it is done, so a driver can measure the server in between.
struct WSIdleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ws-idle", abstract: "Hold N idle authenticated WebSocket connections (memory per connection).")

    @OptionGroup var connect: ConnectOptions
    @Option(help: "Connections to open.") var clients = 5000
    @Option(help: "Distinct users; connection i logs in as user (i % users).") var users = 100
    @Option(help: "Users are <prefix>000….") var userPrefix = "bench"
    @Option(help: "Password of every user.") var password = ""
    @Option(help: "Room to join.") var room = "bench"
    @Option(help: "Seconds to hold the connections at most (stdin EOF ends earlier).") var hold: Double = 900
    @Option(help: "How far each connection is set up: join (auth + join), auth, or upgrade only.") var stage: IdleStage = .join

    func validate() throws {
        guard clients >= 1, users >= 1, hold > 0 else { throw ValidationError("clients, users, hold must be positive") }
    }

    func run() async throws {
        let limit = raiseOpenFileLimit()
        if clients + 100 > limit { note("warning: \(clients) connections but only \(limit) open files allowed") }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        do {
            try await hold(group: group)
            try? await group.shutdownGracefully()
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private func hold(group: MultiThreadedEventLoopGroup) async throws {
        let state = LoadState()
        let counters = WSCounters()
        let settings = WSSettings(
            host: connect.host, port: connect.port, room: room, total: 0, intervalNanos: 1, window: 1,
            deliveryWindow: 0, receivers: clients, bodyBytes: 64, sampleStride: 1, idleStage: stage)
        let names = (0..<min(users, clients)).map { String(format: "%@%03d", userPrefix, $0) }
        let setupStart = monoNanos()
        let tokens = try await fetchTokens(group: group, host: connect.host, port: connect.port, users: names, password: password)
        let channels = try await connectInBatches(count: clients, options: connect, group: group, port: connect.port) { i in
            let ready = group.next().makePromise(of: Void.self)
            let user = names[i % names.count]
            let token = tokens[user] ?? ""
            let bootstrap = try connect.bootstrap(group: group, index: i) { channel in
                try channel.pipeline.syncOperations.addHandler(WSClientHandler(
                    role: .idle, index: i, user: user, token: token, settings: settings, state: state,
                    counters: counters, ready: ready))
            }
            return (bootstrap, ready.futureResult)
        }
        let setupSeconds = Double(monoNanos() - setupStart) / 1e9
        state.resetErrors()
        emitJSON([
            "bench": "ws-idle", "phase": "ready", "clients": clients, "users": names.count, "stage": stage.rawValue,
            "setup_seconds": round3(setupSeconds), "client_rss_kib": ownRSSKiB(), "pid": Int(getpid()),
        ])

        // Hold until stdin reaches EOF.
        let eof = SharedFlag()
        _ = BenchThread(name: "stdin") {
            _ = FileHandle.standardInput.readDataToEndOfFile()
            eof.value.store(true, ordering: .releasing)
        }
        let started = monoNanos()
        _ = await waitFor(seconds: hold) { eof.value.load(ordering: .acquiring) }
        let heldSeconds = Double(monoNanos() - started) / 1e9
        let closed = counters.closedByServer.load(ordering: .relaxed)
        counters.closing.store(true, ordering: .relaxed)
        await closeAll(channels)
        let snapshot = state.snapshot()
        emitJSON([
            "bench": "ws-idle", "phase": "done", "clients": clients, "held_seconds": round3(heldSeconds),
            "closed_by_server": closed, "errors": snapshot.errorCount, "first_errors": snapshot.firstErrors,
            "ok": closed == 0 && snapshot.errorCount == 0,
        ])
    }
}

/// A flag another thread sets.
final class SharedFlag: Sendable {
    let value = Atomic<Bool>(false)
}
