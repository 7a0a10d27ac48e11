import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// The wire protocol the load generator speaks.
enum LoadProtocol: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// Switchboard's line protocol: `AUTH`, `JOIN`, `SAY`; receivers get `MSG` lines.
    case line
    /// IRC (RFC 2812) as ngircd speaks it: `NICK`/`USER`, `JOIN #room`, `PRIVMSG`.
    case irc
}

/// `switchboard-bench line`: end-to-end delivery latency over loopback TCP.
///
/// `clients` receivers and one sender join one room; the sender sends `rate` messages
/// per second for `seconds`, each body starting with its send time (CLOCK_MONOTONIC,
/// nanoseconds) and index. Receivers live in this process, so `now - sent` is the
/// delivery latency. One NIO event loop group with one thread per core runs all clients.
struct LineLoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "line", abstract: "End-to-end room delivery latency over TCP (Switchboard line protocol or IRC).")

    @Option(help: "Server address.") var host = "127.0.0.1"
    @Option(help: "Server port.") var port: Int
    @Option(name: .customLong("protocol"), help: "line | irc") var wireProtocol: LoadProtocol = .line
    @Option(help: "Receiving clients (the sender comes on top).") var clients = 100
    @Option(help: "Messages per second from the sender.") var rate = 1000
    @Option(help: "Seconds of sending.") var seconds: Double = 10
    @Option(help: "User/nick prefix: receivers are <prefix>000…, the sender <prefix><clients>.") var userPrefix = "bench"
    @Option(help: "Password (line protocol).") var password = ""
    @Option(help: "Room (IRC: the channel without '#').") var room = "bench"
    @Option(help: "Message body size in bytes.") var bodyBytes = 64
    @Option(help: "Seconds allowed for connecting and joining.") var setupTimeout: Double = 60
    @Option(help: "Seconds to wait for stragglers after the last send.") var drainTimeout: Double = 10

    func validate() throws {
        guard clients >= 1, rate >= 1, seconds > 0, bodyBytes >= 32 else {
            throw ValidationError("clients, rate, seconds must be positive and body-bytes at least 32")
        }
    }

    func run() async throws {
        try await runOnGroup { group in try await runLoad(group: group) }
    }

    private func runLoad(group: MultiThreadedEventLoopGroup) async throws -> [String: Any] {
        let total = Int((Double(rate) * seconds).rounded())
        let state = LoadState()
        let settings = LoadSettings(
            wireProtocol: wireProtocol, room: room, password: password, total: total,
            intervalNanos: UInt64(1e9 / Double(rate)), bodyBytes: bodyBytes)

        // Connect and join every receiver, then the sender.
        let setupStart = monoNanos()
        var channels: [any Channel] = []
        var readies: [EventLoopFuture<Void>] = []
        for i in 0...clients {
            let role: LoadClientHandler.Role = i == clients ? .sender : .receiver
            let user = String(format: "%@%03d", userPrefix, i)
            let ready = group.next().makePromise(of: Void.self)
            let bootstrap = ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(.seconds(10))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let handler = LoadClientHandler(role: role, user: user, settings: settings, state: state, ready: ready)
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
            let channel = try await bootstrap.connect(host: host, port: port).get()
            channels.append(channel)
            readies.append(ready.futureResult)
            if role == .sender {
                // Everyone else is in the room before the sender joins.
                try await waitAllReady(Array(readies.dropLast()), timeout: setupTimeout, on: group)
            }
        }
        try await waitAllReady(readies, timeout: setupTimeout, on: group)
        let setupSeconds = Double(monoNanos() - setupStart) / 1e9
        // Let join notifications settle.
        try await Task.sleep(for: .milliseconds(500))
        state.resetErrors()

        let cpuBefore = processCPUSeconds()
        let sender = channels[clients]
        sender.pipeline.fireUserInboundEventTriggered(LoadStart())
        let expected = total * clients
        let sendDone = await waitFor(seconds: seconds * 3 + 30) { state.senderDone.load(ordering: .acquiring) }
        let allArrived = await waitFor(seconds: drainTimeout) { state.delivered.load(ordering: .relaxed) >= expected }
        // The line sender also waits for its acks (OK SAY) to be counted.
        if wireProtocol == .line {
            _ = await waitFor(seconds: 5) { state.acks.load(ordering: .relaxed) >= state.sent.load(ordering: .relaxed) }
        }
        let cpu = processCPUSeconds() - cpuBefore

        // Close everything; each handler hands its samples over as its channel goes.
        for channel in channels { channel.close(promise: nil) }
        for channel in channels { try? await channel.closeFuture.get() }

        let snapshot = state.snapshot()
        let firstSend = state.firstSend.load(ordering: .relaxed)
        let lastSend = state.lastSend.load(ordering: .relaxed)
        let lastReceive = state.lastReceive.load(ordering: .relaxed)
        let sent = state.sent.load(ordering: .relaxed)
        let delivered = state.delivered.load(ordering: .relaxed)
        let sendWindow = Double(lastSend - firstSend) / 1e9
        let deliveryWindow = lastReceive > firstSend ? Double(lastReceive - firstSend) / 1e9 : 0
        let latency = LatencySummary(nanos: snapshot.samples)
        var result: [String: Any] = [
            "bench": "line",
            "protocol": wireProtocol.rawValue,
            "host": host,
            "port": port,
            "clients": clients,
            "rate": rate,
            "seconds": seconds,
            "body_bytes": bodyBytes,
            "setup_seconds": round3(setupSeconds),
            "sent": sent,
            "sender_finished": sendDone,
            "send_rate": sendWindow > 0 ? (Double(sent - 1) / sendWindow).rounded() : 0,
            "expected_deliveries": sent * clients,
            "delivered": delivered,
            "all_arrived": allArrived,
            "lost": max(0, sent * clients - delivered),
            "out_of_order": snapshot.outOfOrder,
            "delivery_seconds": round3(deliveryWindow),
            "delivered_per_s": deliveryWindow > 0 ? (Double(delivered) / deliveryWindow).rounded() : 0,
            "latency": latency.json,
            "errors": snapshot.errorCount,
            "first_errors": snapshot.firstErrors,
            "client_cpu_seconds": round3(cpu),
            "event_loop_threads": System.coreCount,
        ]
        if wireProtocol == .line {
            result["acks"] = state.acks.load(ordering: .relaxed)
            result["ack_latency"] = LatencySummary(nanos: snapshot.ackSamples).json
        }
        result["ok"] = sendDone && allArrived && snapshot.errorCount == 0 && sent == total
        return result
    }
}

