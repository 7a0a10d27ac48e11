import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// A minimal RFC 6455 client for the load generators in WSBench.swift: the HTTP/1.1 upgrade
// request, masked client frames, unmasked server frames. It parses only what the benchmarks
// need: the op of a server frame and, in room traffic, the body's send timestamp.

/// Which protocol a participant of a WebSocket benchmark speaks.
enum Via: String, ExpressibleByArgument, CaseIterable, Sendable {
    case ws
    case line
}

/// Raises the soft open-files limit to the hard limit (10k+ sockets per process); returns the new soft limit.
@discardableResult
func raiseOpenFileLimit() -> Int {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return -1 }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
    return Int(limit.rlim_cur)
}

/// VmRSS of this process in KiB (from /proc/self/status), or -1.
func ownRSSKiB() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return -1 }
    for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? -1
    }
    return -1
}

/// Frame building and matching helpers.
enum WSWire {
    static let opText: UInt8 = 0x1
    static let opClose: UInt8 = 0x8
    static let opPing: UInt8 = 0x9
    static let opPong: UInt8 = 0xA

    static func upgradeRequest(host: String, port: Int) -> String {
        "GET /ws HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    }

    /// One masked client frame (FIN set) carrying `payload`.
    static func frame(opcode: UInt8, payload: UnsafeRawBufferPointer, mask: UInt32, allocator: ByteBufferAllocator) -> ByteBuffer {
        let count = payload.count
        var out = allocator.buffer(capacity: count + 14)
        out.writeInteger(0x80 | opcode, as: UInt8.self)
        if count < 126 {
            out.writeInteger(0x80 | UInt8(count), as: UInt8.self)
        } else if count <= 0xFFFF {
            out.writeInteger(0x80 | 126, as: UInt8.self)
            out.writeInteger(UInt16(count), as: UInt16.self)
        } else {
            out.writeInteger(0x80 | 127, as: UInt8.self)
            out.writeInteger(UInt64(count), as: UInt64.self)
        }
        out.writeInteger(mask, as: UInt32.self)  // big endian: key bytes k0 k1 k2 k3
        let key: (UInt8, UInt8, UInt8, UInt8) = (UInt8(mask >> 24), UInt8((mask >> 16) & 0xFF), UInt8((mask >> 8) & 0xFF), UInt8(mask & 0xFF))
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { dst in
            for i in 0..<count {
                let k: UInt8
                switch i & 3 {
                case 0: k = key.0
                case 1: k = key.1
                case 2: k = key.2
                default: k = key.3
                }
                dst[i] = payload[i] ^ k
            }
            return count
        }
        return out
    }

    static func frame(opcode: UInt8, text: String, mask: UInt32, allocator: ByteBufferAllocator) -> ByteBuffer {
        var text = text
        return text.withUTF8 { utf8 in frame(opcode: opcode, payload: UnsafeRawBufferPointer(utf8), mask: mask, allocator: allocator) }
    }

    /// `{"op":"send","room":…,"body":…}` — the body must need no JSON escaping.
    static func sendJSON(room: String, body: String) -> String {
        #"{"op":"send","room":""# + room + #"","body":""# + body + #""}"#
    }

    static let chatBodyMarker: [UInt8] = Array(#""kind":"chat","body":""#.utf8)

    /// The offset of `needle` in `haystack`, or nil (memchr for the first byte, then memcmp).
    static func find(_ needle: [UInt8], in haystack: UnsafeRawBufferPointer) -> Int? {
        guard !needle.isEmpty, haystack.count >= needle.count, let base = haystack.baseAddress else { return nil }
        return needle.withUnsafeBytes { n -> Int? in
            let first = Int32(n[0])
            var offset = 0
            let last = haystack.count - n.count
            while offset <= last {
                guard let hit = memchr(base + offset, first, last - offset + 1) else { return nil }
                let at = base.distance(to: UnsafeRawPointer(hit))
                if memcmp(base + at, n.baseAddress!, n.count) == 0 { return at }
                offset = at + 1
            }
            return nil
        }
    }

    static func hasPrefix(_ bytes: UnsafeRawBufferPointer, _ prefix: StaticString) -> Bool {
        LoadClientHandler.hasPrefix(bytes, prefix)
    }
}

/// Counters of a WebSocket run on top of `LoadState`.
final class WSCounters: Sendable {
    /// Connections the server closed (or that broke) while they were set up.
    let closedByServer = Atomic<Int>(0)
    /// Frames the receivers saw in the measured phase (all kinds).
    let framesReceived = Atomic<Int>(0)
    /// Set before the benchmark closes its own connections.
    let closing = Atomic<Bool>(false)
}

/// What every WebSocket client of a run shares (immutable).
struct WSSettings: Sendable {
    var host: String
    var port: Int
    var room: String
    var total: Int
    /// 0: saturation mode (windowed by acks and deliveries) instead of pacing.
    var intervalNanos: UInt64
    var window: Int
    /// Saturation: at most this many messages not yet delivered to every receiver (0: no bound).
    var deliveryWindow: Int
    var receivers: Int
    var bodyBytes: Int
    /// Receivers keep the latency of one message in `sampleStride`.
    var sampleStride: Int
    /// How far an idle connection goes: `join` (auth + join), `auth`, or `upgrade` only.
    var idleStage: IdleStage = .join
}

/// How far `ws-idle` connections are set up (for a memory breakdown).
enum IdleStage: String, ExpressibleByArgument, CaseIterable, Sendable {
    case upgrade, auth, join
}

/// One WebSocket connection: upgrade, `auth` with a bearer token, `join`, then receive (or send) and measure.
final class WSClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Role { case receiver, sender, idle }
    enum Phase { case handshake, auth, joining, ready, closed }

    private let role: Role
    private let index: Int
    private let user: String
    private let token: String
    private let settings: WSSettings
    private let state: LoadState
    private let counters: WSCounters
    private let ready: EventLoopPromise<Void>
    private let mask: UInt32
    private var phase = Phase.handshake
    private var buffer: ByteBuffer?
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
    private var filler = ""

    init(role: Role, index: Int, user: String, token: String, settings: WSSettings, state: LoadState,
         counters: WSCounters, ready: EventLoopPromise<Void>) {
        self.role = role
        self.index = index
        self.user = user
        self.token = token
        self.settings = settings
        self.state = state
        self.counters = counters
        self.ready = ready
        self.mask = UInt32.random(in: 1...UInt32.max)
        if role == .sender {
            // "<20-digit nanos> <8-digit index> " is 30 bytes; the filler brings the body to size.
            filler = makeBody(bytes: settings.bodyBytes - 30)
            sendTimes.reserveCapacity(settings.total)
            ackSamples.reserveCapacity(settings.total)
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelActive(context: ChannelHandlerContext) {
        var out = context.channel.allocator.buffer(capacity: 200)
        out.writeString(WSWire.upgradeRequest(host: settings.host, port: settings.port))
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if phase != .ready && phase != .closed {
            ready.fail(LoadError("\(user)#\(index): connection closed during upgrade/auth/join"))
        } else if phase == .ready && !counters.closing.load(ordering: .relaxed) {
            counters.closedByServer.wrappingAdd(1, ordering: .relaxed)
        }
        phase = .closed
        task?.cancel()
        task = nil
        if !samples.isEmpty || !ackSamples.isEmpty || outOfOrder > 0 {
            state.hand(samples: samples, ackSamples: ackSamples, outOfOrder: outOfOrder)
        }
        samples = []
        ackSamples = []
        buffer = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !counters.closing.load(ordering: .relaxed) { state.error("\(user)#\(index): \(error)") }
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
        if buffer == nil || buffer!.readableBytes == 0 {
            buffer = incoming
        } else {
            buffer!.writeBuffer(&incoming)
        }
        if phase == .handshake {
            let end: Int? = buffer!.withUnsafeReadableBytes { raw in
                WSWire.find(Array("\r\n\r\n".utf8), in: raw).map { $0 + 4 }
            }
            guard let end else { return }
            let head = buffer!.readString(length: end) ?? ""
            guard head.hasPrefix("HTTP/1.1 101") else {
                let status = head.split(separator: "\r\n").first.map(String.init) ?? head
                ready.fail(LoadError("\(user)#\(index): upgrade refused: \(status)"))
                phase = .closed
                context.close(promise: nil)
                return
            }
            if role == .idle && settings.idleStage == .upgrade {
                phase = .ready
                ready.succeed(())
            } else {
                phase = .auth
                sendText(#"{"op":"auth","token":""# + token + #""}"#, context: context)
            }
        }
        var delivered = 0
        var frames = 0
        let consumed = buffer!.withUnsafeReadableBytes { raw -> Int in
            var offset = 0
            while raw.count - offset >= 2 {
                let b0 = raw[offset], b1 = raw[offset + 1]
                var length = Int(b1 & 0x7F)
                var header = 2
                if length == 126 {
                    guard raw.count - offset >= 4 else { break }
                    length = Int(raw[offset + 2]) << 8 | Int(raw[offset + 3])
                    header = 4
                } else if length == 127 {
                    guard raw.count - offset >= 10 else { break }
                    length = 0
                    for k in 0..<8 { length = length << 8 | Int(raw[offset + 2 + k]) }
                    header = 10
                }
                if b1 & 0x80 != 0 { header += 4 }  // a masked server frame: not expected, skip the key
                guard raw.count - offset >= header + length else { break }
                let payload = UnsafeRawBufferPointer(rebasing: raw[(offset + header)..<(offset + header + length)])
                frames += 1
                if b0 & 0x80 == 0 { state.error("\(user): fragmented server frame (not handled)") }
                delivered += handleFrame(opcode: b0 & 0x0F, payload: payload, now: now, context: context)
                offset += header + length
            }
            return offset
        }
        if phase == .closed { return }
        buffer!.moveReaderIndex(forwardBy: consumed)
        if buffer!.readableBytes == 0 { buffer = nil }  // idle connections hold no read buffer
        if delivered > 0 {
            state.delivered.wrappingAdd(delivered, ordering: .relaxed)
            state.lastReceive.atomicMax(now)
        }
        if frames > 0, role == .receiver, phase == .ready {
            counters.framesReceived.wrappingAdd(frames, ordering: .relaxed)
        }
    }

    /// Handles one complete frame; returns 1 when it was a measured delivery.
    private func handleFrame(opcode: UInt8, payload: UnsafeRawBufferPointer, now: UInt64, context: ChannelHandlerContext) -> Int {
        switch opcode {
        case WSWire.opText:
            return handleText(payload, now: now, context: context)
        case WSWire.opPing:
            let pong = WSWire.frame(opcode: WSWire.opPong, payload: payload, mask: mask, allocator: context.channel.allocator)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case WSWire.opClose:
            if phase == .ready, !counters.closing.load(ordering: .relaxed) {
                let code = payload.count >= 2 ? Int(payload[0]) << 8 | Int(payload[1]) : 0
                state.error("\(user)#\(index): server closed the connection (\(code))")
            }
            if phase != .ready && phase != .closed {
                ready.fail(LoadError("\(user)#\(index): server closed the connection during setup"))
                phase = .closed
            }
            context.close(promise: nil)
        default:
            break
        }
        return 0
    }

    private func handleText(_ text: UnsafeRawBufferPointer, now: UInt64, context: ChannelHandlerContext) -> Int {
        if phase == .ready {
            switch role {
            case .receiver:
                if let at = WSWire.find(WSWire.chatBodyMarker, in: text) {
                    return received(text, from: at + WSWire.chatBodyMarker.count, now: now)
                }
            case .sender:
                if WSWire.hasPrefix(text, #"{"op":"ack""#) {
                    if ackCount < sendTimes.count { ackSamples.append(now &- sendTimes[ackCount]) }
                    ackCount += 1
                    state.acks.wrappingAdd(1, ordering: .relaxed)
                    if settings.intervalNanos == 0 { pump() }
                    return 0
                }
            case .idle:
                break
            }
            if WSWire.hasPrefix(text, #"{"op":"error""#) {
                state.error("\(user)#\(index): \(String(decoding: text, as: UTF8.self))")
            }
            return 0
        }
        if WSWire.hasPrefix(text, #"{"op":"error""#) {
            ready.fail(LoadError("\(user)#\(index): \(String(decoding: text, as: UTF8.self))"))
            phase = .closed
            context.close(promise: nil)
        } else if phase == .auth, WSWire.hasPrefix(text, #"{"op":"authenticated""#) {
            if role == .idle && settings.idleStage == .auth {
                phase = .ready
                ready.succeed(())
                return 0
            }
            phase = .joining
            sendText(#"{"op":"join","room":""# + settings.room + #""}"#, context: context)
        } else if phase == .joining, WSWire.hasPrefix(text, #"{"op":"joined""#) {
            phase = .ready
            ready.succeed(())
        }
        return 0
    }

    /// A delivered chat envelope whose body starts at `start`: "<nanos> <index> …".
    private func received(_ text: UnsafeRawBufferPointer, from start: Int, now: UInt64) -> Int {
        var i = start
        guard let sentAt = LoadClientHandler.number(text, &i) else { return 0 }
        i += 1
        guard let messageIndex = LoadClientHandler.number(text, &i) else { return 0 }
        let m = Int(messageIndex)
        if (m &+ index) % settings.sampleStride == 0 { samples.append(now &- sentAt) }
        if m != lastIndex + 1 { outOfOrder += 1 }
        lastIndex = m
        return 1
    }

    // MARK: Sending

    private func sendText(_ text: String, context: ChannelHandlerContext) {
        let frame = WSWire.frame(opcode: WSWire.opText, text: text, mask: mask, allocator: context.channel.allocator)
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }

    private func startSending(context: ChannelHandlerContext) {
        start = monoNanos()
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        if settings.intervalNanos > 0 {
            task = context.eventLoop.scheduleRepeatedTask(
                initialDelay: .zero, delay: .nanoseconds(Int64(settings.intervalNanos))
            ) { _ in
                bound.value.tick()
            }
        } else {
            // Saturation: acks drive the window; a timer re-checks the delivery window.
            task = context.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .microseconds(200)) { _ in
                bound.value.pump()
            }
        }
    }

    /// Paced: sends what is due by now.
    private func tick() {
        guard phase == .ready, let context else { return }
        let now = monoNanos()
        let due = min(settings.total, Int((now - start) / settings.intervalNanos) + 1)
        guard sentCount < due else { return }
        while sentCount < due { sendOne(context: context) }
        context.flush()
        finishIfDone()
    }

    /// Saturation: sends while fewer than `window` are unacknowledged and fewer than
    /// `deliveryWindow` messages are not yet delivered to every receiver.
    private func pump() {
        guard phase == .ready, let context, sentCount < settings.total else { return }
        var wrote = false
        let receivers = max(1, settings.receivers)
        while sentCount < settings.total, sentCount - ackCount < settings.window {
            if settings.deliveryWindow > 0 {
                let deliveredAll = state.delivered.load(ordering: .relaxed) / receivers
                if sentCount - deliveredAll >= settings.deliveryWindow { break }
            }
            sendOne(context: context)
            wrote = true
        }
        if wrote { context.flush() }
        finishIfDone()
    }

    private func sendOne(context: ChannelHandlerContext) {
        let at = monoNanos()
        let body = LoadClientHandler.digits(at, width: 20) + " " + LoadClientHandler.digits(UInt64(sentCount), width: 8) + " " + filler
        let frame = WSWire.frame(opcode: WSWire.opText, text: WSWire.sendJSON(room: settings.room, body: body),
                                 mask: mask, allocator: context.channel.allocator)
        context.write(wrapOutboundOut(frame), promise: nil)
        if sentCount == 0 { state.firstSend.store(at, ordering: .relaxed) }
        state.lastSend.store(at, ordering: .relaxed)
        sendTimes.append(at)
        sentCount += 1
        state.sent.store(sentCount, ordering: .relaxed)
    }

    private func finishIfDone() {
        if sentCount >= settings.total {
            task?.cancel()
            task = nil
            state.senderDone.store(true, ordering: .releasing)
        }
    }
}

// MARK: Tokens

/// `POST /api/v1/token` for each user (one short HTTP/1.1 connection each); user → token.
func fetchTokens(group: any EventLoopGroup, host: String, port: Int, users: [String], password: String) async throws -> [String: String] {
    var tokens: [String: String] = [:]
    for user in users where tokens[user] == nil {
        let body = #"{"user":""# + user + #"","password":""# + password + #""}"#
        let request = "POST /api/v1/token HTTP/1.1\r\nHost: \(host):\(port)\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
        let done = group.next().makePromise(of: ByteBuffer.self)
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HTTPOneShotHandler(request: request, done: done))
                }
            }
            .connect(host: host, port: port).get()
        let response = try await done.futureResult.get()
        channel.close(promise: nil)
        let text = String(buffer: response)
        guard text.hasPrefix("HTTP/1.1 200"), let range = text.range(of: #""token":""#),
              let end = text[range.upperBound...].firstIndex(of: "\"")
        else {
            throw LoadError("POST /api/v1/token for \(user) failed: \(text.split(separator: "\r\n").first ?? "no answer")")
        }
        tokens[user] = String(text[range.upperBound..<end])
    }
    return tokens
}

/// Writes one request and collects the response until the body (Content-Length) is complete or the peer closes.
private final class HTTPOneShotHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let request: String
    private let done: EventLoopPromise<ByteBuffer>
    private var response = ByteBuffer()
    private var finished = false

    init(request: String, done: EventLoopPromise<ByteBuffer>) {
        self.request = request
        self.done = done
    }

    func channelActive(context: ChannelHandlerContext) {
        var out = context.channel.allocator.buffer(capacity: request.utf8.count)
        out.writeString(request)
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        response.writeBuffer(&incoming)
        let text = String(buffer: response)
        if let headEnd = text.range(of: "\r\n\r\n") {
            let head = text[..<headEnd.lowerBound].lowercased()
            if let cl = head.range(of: "content-length:") {
                let digits = head[cl.upperBound...].prefix { $0 == " " || $0.isNumber }.trimmingCharacters(in: .whitespaces)
                if let length = Int(digits), text.utf8.count - text[..<headEnd.upperBound].utf8.count >= length {
                    finish()
                    context.close(promise: nil)
                }
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !finished {
            finished = true
            done.fail(error)
        }
        context.close(promise: nil)
    }

    private func finish() {
        guard !finished else { return }
        finished = true
        done.succeed(response)
    }
}
