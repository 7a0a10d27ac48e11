import DequeModule
import ListenerSupport
import Logging
import NIOCore
import NIOWebSocket
import Synchronization
import SwitchboardCore

/// What every connection of one listener shares (one instance: a connection keeps a reference).
final class WebSocketShared: Sendable {
    let bus: any MessageBus
    let authenticator: PasswordAuthenticator
    let accounts: any AccountStore
    let tokens: BearerTokens
    let settings: WebSocketSettings
    let connections: ConnectionRegistry
    let frameCaches: EnvelopeEncodingCacheTable
    let wakeups: LoopWakeupTable
    let logger: Logger
    let clock: @Sendable () -> Int64

    init(bus: any MessageBus, authenticator: PasswordAuthenticator, accounts: any AccountStore, tokens: BearerTokens,
         settings: WebSocketSettings, connections: ConnectionRegistry, frameCaches: EnvelopeEncodingCacheTable,
         wakeups: LoopWakeupTable, logger: Logger, clock: @escaping @Sendable () -> Int64) {
        self.bus = bus
        self.authenticator = authenticator
        self.accounts = accounts
        self.tokens = tokens
        self.settings = settings
        self.connections = connections
        self.frameCaches = frameCaches
        self.wakeups = wakeups
        self.logger = logger
        self.clock = clock
    }
}