struct LoadError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Sent down the sender's pipeline to start sending.
struct LoadStart: Sendable {}

/// What every client of a run shares (immutable).
struct LoadSettings: Sendable {
    var wireProtocol: LoadProtocol
    var room: String
    var password: String
    var total: Int
    var intervalNanos: UInt64
    var bodyBytes: Int
}

/// Counters and results of a run, shared by all clients.
final class LoadState: Sendable {
    let delivered = Atomic<Int>(0)
    let sent = Atomic<Int>(0)
    let acks = Atomic<Int>(0)
    let firstSend = Atomic<UInt64>(0)
    let lastSend = Atomic<UInt64>(0)
    let lastReceive = Atomic<UInt64>(0)
    let senderDone = Atomic<Bool>(false)

    struct Collected {
        var samples: [UInt64] = []
        var ackSamples: [UInt64] = []
        var outOfOrder = 0
        var errorCount = 0
        var firstErrors: [String] = []
    }

    private let collected = Mutex(Collected())

    func error(_ text: String) {
        collected.withLock { c in
            c.errorCount += 1
            if c.firstErrors.count < 5 { c.firstErrors.append(String(text.prefix(200))) }
        }
    }

    func resetErrors() {
        collected.withLock { c in
            c.errorCount = 0
            c.firstErrors = []
        }
    }

    func hand(samples: [UInt64], ackSamples: [UInt64], outOfOrder: Int) {
        collected.withLock { c in
            c.samples.append(contentsOf: samples)
            c.ackSamples.append(contentsOf: ackSamples)
            c.outOfOrder += outOfOrder
        }
    }

    func snapshot() -> Collected { collected.withLock { $0 } }
}

