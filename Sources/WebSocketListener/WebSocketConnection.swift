import DequeModule
import HummingbirdWebSocket
import ListenerSupport
import Logging
import NIOCore
import NIOWebSocket
import Synchronization
import SwitchboardCore

/// What every connection of one listener shares.
struct WebSocketShared: Sendable {
    var bus: any MessageBus
    var authenticator: PasswordAuthenticator
    var accounts: any AccountStore
    var tokens: BearerTokens
    var settings: WebSocketSettings
    var connections: ConnectionRegistry
    var frameCaches: EnvelopeEncodingCacheTable
    var logger: Logger
    var clock: @Sendable () -> Int64
}

/// One `/ws` connection.
///
/// Reading runs as a task over Hummingbird's inbound stream: each client frame
/// is checked and run against the bus. Writing happens on the channel's event
/// loop (``Writer``): replies, the session's outbox and history replays are
/// written there straight into the channel and flushed once per burst, so a
/// fan-out to thousands of connections costs one wakeup per event loop, not a
/// task per connection. Only the closing handshake goes through Hummingbird's
/// writer, which owns the WebSocket state machine.
final class WebSocketConnection: Sendable {
    let id: UInt64
    private let shared: WebSocketShared
    private let eventLoop: any EventLoop
    private let writer: NIOLoopBound<Writer>
    private let drainer: NIOLoopBound<any OutboxDrainer>
    private let wakeups: LoopWakeups
    /// The authenticated session, for the reader (the writer keeps its own reference).
    private let sessionBox = Mutex<SessionHandle?>(nil)
    /// Uptime (ns) of the last frame from the client, for the idle timeout.
    private let lastInput: Atomic<UInt64>
    /// Resumed once the writer has sent the goodbye and the close frame.
    private let goodbye = Goodbye()
    private let logger: Logger

    static let maxAuthFailures = 3

    private init(id: UInt64, shared: WebSocketShared, channel: any Channel, outbound: WebSocketOutboundWriter,
                 wakeups: LoopWakeups, logger: Logger) {
        self.id = id
        self.shared = shared
        self.eventLoop = channel.eventLoop
        self.wakeups = wakeups
        self.lastInput = Atomic(NIODeadline.now().uptimeNanoseconds)
        self.logger = logger
        let frames = shared.frameCaches.cache(for: channel.eventLoop)
        let writer = Writer(channel: channel, outbound: outbound, bus: shared.bus, logger: logger, goodbye: goodbye, frames: frames)
        self.writer = NIOLoopBound(writer, eventLoop: channel.eventLoop)
        self.drainer = NIOLoopBound(writer, eventLoop: channel.eventLoop)
    }

    /// Makes a connection on its channel's event loop (its writer lives there).
    static func make(id: UInt64, shared: WebSocketShared, channel: any Channel, outbound: WebSocketOutboundWriter,
                     wakeups: LoopWakeups, logger: Logger) async throws -> WebSocketConnection {
        try await channel.eventLoop.submit {
            let connection = WebSocketConnection(
                id: id, shared: shared, channel: channel, outbound: outbound, wakeups: wakeups, logger: logger)
            let pingInterval = shared.settings.pingIntervalSeconds
            if pingInterval > 0 {
                // Keepalive pings from the loop, not Hummingbird's auto-ping task (about 3 KiB
                // per idle connection). Pongs are seen right after the frame decoder.
                let pipeline = channel.pipeline.syncOperations
                let writer = connection.writer.value
                if let decoder = try? pipeline.context(handlerType: ByteToMessageHandler<WebSocketFrameDecoder>.self) {
                    try pipeline.addHandler(WebSocketFrameWatch(writer: writer), position: .after(decoder.handler))
                    writer.startPinging(every: .seconds(Int64(pingInterval)))
                } else {
                    logger.warning("websocket pipeline has no frame decoder; keepalive pings are off for this connection")
                }
            }
            return connection
        }.get()
    }

    var session: SessionHandle? { sessionBox.withLock { $0 } }

    // MARK: Lifecycle