/// One `/ws` connection: a channel handler right after SwiftNIO's WebSocket frame
/// decoder, confined to the channel's event loop.
///
/// An idle connection is this handler, its ``Writer`` and the channel: no Swift
/// task, no async stream. Client messages run against the bus in arrival order;
/// the few that need an asynchronous lookup (a password check, a history page, a
/// direct message's addressee) hold the messages behind them until they finish,
/// and while messages wait the socket is not read, so TCP pushes back on the
/// client. Writing (replies, the session's outbox, history replays, pings and
/// the closing handshake) is the ``Writer``'s.
final class WebSocketConnection: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame

    /// A complete client message (the frames of a fragmented one joined).
    private struct Message {
        var binary: Bool
        /// Nil when the message was larger than `max_message_bytes` (dropped while reading).
        var payload: ByteBuffer?
    }

    private let shared: WebSocketShared
    private let handle: WebSocketConnectionHandle
    private let writer: Writer
    private var context: ChannelHandlerContext?
    private var session: SessionHandle?
    private var limiter: TokenBucket
    private var strikes = 0
    private var authFailures = 0
    /// The fragmented message being read, if any.
    private var fragments: Message?
    private var held: Deque<Message> = []
    private var busyAsync = false
    /// The peer closed its side of the TCP connection without a close frame.
    private var inputClosed = false
    private var reading = true
    /// No more client messages are run (closing, or closed).
    private var stopped = false
    private var tornDown = false
    private var lastInput = NIODeadline.now()
    /// When the next keepalive ping is due (nil: pings are off).
    private var nextPing: NIODeadline?
    /// One timer per connection, for whichever comes first: the idle timeout or the next ping.
    private var timer: Scheduled<Void>?

    static let maxAuthFailures = 3
    static let maxHeldMessages = 64

    /// Adds a connection to an upgraded channel's pipeline (on its event loop).
    static func install(on channel: any Channel, shared: WebSocketShared) throws {
        let handle = WebSocketConnectionHandle(id: shared.connections.makeID(), eventLoop: channel.eventLoop)
        let connection = try WebSocketConnection(shared: shared, handle: handle, channel: channel)
        try channel.pipeline.syncOperations.addHandler(connection)
        handle.connection.value = connection
        shared.connections.add(handle)
    }

    private init(shared: WebSocketShared, handle: WebSocketConnectionHandle, channel: any Channel) throws {
        self.shared = shared
        self.handle = handle
        self.limiter = TokenBucket(rate: shared.settings.ratePerSecond, burst: shared.settings.rateBurst)
        self.writer = try Writer(channel: channel, shared: shared, frames: shared.frameCaches.cache(for: channel.eventLoop))
    }

    private var logger: Logger { shared.logger }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if shared.settings.pingIntervalSeconds > 0 { nextPing = .now() + pingInterval }
        scheduleTimer()
    }

    func channelInactive(context: ChannelHandlerContext) {
        tearDown()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        tearDown()
        self.context = nil
    }

    private func tearDown() {
        guard !tornDown else { return }
        tornDown = true
        handle.connection.value = nil
        stopped = true
        held.removeAll()
        fragments = nil
        timer?.cancel()
        timer = nil
        if let session {
            shared.bus.closeSession(session)
            self.session = nil
        }
        writer.detach()
        shared.connections.remove(handle)
        logger.debug("websocket connection closed", metadata: peer)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        lastInput = .now()
        writer.frameArrived()
        // RFC 6455 §5.1: every client frame is masked. §5.2: with no extension negotiated, no
        // reserved bit may be set, on control frames either.
        guard frame.maskKey != nil, frame.reservedBits.isEmpty else { return protocolError() }
        switch frame.opcode {
        case .connectionClose:
            receivedClose(frame)
        case .ping:
            writer.pong(frame.unmaskedData)
        case .pong:
            break
        case .text, .binary:
            guard fragments == nil else { return protocolError() }
            let fits = frame.length <= shared.settings.maxMessageBytes
            read(frame, into: Message(binary: frame.opcode == .binary, payload: fits ? frame.unmaskedData : nil))
        case .continuation:
            // Taken out, so that appending does not copy the bytes read so far.
            guard var message = fragments.take() else { return protocolError() }
            if let payload = message.payload {
                if payload.readableBytes + frame.length > shared.settings.maxMessageBytes {
                    message.payload = nil
                } else {
                    var data = frame.unmaskedData
                    message.payload!.writeBuffer(&data)
                }
            }
            read(frame, into: message)
        default:
            protocolError()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { writer.drainOutbox() }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            close(SwitchboardError(.shuttingDown, "server is shutting down"), code: .goingAway)
        } else if let event = event as? ChannelEvent, event == .inputClosed {
            // A tab that crashed, a client that dropped the socket (RFC 6455 §7.1.5, 1006): the
            // session ends now, not at the next missed ping, once what was read is answered.
            inputClosed = true
            finishIfPeerLeft()
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("websocket connection error", metadata: peer.merging(["error": "\(error)"]) { $1 })
        // NIO's protocol error handler (before this one) already sent the close frame
        // for a frame the decoder refused, and closes once it is written.
        if !(error is NIOWebSocketError) { context.close(promise: nil) }
    }

    // MARK: Reading messages

    /// `message` holds `frame`'s data now: a final frame completes it.
    private func read(_ frame: WebSocketFrame, into message: Message) {
        guard frame.fin else {
            fragments = message
            return
        }
        fragments = nil
        guard !stopped else { return }
        // RFC 6455 §8.1: a text message that is not UTF-8 fails the connection (1007).
        if !message.binary, let payload = message.payload, !Self.isUTF8(payload) {
            stopped = true
            held.removeAll()
            SwitchboardMetrics.reject(.ws, reason: .badRequest)
            writer.answerClose(.dataInconsistentWithMessage)
            return
        }
        held.append(message)
        pump()
    }

    /// Runs held messages in order until one has to wait for an asynchronous lookup.
    private func pump() {
        while !stopped, !busyAsync, let message = held.popFirst() {
            run(message)
        }
        finishIfPeerLeft()
        updateReading()
    }

    /// After the peer closed its side: once every frame it sent is answered, the replies go
    /// out and the connection closes (which ends the session).
    private func finishIfPeerLeft() {
        guard inputClosed, held.isEmpty, !busyAsync, let context else { return }
        stopped = true
        writer.detach()
        context.close(promise: nil)
    }

    private func updateReading() {
        guard let context, !stopped else { return }
        let wantRead = held.count < Self.maxHeldMessages
        guard wantRead != reading else { return }
        reading = wantRead
        context.channel.setOption(.autoRead, value: wantRead).whenFailure { _ in }
    }

    private func run(_ message: Message) {
        guard limiter.take(nowNanos: NIODeadline.now().uptimeNanoseconds) else {
            strikes += 1
            if strikes > shared.settings.rateBurst {
                SwitchboardMetrics.reject(.ws, reason: .flood)
                close(SwitchboardError(.flood, "too many frames too fast; closing the connection"), code: .policyViolation)
                return
            }
            replyError(SwitchboardError(.rateLimited, "more than \(shared.settings.ratePerSecond) frames per second; frame ignored"),
                       request: nil)
            return
        }
        strikes = 0
        guard let payload = message.payload else {
            return replyError(SwitchboardError(.messageTooLarge, "message exceeds \(shared.settings.maxMessageBytes) bytes and was ignored"),
                              request: nil)
        }
        guard !message.binary else {
            return replyError(SwitchboardError(.binaryNotSupported, "binary frames are not supported; send JSON text frames"),
                              request: nil)
        }
        switch ClientFrame.decode(payload) {
        case .failure(let failure):
            replyError(failure.error, request: failure.op, room: failure.room, clientID: failure.clientID)
        case .success(let request):
            perform(request)
        }
    }

    /// The peer started or answered the closing handshake.
    private func receivedClose(_ frame: WebSocketFrame) {
        stopped = true
        held.removeAll()
        var data = frame.unmaskedData
        let code: WebSocketErrorCode
        switch data.readableBytes {
        case 0:
            code = .normalClosure
        case 1:
            code = .protocolError
        default:
            let received = data.readWebSocketErrorCode()
            let reasonIsText = Self.isUTF8(data)
            code = received.map(Self.isValidCloseCode) == true && reasonIsText ? .normalClosure : .protocolError
        }
        writer.answerClose(code)
    }

    /// Whether `buffer`'s readable bytes are UTF-8, checked where they lie (no String is made
    /// for every text message just to be thrown away).
    static func isUTF8(_ buffer: ByteBuffer) -> Bool {
        do {
            _ = try UTF8Span(validating: buffer.readableBytesUInt8Span)
            return true
        } catch {
            return false
        }
    }

    /// RFC 6455 §7.4: codes a peer may send in a close frame.
    private static func isValidCloseCode(_ code: WebSocketErrorCode) -> Bool {
        switch code {
        case .unknown(let raw): (3000...4999).contains(raw) || [1012, 1013, 1014].contains(raw)
        default: true
        }
    }

    private func protocolError() {
        stopped = true
        held.removeAll()
        SwitchboardMetrics.reject(.ws, reason: .badRequest)
        writer.answerClose(.protocolError)
    }

    // MARK: Requests

    private func perform(_ frame: ClientFrame) {
        switch frame.op {
        case "ping":
            return reply(ServerFrame.pong)
        case "auth":
            return authenticate(frame)
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
            return
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
                try send(frame, session: session)
            case "history":
                let room = try Self.room(frame.room)
                let before = try Self.sequence(frame.before, field: "before")
                let limit = try Self.limit(frame.limit)
                let bus = shared.bus
                runAsync({ () async -> Result<[Envelope], SwitchboardError> in
                    do throws(SwitchboardError) {
                        return .success(try await bus.history(of: room, reader: session.user, before: before, after: nil, limit: limit))
                    } catch {
                        return .failure(error)
                    }
                }) { connection, result in
                    switch result {
                    case .success(let envelopes): connection.reply(ServerFrame.history(room, envelopes))
                    case .failure(let error): connection.replyError(error, request: frame.op, room: frame.room)
                    }
                }
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
    }

    private func authenticate(_ frame: ClientFrame) {
        if let session {
            return replyError(SwitchboardError(.alreadyAuthenticated, "this connection is already authenticated as \(session.user)"),
                              request: "auth")
        }
        if let token = frame.token {
            do {
                finishAuthentication(try shared.tokens.verify(token, nowMillis: shared.clock()), failure: nil)
            } catch {
                finishAuthentication(nil, failure: error == .expired ? "the token has expired" : "the token is not valid")
            }
        } else if let name = frame.user, let password = frame.password {
            let authenticator = shared.authenticator
            runAsync({ await authenticator.authenticate(user: name, password: password) }) { connection, user in
                connection.finishAuthentication(user, failure: nil)
            }
        } else {
            replyError(SwitchboardError(.badRequest, "auth needs 'user' and 'password', or 'token'"), request: "auth")
        }
    }

    private func finishAuthentication(_ user: UserName?, failure: String?) {
        guard let user else {
            authFailures += 1
            let message = failure ?? "invalid user or password"
            logger.info("websocket auth failed", metadata: peer.merging(["failures": "\(authFailures)"]) { $1 })
            if authFailures >= Self.maxAuthFailures {
                SwitchboardMetrics.reject(.ws, reason: .authFailed)
                close(SwitchboardError(.authFailed, "\(message); too many failures, closing"), code: .policyViolation)
            } else {
                replyError(SwitchboardError(.authFailed, message), request: "auth")
            }
            return
        }
        let drainer = NIOLoopBound<any OutboxDrainer>(writer, eventLoop: handle.eventLoop)
        let sink = WebSocketSessionSink(handle: handle, drainer: drainer,
                                        wakeups: shared.wakeups.wakeups(for: handle.eventLoop))
        let session = shared.bus.openSession(user: user, display: nil, via: .ws, sink: sink)
        self.session = session
        logger.info("websocket session authenticated", metadata: peer.merging(["user": "\(user)"]) { $1 })
        writer.reply(ServerFrame.authenticated(user))
        writer.attach(session)
    }

    private static let sendableKinds: Set<EnvelopeKind> = [.chat, .receipt, .reaction, .edit, .retract]

    private func send(_ frame: ClientFrame, session: SessionHandle) throws(SwitchboardError) {
        guard let body = frame.body else { throw SwitchboardError(.badRequest, "send needs a 'body'") }
        let kind = try Self.kind(frame.kind)
        switch (frame.room, frame.to) {
        case (let name?, nil):
            let room = try Self.room(name)
            if let other = room.otherParty(than: session.user) {
                // A direct room given by name: the other user must exist, as with `to`.
                sendDirect(frame, to: other, kind: kind, body: body, session: session)
            } else {
                try publish(frame, room: room, kind: kind, body: body, session: session)
            }
        case (nil, let name?):
            guard let user = UserName(name) else { throw SwitchboardError(.invalidUser, "'\(name)' is not a valid user name") }
            sendDirect(frame, to: user, kind: kind, body: body, session: session)
        default:
            throw SwitchboardError(.badRequest, "send needs exactly one of 'room' or 'to'")
        }
    }

    /// A direct message, once `user` is known to exist.
    private func sendDirect(_ frame: ClientFrame, to user: UserName, kind: EnvelopeKind, body: String, session: SessionHandle) {
        let accounts = shared.accounts
        runAsync({ (try? await accounts.credentials(for: user)) != nil }) { connection, exists in
            do throws(SwitchboardError) {
                guard exists else { throw SwitchboardError(.noSuchUser, "no user named \(user)") }
                try connection.publish(frame, room: .direct(session.user, user), kind: kind, body: body, session: session)
            } catch {
                connection.replyError(error, request: frame.op, room: frame.room, clientID: frame.clientID)
            }
        }
    }

    private func publish(_ frame: ClientFrame, room: RoomName, kind: EnvelopeKind, body: String,
                         session: SessionHandle) throws(SwitchboardError) {
        let draft = EnvelopeDraft(room: room, from: session.sender, kind: kind, body: body,
                                  attrs: frame.attrs ?? [:], clientID: frame.clientID)
        try shared.bus.publish(draft, from: session)
    }

    /// Runs `work` off the event loop, then `then` back on it; no other message runs meanwhile.
    private func runAsync<T: Sendable>(_ work: @escaping @Sendable () async -> T,
                                       then: @escaping (WebSocketConnection, T) -> Void) {
        guard let context else { return }
        busyAsync = true
        context.eventLoop.makeFutureWithTask { await work() }.assumeIsolated().whenSuccess { [self] result in
            busyAsync = false
            guard !stopped else { return }
            then(self, result)
            pump()
        }
    }

    // MARK: Replies and closing

    private func reply(_ frame: [UInt8]) {
        writer.reply(frame)
    }

    private func replyError(_ error: SwitchboardError, request: String?, room: String? = nil, clientID: String? = nil) {
        SwitchboardMetrics.reject(.ws, reason: error.code)
        reply(ServerFrame.error(error, request: request, room: room, clientID: clientID))
    }

    /// Sends `error` and starts the closing handshake with `code`; the first reason wins.
    func close(_ error: SwitchboardError, code: WebSocketErrorCode) {
        stopped = true
        held.removeAll()
        writer.close(error, code: code)
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

    // MARK: Idle timeout and keepalive pings

    /// Log metadata naming the peer (made when logging: a logger per connection costs memory).
    private var peer: Logger.Metadata {
        ["peer": "\(context?.channel.remoteAddress.map { "\($0)" } ?? "?")"]
    }

    private var idleTimeout: TimeAmount { .seconds(Int64(shared.settings.idleTimeoutSeconds)) }
    private var pingInterval: TimeAmount { .seconds(Int64(shared.settings.pingIntervalSeconds)) }

    /// Arms the timer for the idle deadline or the next ping, whichever is first.
    private func scheduleTimer() {
        guard let context else { return }
        var deadline = lastInput + idleTimeout
        if let nextPing { deadline = min(deadline, nextPing) }
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in self?.timerFired() }
    }

    private func timerFired() {
        guard !stopped else { return }
        let now = NIODeadline.now()
        if now >= lastInput + idleTimeout {
            SwitchboardMetrics.reject(.ws, reason: .idleTimeout)
            return close(SwitchboardError(.idleTimeout, "no frame for \(shared.settings.idleTimeoutSeconds) seconds"),
                         code: .normalClosure)
        }
        if let due = nextPing, now >= due {
            // A peer that sent no frame at all since the last ping, not even the pong, is gone.
            if writer.awaitingPong {
                SwitchboardMetrics.reject(.ws, reason: .idleTimeout)
                return close(SwitchboardError(.idleTimeout, "no answer to a ping in \(shared.settings.pingIntervalSeconds) s"),
                             code: .goingAway)
            }
            writer.ping()
            nextPing = now + pingInterval
        }
        scheduleTimer()
    }
}

/// A connection as other threads see it: the registry, the bus's session sink.
final class WebSocketConnectionHandle: Sendable {
    let id: UInt64
    let eventLoop: any EventLoop
    /// The connection while it is open (nil once closed, which also ends the reference cycle).
    fileprivate let connection: NIOLoopBoundBox<WebSocketConnection?>

    init(id: UInt64, eventLoop: any EventLoop) {
        self.id = id
        self.eventLoop = eventLoop
        self.connection = .makeEmptyBox(valueType: WebSocketConnection.self, eventLoop: eventLoop)
    }

    /// Sends `error` and closes with `code`; the first reason wins. From any thread.
    func requestClose(_ error: SwitchboardError, code: WebSocketErrorCode) {
        eventLoop.execute {
            self.connection.value?.close(error, code: code)
        }
    }
}

/// Connects a WebSocket session's outbox to its connection's event loop.
final class WebSocketSessionSink: SessionSink {
    private let handle: WebSocketConnectionHandle
    private let drainer: NIOLoopBound<any OutboxDrainer>
    private let wakeups: LoopWakeups

    init(handle: WebSocketConnectionHandle, drainer: NIOLoopBound<any OutboxDrainer>, wakeups: LoopWakeups) {
        self.handle = handle
        self.drainer = drainer
        self.wakeups = wakeups
    }

    func outboxReady() {
        wakeups.signal(drainer)
    }

    func closeRequested(_ reason: SwitchboardError) {
        handle.requestClose(reason, code: reason.code == .shuttingDown ? .goingAway : .policyViolation)
    }
}

/// The open connections: for `max_connections` and for saying goodbye on shutdown.
final class ConnectionRegistry: Sendable {
    private let connections = Mutex<[UInt64: WebSocketConnectionHandle]>([:])
    private let nextID = Atomic<UInt64>(1)

    func makeID() -> UInt64 { nextID.wrappingAdd(1, ordering: .relaxed).oldValue }

    var count: Int { connections.withLock { $0.count } }

    func add(_ connection: WebSocketConnectionHandle) {
        connections.withLock { $0[connection.id] = connection }
    }

    func remove(_ connection: WebSocketConnectionHandle) {
        _ = connections.withLock { $0.removeValue(forKey: connection.id) }
    }

    var all: [WebSocketConnectionHandle] { connections.withLock { Array($0.values) } }
}