/// One client connection: logs in, joins, then receives (or sends) and measures.
final class LoadClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Role { case receiver, sender }
    enum Phase { case login, joining, ready, closed }

    private let role: Role
    private let user: String
    private let settings: LoadSettings
    private let state: LoadState
    private let ready: EventLoopPromise<Void>
    private var phase = Phase.login
    private var buffer = ByteBuffer()
    private var context: ChannelHandlerContext?

    // Receiver.
    private var samples: [UInt64] = []
    private var lastIndex = -1
    private var outOfOrder = 0

    // Sender.
    private var task: RepeatedTask?
    private var start: UInt64 = 0
    private var sentCount = 0
    private var sendTimes: [UInt64] = []
    private var ackCount = 0
    private var ackSamples: [UInt64] = []
    private let filler: String

    init(role: Role, user: String, settings: LoadSettings, state: LoadState, ready: EventLoopPromise<Void>) {
        self.role = role
        self.user = user
        self.settings = settings
        self.state = state
        self.ready = ready
        // "<20-digit nanos> <8-digit index> " is 30 bytes; the filler brings the body to size.
        self.filler = makeBody(bytes: settings.bodyBytes - 30)
        if role == .receiver { samples.reserveCapacity(settings.total) }
        if role == .sender {
            sendTimes.reserveCapacity(settings.total)
            ackSamples.reserveCapacity(settings.total)
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        buffer = context.channel.allocator.buffer(capacity: 16 * 1024)
    }

    func channelActive(context: ChannelHandlerContext) {
        switch settings.wireProtocol {
        case .line:
            send("AUTH \(user) \(settings.password)\n", flush: true)
        case .irc:
            send("NICK \(user)\r\nUSER \(user) 0 * :switchboard bench\r\n", flush: true)
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if phase != .ready && phase != .closed {
            ready.fail(LoadError("\(user): connection closed during login/join"))
        }
        phase = .closed
        task?.cancel()
        task = nil
        state.hand(samples: samples, ackSamples: ackSamples, outOfOrder: outOfOrder)
        samples = []
        ackSamples = []
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        state.error("\(user): \(error)")
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is LoadStart, role == .sender, phase == .ready {
            startSending(context: context)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = monoNanos()
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        while true {
            let consumed: Int? = buffer.withUnsafeReadableBytes { raw -> Int? in
                guard let newline = raw.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
                var end = newline
                if end > 0, raw[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                handleLine(UnsafeRawBufferPointer(rebasing: raw[0..<end]), now: now)
                return newline + 1
            }
            guard let consumed else { break }
            buffer.moveReaderIndex(forwardBy: consumed)
        }
        if buffer.readerIndex > 8192 { buffer.discardReadBytes() }
    }

    // MARK: Lines

    private func handleLine(_ line: UnsafeRawBufferPointer, now: UInt64) {
        switch settings.wireProtocol {
        case .line: handleLineProtocol(line, now: now)
        case .irc: handleIRC(line, now: now)
        }
    }

    private func handleLineProtocol(_ line: UnsafeRawBufferPointer, now: UInt64) {
        if phase == .ready {
            if role == .receiver, Self.hasPrefix(line, "MSG ") {
                // MSG <room> <seq> <ts> <user> <via> <text…>
                if let start = Self.afterSpaces(line, 6) { received(line, from: start, now: now) }
                return
            }
            if role == .sender, Self.hasPrefix(line, "OK SAY") {
                if ackCount < sendTimes.count { ackSamples.append(now - sendTimes[ackCount]) }
                ackCount += 1
                state.acks.wrappingAdd(1, ordering: .relaxed)
                return
            }
            if Self.hasPrefix(line, "ERR ") { state.error("\(user): \(String(decoding: line, as: UTF8.self))") }
            return
        }
        let text = String(decoding: line, as: UTF8.self)
        if text.hasPrefix("ERR ") {
            ready.fail(LoadError("\(user): \(text)"))
            phase = .closed
            context?.close(promise: nil)
        } else if phase == .login, text.hasPrefix("OK AUTH") {
            phase = .joining
            send("JOIN \(settings.room)\n", flush: true)
        } else if phase == .joining, text.hasPrefix("OK JOIN") {
            phase = .ready
            ready.succeed(())
        }
    }

    private func handleIRC(_ line: UnsafeRawBufferPointer, now: UInt64) {
        if Self.hasPrefix(line, "PING") {
            let token = String(decoding: line.dropFirst(4), as: UTF8.self)
            send("PONG\(token)\r\n", flush: true)
            return
        }
        if phase == .ready {
            // :nick!user@host PRIVMSG #room :<text…>
            if role == .receiver, let command = Self.afterSpaces(line, 1), Self.hasPrefix(line, "PRIVMSG ", at: command),
               let text = Self.find(line, " :", from: command) {
                received(line, from: text + 2, now: now)
                return
            }
            if let command = Self.afterSpaces(line, 1), let code = Self.numeric(line, at: command), code >= 400 {
                state.error("\(user): \(String(decoding: line, as: UTF8.self))")
            } else if Self.hasPrefix(line, "ERROR") {
                state.error("\(user): \(String(decoding: line, as: UTF8.self))")
            }
            return
        }
        let text = String(decoding: line, as: UTF8.self)
        let parts = text.split(separator: " ", maxSplits: 3)
        if text.hasPrefix("ERROR") || (parts.count > 1 && Int(parts[1]).map { $0 >= 400 } == true) {
            ready.fail(LoadError("\(user): \(text)"))
            phase = .closed
            context?.close(promise: nil)
        } else if phase == .login, parts.count > 1, parts[1] == "001" {
            phase = .joining
            send("JOIN #\(settings.room)\r\n", flush: true)
        } else if phase == .joining, parts.count > 1, parts[1] == "366" {
            phase = .ready
            ready.succeed(())
        }
    }

    /// A delivered message whose text starts at `start`: "<nanos> <index> …".
    private func received(_ line: UnsafeRawBufferPointer, from start: Int, now: UInt64) {
        var i = start
        guard let sentAt = Self.number(line, &i) else { return }
        i += 1
        guard let index = Self.number(line, &i) else { return }
        samples.append(now &- sentAt)
        if Int(index) != lastIndex + 1 { outOfOrder += 1 }
        lastIndex = Int(index)
        state.delivered.wrappingAdd(1, ordering: .relaxed)
        state.lastReceive.atomicMax(now)
    }

    // MARK: Sending

    private func startSending(context: ChannelHandlerContext) {
        start = monoNanos()
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        task = context.eventLoop.scheduleRepeatedTask(
            initialDelay: .zero, delay: .nanoseconds(Int64(settings.intervalNanos))
        ) { _ in
            bound.value.tick()
        }
    }

    private func tick() {
        guard phase == .ready, let context else { return }
        let now = monoNanos()
        let due = min(settings.total, Int((now - start) / settings.intervalNanos) + 1)
        guard sentCount < due else { return }
        while sentCount < due {
            let at = monoNanos()
            let body = Self.digits(at, width: 20) + " " + Self.digits(UInt64(sentCount), width: 8) + " " + filler
            let line: String
            switch settings.wireProtocol {
            case .line: line = "SAY \(settings.room) \(body)\n"
            case .irc: line = "PRIVMSG #\(settings.room) :\(body)\r\n"
            }
            var out = context.channel.allocator.buffer(capacity: line.utf8.count)
            out.writeString(line)
            context.write(wrapOutboundOut(out), promise: nil)
            if sentCount == 0 { state.firstSend.store(at, ordering: .relaxed) }
            state.lastSend.store(at, ordering: .relaxed)
            sendTimes.append(at)
            sentCount += 1
        }
        context.flush()
        state.sent.store(sentCount, ordering: .relaxed)
        if sentCount >= settings.total {
            task?.cancel()
            task = nil
            state.senderDone.store(true, ordering: .releasing)
        }
    }

    private func send(_ text: String, flush: Bool) {
        guard let context else { return }
        var out = context.channel.allocator.buffer(capacity: text.utf8.count)
        out.writeString(text)
        context.write(wrapOutboundOut(out), promise: nil)
        if flush { context.flush() }
    }

    // MARK: Byte helpers

    static func hasPrefix(_ line: UnsafeRawBufferPointer, _ prefix: StaticString, at offset: Int = 0) -> Bool {
        let count = prefix.utf8CodeUnitCount
        guard line.count - offset >= count else { return false }
        let p = prefix.utf8Start
        for k in 0..<count where line[offset + k] != p[k] { return false }
        return true
    }

    /// The index just after the `n`-th space, or nil.
    static func afterSpaces(_ line: UnsafeRawBufferPointer, _ n: Int) -> Int? {
        var seen = 0
        for i in 0..<line.count where line[i] == UInt8(ascii: " ") {
            seen += 1
            if seen == n { return i + 1 }
        }
        return nil
    }

    static func find(_ line: UnsafeRawBufferPointer, _ needle: StaticString, from: Int) -> Int? {
        let count = needle.utf8CodeUnitCount
        guard line.count >= count else { return nil }
        var i = from
        while i + count <= line.count {
            if hasPrefix(line, needle, at: i) { return i }
            i += 1
        }
        return nil
    }

    static func number(_ line: UnsafeRawBufferPointer, _ i: inout Int) -> UInt64? {
        var value: UInt64 = 0
        let begin = i
        while i < line.count, line[i] >= UInt8(ascii: "0"), line[i] <= UInt8(ascii: "9") {
            value = value &* 10 &+ UInt64(line[i] - UInt8(ascii: "0"))
            i += 1
        }
        return i > begin ? value : nil
    }

    static func numeric(_ line: UnsafeRawBufferPointer, at offset: Int) -> Int? {
        var i = offset
        guard let value = number(line, &i), i - offset == 3 else { return nil }
        return Int(value)
    }

    static func digits(_ value: UInt64, width: Int) -> String {
        let s = String(value)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }
}