    /// Serves the connection until the client leaves or the server closed it.
    func run(inbound: WebSocketInboundStream) async {
        // One task per connection (this one): the idle timeout is an event-loop timer and
        // the writer lives on the loop, so an idle connection costs no extra tasks.
        eventLoop.execute { self.scheduleIdleCheck() }
        await readLoop(inbound)
        let session = sessionBox.withLock { box in
            defer { box = nil }
            return box
        }
        if let session { shared.bus.closeSession(session) }
        eventLoop.execute { self.writer.value.detach() }
        logger.debug("websocket connection closed")
    }

    /// Sends `error` and closes with `code`; the first reason wins.
    func requestClose(_ error: SwitchboardError, code: WebSocketErrorCode) {
        eventLoop.execute { self.writer.value.close(error, code: code) }
    }

    private func reply(_ frame: [UInt8]) {
        eventLoop.execute { self.writer.value.reply(frame) }
    }

    private func replyError(_ error: SwitchboardError, request: String?, room: String? = nil, clientID: String? = nil) {
        SwitchboardMetrics.reject(.ws, reason: error.code)
        reply(ServerFrame.error(error, request: request, room: room, clientID: clientID))
    }

    // MARK: Reading

    private func readLoop(_ inbound: WebSocketInboundStream) async {
        var limiter = TokenBucket(rate: shared.settings.ratePerSecond, burst: shared.settings.rateBurst)
        var strikes = 0
        var authFailures = 0
        var message = ByteBuffer()
        var messageOpcode: WebSocketDataFrame.Opcode = .text
        var oversize = false
        do {
            for try await frame in inbound {
                lastInput.store(NIODeadline.now().uptimeNanoseconds, ordering: .relaxed)
                switch frame.opcode {
                case .text, .binary:
                    messageOpcode = frame.opcode
                    message.clear()
                    oversize = false
                case .continuation:
                    break
                }
                var data = frame.data
                if !oversize {
                    if message.readableBytes + data.readableBytes > shared.settings.maxMessageBytes {
                        oversize = true
                        message.clear()
                    } else {
                        message.writeBuffer(&data)
                    }
                }
                guard frame.fin else { continue }

                guard limiter.take(nowNanos: NIODeadline.now().uptimeNanoseconds) else {
                    strikes += 1
                    if strikes > shared.settings.rateBurst {
                        SwitchboardMetrics.reject(.ws, reason: .flood)
                        requestClose(SwitchboardError(.flood, "too many frames too fast; closing the connection"),
                                     code: .policyViolation)
                        // Ending here would let Hummingbird close first, with 1000.
                        await goodbye.wait()
                        return
                    }
                    replyError(SwitchboardError(.rateLimited, "more than \(shared.settings.ratePerSecond) frames per second; frame ignored"),
                               request: nil)
                    continue
                }
                strikes = 0
                if oversize {
                    replyError(SwitchboardError(.messageTooLarge, "message exceeds \(shared.settings.maxMessageBytes) bytes and was ignored"),
                               request: nil)
                    continue
                }
                if messageOpcode == .binary {
                    replyError(SwitchboardError(.binaryNotSupported, "binary frames are not supported; send JSON text frames"),
                               request: nil)
                    continue
                }
                switch ClientFrame.decode(message) {
                case .failure(let failure):
                    replyError(failure.error, request: failure.op, room: failure.room, clientID: failure.clientID)
                case .success(let request):
                    if await handle(request, authFailures: &authFailures) == .stop {
                        await goodbye.wait()
                        return
                    }
                }
            }
        } catch {
            logger.debug("websocket read ended", metadata: ["error": "\(error)"])
        }
    }

    private enum Outcome { case next, stop }

