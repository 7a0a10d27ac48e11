import DequeModule
import LineWire
import ListenerSupport
import Logging
import NIOCore
import SwitchboardCore

/// One line-protocol connection: frames input, runs commands against the bus,
/// writes replies and room traffic.
///
/// Replies keep the order of the commands. SAY, TELL, JOIN and PART are
/// answered by the bus, in submission order; while such answers are
/// outstanding, any other reply waits behind them in `pending`. Commands that
/// need an asynchronous lookup (AUTH, HISTORY, ROOMS, TELL's addressee check)
/// hold the following lines in `held` until they finish; while lines wait, the
/// socket is not read, so TCP pushes back on the client.
final class LineConnectionHandler: ChannelInboundHandler, OutboxDrainer {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// What every connection of a listener shares.
    struct Shared: Sendable {
        var bus: any MessageBus
        var authenticator: PasswordAuthenticator
        var accounts: any AccountStore
        var rooms: any RoomStore
        var settings: LineSettings
        var logger: Logger
        var wakeups: LoopWakeupTable
        var encodings: EnvelopeEncodingCacheTable
    }

    /// Replies owed to the client, oldest first: bus answers still to come, and
    /// ready replies that must not overtake them. The head is never `.ready`.
    enum PendingReply {
        case say, tell, join, part
        case ready(ByteBuffer)
    }

    private let shared: Shared
    private var decoder: LineFrameDecoder
    private var limiter: TokenBucket
    private var strikes = 0
    private var authFailures = 0
    private var session: SessionHandle?
    private var held: Deque<LineFrame> = []
    /// Reused for every outbox drain.
    private var inbox: Deque<SessionEvent> = []
    private var pending: Deque<PendingReply> = []
    private var busyAsync = false
    /// While a `JOIN <room> <since>` replay is read from history: the bus events
    /// that arrived meanwhile, delivered after it. Nil when no replay runs.
    private var replayBuffer: Deque<SessionEvent>?
    private var closing = false
    private var reading = true
    private var quitting = false
    private var inputClosed = false
    private var shuttingDown = false
    private var context: ChannelHandlerContext?
    private var out: ByteBuffer
    /// This loop's shared encodings of room traffic (set in `handlerAdded`, on the loop).
    private var encodings: EnvelopeEncodingCache!
    private var allocator = ByteBufferAllocator()
    private var logger: Logger

    static let maxAuthFailures = 3
    static let maxHeldLines = 256

    init(shared: Shared) {
        self.shared = shared
        self.decoder = LineFrameDecoder(maxLineBytes: shared.settings.maxLineBytes)
        self.limiter = TokenBucket(rate: shared.settings.ratePerSecond, burst: shared.settings.rateBurst)
        self.out = ByteBuffer()
        self.logger = shared.logger
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.out = context.channel.allocator.buffer(capacity: 256)
        self.encodings = shared.encodings.cache(for: context.eventLoop)
        logger[metadataKey: "peer"] = "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"
    }