    private func handle(_ frame: ClientFrame, authFailures: inout Int) async -> Outcome {
        switch frame.op {
        case "ping":
            reply(ServerFrame.pong)
            return .next
        case "auth":
            return await authenticate(frame, failures: &authFailures)
        default:
            break
        }
        guard let session else {
            if ["join", "leave", "send", "history", "typing", "occupants"].contains(frame.op) {
                replyError(SwitchboardError(.authRequired, "authenticate first: {\"op\":\"auth\",…}"), request: frame.op,
                           room: frame.room, clientID: frame.op == "send" ? frame.clientID : nil)
            } else {
                replyError(SwitchboardError(.unknownOp, "unknown op '\(frame.op)'"), request: frame.op)
            }
            return .next
        }
        do throws(SwitchboardError) {
            switch frame.op {
            case "join":
                let room = try Self.room(frame.room)
                let since = try Self.sequence(frame.since, field: "since")
                try shared.bus.join(session, room: room, since: since)
            case "leave":
                try shared.bus.leave(session, room: try Self.room(frame.room))
            case "send":
                try await send(frame, session: session)
            case "history":
                let room = try Self.room(frame.room)
                let before = try Self.sequence(frame.before, field: "before")
                let limit = try Self.limit(frame.limit)
                let envelopes = try await shared.bus.history(of: room, reader: session.user, before: before, after: nil, limit: limit)
                reply(ServerFrame.history(room, envelopes))
            case "occupants":
                let room = try Self.room(frame.room)
                try AccessRules.canRead(room, user: session.user)
                reply(ServerFrame.occupants(room, shared.bus.occupants(of: room)))
            case "typing":
                try shared.bus.typing(session, room: try Self.room(frame.room))
            default:
                throw SwitchboardError(.unknownOp, "unknown op '\(frame.op)'")
            }
        } catch {
            replyError(error, request: frame.op, room: frame.room, clientID: frame.op == "send" ? frame.clientID : nil)
        }
        return .next
    }

    private func authenticate(_ frame: ClientFrame, failures: inout Int) async -> Outcome {
        if let session {
            replyError(SwitchboardError(.alreadyAuthenticated, "this connection is already authenticated as \(session.user)"),
                       request: "auth")
            return .next
        }
        var user: UserName?
        var failure = SwitchboardError(.authFailed, "invalid user or password")
        if let token = frame.token {
            do {
                user = try shared.tokens.verify(token, nowMillis: shared.clock())
            } catch {
                failure = SwitchboardError(.authFailed, error == .expired ? "the token has expired" : "the token is not valid")
            }
        } else if let name = frame.user, let password = frame.password {
            user = await shared.authenticator.authenticate(user: name, password: password)
        } else {
            replyError(SwitchboardError(.badRequest, "auth needs 'user' and 'password', or 'token'"), request: "auth")
            return .next
        }
        guard let user else {
            failures += 1
            logger.info("websocket auth failed", metadata: ["failures": "\(failures)"])
            if failures >= Self.maxAuthFailures {
                SwitchboardMetrics.reject(.ws, reason: .authFailed)
                requestClose(SwitchboardError(.authFailed, "\(failure.message); too many failures, closing"), code: .policyViolation)
                return .stop
            }
            replyError(failure, request: "auth")
            return .next
        }
        let sink = WebSocketSessionSink(connection: self, drainer: drainer, wakeups: wakeups)
        let session = shared.bus.openSession(user: user, display: nil, via: .ws, sink: sink)
        sessionBox.withLock { $0 = session }
        logger.info("websocket session authenticated", metadata: ["user": "\(user)"])
        eventLoop.execute {
            self.writer.value.reply(ServerFrame.authenticated(user))
            self.writer.value.attach(session)
        }
        return .next
    }

    private static let sendableKinds: Set<EnvelopeKind> = [.chat, .receipt, .reaction, .edit, .retract]

    private func send(_ frame: ClientFrame, session: SessionHandle) async throws(SwitchboardError) {
        guard let body = frame.body else { throw SwitchboardError(.badRequest, "send needs a 'body'") }
        let kind = try Self.kind(frame.kind)
        let room: RoomName
        switch (frame.room, frame.to) {
        case (let name?, nil):
            room = try Self.room(name)
        case (nil, let name?):
            guard let user = UserName(name) else { throw SwitchboardError(.invalidUser, "'\(name)' is not a valid user name") }
            guard (try? await shared.accounts.credentials(for: user)) != nil else {
                throw SwitchboardError(.noSuchUser, "no user named \(user)")
            }
            room = .direct(session.user, user)
        default:
            throw SwitchboardError(.badRequest, "send needs exactly one of 'room' or 'to'")
        }
        let draft = EnvelopeDraft(room: room, from: session.sender, kind: kind, body: body,
                                  attrs: frame.attrs ?? [:], clientID: frame.clientID)
        try shared.bus.publish(draft, from: session)
    }

    // MARK: Field checks

    static func room(_ name: String?) throws(SwitchboardError) -> RoomName {
        guard let name else { throw SwitchboardError(.badRequest, "missing field 'room'") }
        guard let room = RoomName(name) else {
            throw SwitchboardError(.invalidRoom, "'\(name)' is not a valid room name (1–64 of a-z 0-9 . _ -)")
        }
        if case .invalidReserved = room.scope {
            throw SwitchboardError(.invalidRoom, "room names starting with dm. or calls. are reserved")
        }
        return room
    }

    static func sequence(_ value: Int64?, field: String) throws(SwitchboardError) -> UInt64? {
        guard let value else { return nil }
        guard value >= 0 else { throw SwitchboardError(.badRequest, "'\(field)' must be a seq (0 or more)") }
        return UInt64(value)
    }

    static func limit(_ value: Int64?) throws(SwitchboardError) -> Int {
        guard let value else { return WebSocketSettings.defaultHistoryLimit }
        guard (1...Int64(WebSocketSettings.maxHistoryLimit)).contains(value) else {
            throw SwitchboardError(.badRequest, "'limit' must be 1–\(WebSocketSettings.maxHistoryLimit)")
        }
        return Int(value)
    }

    static func kind(_ name: String?) throws(SwitchboardError) -> EnvelopeKind {
        guard let name else { return .chat }
        guard let kind = EnvelopeKind(rawValue: name), sendableKinds.contains(kind) else {
            throw SwitchboardError(.invalidKind, "kind must be one of chat, receipt, reaction, edit, retract")
        }
        return kind
    }

    // MARK: Idle timeout

    /// Arms a timer for when the connection would have been idle for `idle_timeout_seconds`.
    private func scheduleIdleCheck() {
        let timeout = Int64(shared.settings.idleTimeoutSeconds) * 1_000_000_000
        let deadline = NIODeadline.uptimeNanoseconds(lastInput.load(ordering: .relaxed)) + .nanoseconds(timeout)
        eventLoop.scheduleTask(deadline: deadline) { [weak self] in self?.checkIdle() }
    }

    private func checkIdle() {
        let timeout = UInt64(shared.settings.idleTimeoutSeconds) * 1_000_000_000
        guard NIODeadline.now().uptimeNanoseconds >= lastInput.load(ordering: .relaxed) + timeout else {
            scheduleIdleCheck()
            return
        }
        SwitchboardMetrics.reject(.ws, reason: .idleTimeout)
        requestClose(SwitchboardError(.idleTimeout, "no frame for \(shared.settings.idleTimeoutSeconds) seconds"),
                     code: .normalClosure)
    }
}

/// Connects a WebSocket session's outbox to its connection's event loop.
final class WebSocketSessionSink: SessionSink {
    private weak let connection: WebSocketConnection?
    private let drainer: NIOLoopBound<any OutboxDrainer>
    private let wakeups: LoopWakeups

    init(connection: WebSocketConnection, drainer: NIOLoopBound<any OutboxDrainer>, wakeups: LoopWakeups) {
        self.connection = connection
        self.drainer = drainer
        self.wakeups = wakeups
    }

    func outboxReady() {
        wakeups.signal(drainer)
    }

    func closeRequested(_ reason: SwitchboardError) {
        connection?.requestClose(reason, code: reason.code == .shuttingDown ? .goingAway : .policyViolation)
    }
}

/// Resumes one waiter once (the connection's goodbye was sent).
final class Goodbye: Sendable {
    private let state = Mutex<(done: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.done = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Returns once signalled, or when the task is cancelled.
    func wait() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let done = state.withLock { state in
                    if !state.done { state.waiter = continuation }
                    return state.done
                }
                if done { continuation.resume() }
            }
        } onCancel: {
            signal()
        }
    }
}

/// The open connections: for `max_connections` and for saying goodbye on shutdown.
final class ConnectionRegistry: Sendable {
    private let connections = Mutex<[UInt64: WebSocketConnection]>([:])
    private let nextID = Atomic<UInt64>(1)

    func makeID() -> UInt64 { nextID.wrappingAdd(1, ordering: .relaxed).oldValue }

    var count: Int { connections.withLock { $0.count } }

    func add(_ connection: WebSocketConnection) {
        connections.withLock { $0[connection.id] = connection }
    }

    func remove(_ connection: WebSocketConnection) {
        _ = connections.withLock { $0.removeValue(forKey: connection.id) }
    }

    var all: [WebSocketConnection] { connections.withLock { Array($0.values) } }
}