    /// The context holds this handler: keeping it past removal would keep both (and all this
    /// connection's state) alive after the connection is gone.
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        logger.debug("line connection opened")
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closing = true
        if let session {
            shared.bus.closeSession(session)
            self.session = nil
        }
        held.removeAll()
        logger.debug("line connection closed")
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing, !shuttingDown, !quitting else { return }
        var buffer = unwrapInboundIn(data)
        decoder.append(&buffer)
        while let frame = decoder.next() {
            held.append(frame)
        }
        pump()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flush()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { drainOutbox() }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            SwitchboardMetrics.reject(.line, reason: .idleTimeout)
            closeWithError(.idleTimeout, "no input for \(shared.settings.idleTimeoutSeconds) seconds")
        } else if let channelEvent = event as? ChannelEvent, channelEvent == .inputClosed {
            // Closing already: the client has read our goodbye and closed its side too.
            if closing { context.close(promise: nil); return }
            // The client sent its last line: run what is held, answer it, then close.
            inputClosed = true
            pump()
        } else if event is LineShutdownEvent {
            shuttingDown = true
            held.removeAll()
            finishShutdownIfQuiet()
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("line connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    // MARK: Command processing

    /// Runs held lines in order until one has to wait for an asynchronous lookup.
    private func pump() {
        while !closing, !quitting, !busyAsync, let frame = held.first {
            // WHO and HISTORY read room state: they must see what earlier JOIN/SAY/PART did.
            if !pending.isEmpty, case .line(let text) = frame, Self.readsRoomState(text) { break }
            held.removeFirst()
            handle(frame)
        }
        if inputClosed, held.isEmpty, !busyAsync { quitting = true }
        updateReading()
        flush()
        finishShutdownIfQuiet()
    }

    private static func readsRoomState(_ text: String) -> Bool {
        let word = text.utf8.prefix(while: { $0 != UInt8(ascii: " ") })
        return word.count <= 7 && ["WHO", "HISTORY"].contains(String(decoding: word, as: UTF8.self).uppercased())
    }

    private func updateReading() {
        guard let context, !closing else { return }
        let wantRead = held.count < Self.maxHeldLines
        guard wantRead != reading else { return }
        reading = wantRead
        context.channel.setOption(.autoRead, value: wantRead).whenFailure { _ in }
    }

    private func handle(_ frame: LineFrame) {
        if case .line(let text) = frame, text.isEmpty { return }
        guard limiter.take(nowNanos: NIODeadline.now().uptimeNanoseconds) else {
            strikes += 1
            SwitchboardMetrics.reject(.line, reason: .rateLimited)
            if strikes > shared.settings.rateBurst {
                SwitchboardMetrics.reject(.line, reason: .flood)
                closeWithError(.flood, "too many lines too fast; closing the connection")
            } else {
                writeError(.rateLimited, "more than \(shared.settings.ratePerSecond) lines per second; line ignored")
            }
            return
        }
        strikes = 0
        switch frame {
        case .tooLong:
            SwitchboardMetrics.reject(.line, reason: .lineTooLong)
            writeError(.lineTooLong, "line exceeds \(shared.settings.maxLineBytes) bytes and was ignored")
        case .invalidUTF8:
            SwitchboardMetrics.reject(.line, reason: .invalidUTF8)
            writeError(.invalidUTF8, "line is not valid UTF-8 and was ignored")
        case .line(let text):
            switch LineCommandParser.parse(text) {
            case .failure(let error):
                SwitchboardMetrics.reject(.line, reason: SwitchboardError.Code(rawValue: error.code))
                writeError(SwitchboardError.Code(rawValue: error.code), error.message)
            case .success(let command):
                run(command)
            }
        }
    }

    private func run(_ command: LineCommand) {
        switch command {
        case .ping(let token):
            write(.pong(token: token))
            return
        case .quit:
            write(.ok(command: "QUIT", details: nil))
            quitting = true
            held.removeAll()
            return
        case .auth(let user, let password):
            guard session == nil else {
                writeError(.alreadyAuthenticated, "this connection is already authenticated as \(session!.user)")
                return
            }
            authenticate(user: user, password: password)
            return
        default:
            break
        }
        guard let session else {
            SwitchboardMetrics.reject(.line, reason: .authRequired)
            writeError(.authRequired, "log in first: AUTH <user> <password>")
            return
        }
        do throws(SwitchboardError) {
            switch command {
            case .join(let name, let since):
                let room = try Self.room(name)
                try shared.bus.join(session, room: room, since: since)
                pending.append(.join)
            case .part(let name):
                let room = try Self.room(name)
                try shared.bus.leave(session, room: room)
                pending.append(.part)
            case .say(let name, let text):
                let room = try Self.room(name)
                let draft = EnvelopeDraft(room: room, from: session.sender, body: text)
                if let other = room.otherParty(than: session.user) {
                    // SAY into a direct room: the other user must exist, as with TELL.
                    tell(draft, to: other, session: session, answer: .say)
                } else {
                    try shared.bus.publish(draft, from: session)
                    pending.append(.say)
                }
            case .tell(let name, let text):
                guard let user = UserName(name) else { throw SwitchboardError(.invalidUser, "'\(name)' is not a valid user name") }
                tell(EnvelopeDraft(room: .direct(session.user, user), from: session.sender, body: text), to: user, session: session,
                     answer: .tell)
            case .history(let name, let limit):
                let room = try Self.room(name)
                history(room, limit: limit ?? LineCommand.defaultHistoryLimit, session: session)
            case .who(let name):
                let room = try Self.room(name)
                try AccessRules.canRead(room, user: session.user)
                let list = shared.bus.occupants(of: room).map { "\($0.user)/\($0.via.rawValue)" }
                write(.ok(command: "WHO", details: ([room.rawValue] + list).joined(separator: " ")))
            case .rooms:
                listRooms()
            case .ping, .quit, .auth:
                break
            }
        } catch {
            SwitchboardMetrics.reject(.line, reason: error.code)
            writeError(error.code, error.message)
        }
    }

    private static func room(_ name: String) throws(SwitchboardError) -> RoomName {
        guard let room = RoomName(name) else {
            throw SwitchboardError(.invalidRoom, "'\(name)' is not a valid room name (1–64 of a-z 0-9 . _ -)")
        }
        if case .invalidReserved = room.scope {
            throw SwitchboardError(.invalidRoom, "room names starting with dm. or calls. are reserved")
        }
        return room
    }

    // MARK: Asynchronous commands

    /// Runs `work` off the event loop, then `then` back on it; no other command runs meanwhile.
    private func runAsync<T: Sendable>(_ work: @escaping @Sendable () async -> T, then: @escaping (LineConnectionHandler, T) -> Void) {
        guard let context else { return }
        busyAsync = true
        context.eventLoop.makeFutureWithTask { await work() }.assumeIsolated().whenSuccess { [self] result in
            busyAsync = false
            guard !closing else { return }
            then(self, result)
            pump()
        }
    }

    private func authenticate(user: String, password: String) {
        let authenticator = shared.authenticator
        runAsync({ await authenticator.authenticate(user: user, password: password) }) { handler, user in
            handler.finishAuthentication(user)
        }
    }

    private func finishAuthentication(_ user: UserName?) {
        guard let user, let context else {
            authFailures += 1
            SwitchboardMetrics.reject(.line, reason: .authFailed)
            logger.info("line auth failed", metadata: ["failures": "\(authFailures)"])
            if authFailures >= Self.maxAuthFailures {
                closeWithError(.authFailed, "invalid user or password; too many failures, closing")
            } else {
                writeError(.authFailed, "invalid user or password")
            }
            return
        }
        let sink = LineSessionSink(
            eventLoop: context.eventLoop, handler: NIOLoopBound(self, eventLoop: context.eventLoop),
            drainer: NIOLoopBound(self, eventLoop: context.eventLoop),
            wakeups: shared.wakeups.wakeups(for: context.eventLoop))
        session = shared.bus.openSession(user: user, display: nil, via: .line, sink: sink)
        logger[metadataKey: "user"] = "\(user)"
        logger.info("line session authenticated")
        write(.ok(command: "AUTH", details: user.rawValue))
    }

    /// Publishes a direct message once `user` is known to exist; `answer` is the OK it gets.
    private func tell(_ draft: EnvelopeDraft, to user: UserName, session: SessionHandle, answer: PendingReply) {
        let accounts = shared.accounts
        runAsync({ (try? await accounts.credentials(for: user)) != nil }) { handler, exists in
            guard exists else {
                handler.writeError(.noSuchUser, "no user named \(user)")
                return
            }
            do throws(SwitchboardError) {
                try handler.shared.bus.publish(draft, from: session)
                handler.pending.append(answer)
            } catch {
                handler.writeError(error.code, error.message)
            }
        }
    }

    private func history(_ room: RoomName, limit: Int, session: SessionHandle) {
        let bus = shared.bus
        let user = session.user
        runAsync({ () -> Result<[Envelope], SwitchboardError> in
            do throws(SwitchboardError) {
                return .success(try await bus.history(of: room, reader: user, before: nil, after: nil, limit: limit))
            } catch {
                return .failure(error)
            }
        }) { handler, result in
            switch result {
            case .success(let envelopes):
                for envelope in envelopes { handler.writeEnvelope(envelope, traffic: false) }
                handler.write(.ok(command: "HISTORY", details: "\(room) \(envelopes.count)"))
            case .failure(let error):
                handler.writeError(error.code, error.message)
            }
        }
    }

    private func listRooms() {
        let rooms = shared.rooms
        runAsync({ () -> [String]? in try? await rooms.listRooms().map(\.name.rawValue) }) { handler, names in
            guard let names else {
                handler.writeError(.storageUnavailable, "the room list is unavailable")
                return
            }
            handler.write(.ok(command: "ROOMS", details: names.isEmpty ? nil : names.joined(separator: " ")))
        }
    }

    // MARK: Bus events

    /// Called on the event loop when the session's outbox has events.
    func drainOutbox() {
        guard let session, let context, context.channel.isWritable, !closing else { return }
        session.takeEvents(into: &inbox)
        defer { inbox.removeAll(keepingCapacity: true) }
        while let event = inbox.popFirst() {
            if replayBuffer != nil {
                replayBuffer!.append(event)
                if replayBuffer!.count > shared.settings.replayQueueLimit {
                    closeWithError(.slowConsumer, "too much traffic while replaying history")
                    return
                }
                continue
            }
            handleEvent(event)
        }
        flush()
        pump()
    }

    private func handleEvent(_ event: SessionEvent) {
        switch event {
        case .envelope(let envelope):
            writeEnvelope(envelope, traffic: true)
        case .ack(let ack):
            let kind = pending.popFirst()
            if case .tell? = kind {
                writeAnswer(.ok(command: "TELL", details: "\(ack.seq)"))
            } else {
                writeAnswer(.ok(command: "SAY", details: "\(ack.seq)"))
            }
        case .failed(let error, _, _, _):
            _ = pending.popFirst()
            writeAnswer(.err(code: error.code.rawValue, message: error.message))
        case .joined(let room, let seq, let since):
            if let since, since < seq {
                startReplay(room: room, since: since, seq: seq)
            } else {
                _ = pending.popFirst()
                writeAnswer(.ok(command: "JOIN", details: "\(room) \(seq)"))
            }
        case .left(let room):
            _ = pending.popFirst()
            writeAnswer(.ok(command: "PART", details: room.rawValue))
        }
        finishShutdownIfQuiet()
    }

    /// Reads `(since, seq]` from history page by page, writes it as the peer takes it, then
    /// `OK JOIN`, then what queued meanwhile.
    private func startReplay(room: RoomName, since: UInt64, seq: UInt64) {
        guard let context, let session else { return }
        replayBuffer = []
        HistoryReplay.start(
            bus: shared.bus, room: room, reader: session.user, after: since, through: seq, channel: context.channel,
            isCancelled: { [self] in closing || replayBuffer == nil },
            write: { [self] page in
                for envelope in page { writeEnvelope(envelope, traffic: true) }
                flush()
            },
            finish: { [self] error in
                guard var buffered = replayBuffer else { return }
                replayBuffer = nil
                _ = pending.popFirst()
                if let error {
                    writeAnswer(.err(code: error.code.rawValue, message: error.message))
                } else {
                    writeAnswer(.ok(command: "JOIN", details: "\(room) \(seq)"))
                }
                while let event = buffered.popFirst() {
                    if replayBuffer != nil {
                        // An event just handled started another replay: the rest waits for it.
                        replayBuffer!.append(event)
                    } else {
                        handleEvent(event)
                    }
                }
                flush()
                drainOutbox()
            })
    }

    /// Called on the event loop when the bus wants the session gone.
    func busRequestedClose(_ reason: SwitchboardError) {
        if reason.code == .slowConsumer {
            logger.warning("line session dropped as a slow consumer")
        }
        closeWithError(reason.code, reason.message)
    }

    // MARK: Output

    /// Writes a reply now, or queues it behind outstanding bus answers.
    private func write(_ reply: LineReply) {
        if pending.isEmpty {
            reply.write(into: &out)
        } else {
            var buffer = ByteBuffer()
            reply.write(into: &buffer)
            pending.append(.ready(buffer))
        }
    }

    /// Writes a bus answer (its pending slot was just popped), then the replies that waited for it.
    private func writeAnswer(_ reply: LineReply) {
        reply.write(into: &out)
        while case .ready(var buffer)? = pending.first {
            pending.removeFirst()
            out.writeBuffer(&buffer)
        }
    }

    /// Unsolicited lines (room traffic) go out at once.
    private func writeTraffic(_ reply: LineReply) {
        reply.write(into: &out)
    }

    private func writeError(_ code: SwitchboardError.Code, _ message: String) {
        write(.err(code: code.rawValue, message: message))
    }

    /// Writes an envelope as MSG/JOINED/PARTED: at once as room traffic (encoded once per
    /// event loop and shared by every receiver on it), or in reply order (HISTORY).
    private func writeEnvelope(_ envelope: Envelope, traffic: Bool) {
        if traffic {
            guard envelope.kind != .typing else { return }
            out.writeImmutableBuffer(encodings.encoded(envelope, allocator: allocator))
        } else if let reply = Self.reply(for: envelope) {
            write(reply)
        }
    }

    /// The line an envelope is shown as; typing is not shown.
    static func reply(for envelope: Envelope) -> LineReply? {
        let from = envelope.from
        switch envelope.kind {
        case .join:
            return .joined(room: envelope.room.rawValue, user: from.user.rawValue, via: from.via.rawValue)
        case .leave:
            return .parted(room: envelope.room.rawValue, user: from.user.rawValue, via: from.via.rawValue)
        case .typing:
            return nil
        case .chat:
            return .msg(room: envelope.room.rawValue, seq: envelope.seq, ts: envelope.ts, user: from.user.rawValue,
                        via: from.via.rawValue, text: envelope.body)
        default:
            let text = envelope.body.isEmpty ? "[\(envelope.kind.rawValue)]" : "[\(envelope.kind.rawValue)] \(envelope.body)"
            return .msg(room: envelope.room.rawValue, seq: envelope.seq, ts: envelope.ts, user: from.user.rawValue,
                        via: from.via.rawValue, text: text)
        }
    }

    /// The wire bytes of an envelope as room traffic (for ``EnvelopeEncodingCache``).
    static func encode(_ envelope: Envelope, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 64 + envelope.body.utf8.count)
        reply(for: envelope)?.write(into: &buffer)
        return buffer
    }

    private func flush() {
        guard let context, out.readableBytes > 0 else { return }
        let buffer = out
        out = context.channel.allocator.buffer(capacity: 256)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    private func closeWithError(_ code: SwitchboardError.Code, _ message: String) {
        guard !closing else { return }
        closing = true
        held.removeAll()
        writeTraffic(.err(code: code.rawValue, message: message))
        flushAndClose()
    }

    private func flushAndClose() {
        guard let context else { return }
        let buffer = out
        out = context.channel.allocator.buffer(capacity: 0)
        context.writeAndCloseLingering(wrapOutboundOut(buffer))
    }

    /// After QUIT or on shutdown: once every reply the client is owed went out, close
    /// (with a goodbye on shutdown).
    private func finishShutdownIfQuiet() {
        guard shuttingDown || quitting, !closing, pending.isEmpty, !busyAsync, replayBuffer == nil else { return }
        if quitting {
            closing = true
            flushAndClose()
        } else {
            closeWithError(.shuttingDown, "server is shutting down")
        }
    }
}

@available(*, unavailable)
extension LineConnectionHandler: Sendable {}

/// Connects a line session's outbox to its event loop.
final class LineSessionSink: SessionSink {
    private let eventLoop: any EventLoop
    private let handler: NIOLoopBound<LineConnectionHandler>
    private let drainer: NIOLoopBound<any OutboxDrainer>
    private let wakeups: LoopWakeups

    init(eventLoop: any EventLoop, handler: NIOLoopBound<LineConnectionHandler>, drainer: NIOLoopBound<any OutboxDrainer>,
         wakeups: LoopWakeups) {
        self.eventLoop = eventLoop
        self.handler = handler
        self.drainer = drainer
        self.wakeups = wakeups
    }

    func outboxReady() {
        wakeups.signal(drainer)
    }

    func closeRequested(_ reason: SwitchboardError) {
        eventLoop.execute { self.handler.value.busRequestedClose(reason) }
    }
}
