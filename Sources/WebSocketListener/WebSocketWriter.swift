import DequeModule
import ListenerSupport
import Logging
import NIOCore
import NIOWebSocket
import SwitchboardCore

extension WebSocketConnection {
    /// Everything a connection writes, confined to the channel's event loop.
    ///
    /// Replies and outbox events are written in the order they reach the loop and
    /// flushed once per burst. While the socket is not writable the outbox is left
    /// alone, so a client that cannot keep up fills its bounded outbox and the bus
    /// drops it as a slow consumer; a timer looks again every few milliseconds.
    /// A `joined` event with `since` pauses the outbox until the missed envelopes
    /// were read from history and written.
    final class Writer: OutboxDrainer {
        private let channel: any Channel
        private let shared: WebSocketShared
        private let frames: EnvelopeEncodingCache
        /// The WebSocket frame encoder's place in the pipeline: frames this writer encodes
        /// itself (``ServerFrame/textFrame(_:allocator:)``) are written from there, past it.
        private let encoderContext: ChannelHandlerContext
        private var session: SessionHandle?
        private var events: Deque<SessionEvent> = []
        /// Events that arrived behind a `joined` whose replay is still being read.
        private var held: Deque<SessionEvent> = []
        private var replaying = false
        private var closing = false
        /// Our close frame went out: the next frame we expect is the peer's close.
        private(set) var closeSent = false
        private var recheckScheduled = false
        private var pendingFlush = false
        /// Frames written since the last flush and not yet handed to the channel, joined
        /// into one buffer: one pipeline write per drain instead of one per frame.
        private var batch: ByteBuffer?
        /// `batch` is still a single frame as given (perhaps a loop-wide cached encoding):
        /// it is copied before anything is appended to it.
        private var batchIsBorrowed = false
        /// A ping went out and no frame has arrived since.
        private(set) var awaitingPong = false

        static let writabilityRecheck = TimeAmount.milliseconds(5)
        static let closeTimeout = TimeAmount.seconds(5)
        /// A joined batch is handed to the channel once it reaches this size.
        static let maxBatchBytes = 64 * 1024

        init(channel: any Channel, shared: WebSocketShared, frames: EnvelopeEncodingCache) throws {
            self.channel = channel
            self.shared = shared
            self.frames = frames
            // NIO's upgrader put the encoder there before the connection's handler.
            self.encoderContext = try channel.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
        }

        /// The session is authenticated: its events may flow.
        func attach(_ session: SessionHandle) {
            guard !closing else { return }
            self.session = session
            drainOutbox()
        }

        /// Sends a keepalive ping (empty, from this loop: no task per connection).
        func ping() {
            guard !closing else { return }
            awaitingPong = true
            emitBatch()
            var frame = channel.allocator.buffer(capacity: 2)
            frame.writeBytes([0x89, 0x00])   // FIN, ping, no payload, unmasked
            encoderContext.writeAndFlush(NIOAny(frame), promise: nil)
        }

        /// A frame of any kind came from the peer.
        func frameArrived() {
            awaitingPong = false
        }

        /// The connection is gone: drop the session reference.
        func detach() {
            stopDelivering()
        }

        /// From here on nothing more goes out: no session events, no held replies, no pings.
        private func stopDelivering() {
            closing = true
            session = nil
            held.removeAll()
        }

        func reply(_ frame: [UInt8]) {
            guard !closing else { return }
            write(frame)
            flush()
        }

        func drainOutbox() {
            guard let session, !closing, !replaying else { return }
            guard channel.isWritable else {
                scheduleRecheck()
                return
            }
            session.takeEvents(into: &events)
            // Popped, not copied: each copy of an event is a retain of an envelope that
            // the bus and the other loop are retaining and releasing too.
            while let event = events.popFirst() {
                handle(event)
                if replaying {
                    held.append(contentsOf: events)
                    events.removeAll(keepingCapacity: true)
                    break
                }
            }
            flush()
        }

        private func handle(_ event: SessionEvent) {
            switch event {
            case .envelope(let envelope):
                write(frames.encoded(envelope, allocator: channel.allocator))
            case .ack(let ack):
                write(ServerFrame.ack(ack))
            case .failed(let error, let request, let room, let clientID):
                SwitchboardMetrics.reject(.ws, reason: error.code)
                write(ServerFrame.error(error, request: request == .publish ? "send" : request.rawValue,
                                        room: room?.rawValue, clientID: clientID))
            case .joined(let room, let seq, let since):
                if let since, since < seq, let session {
                    startReplay(room: room, after: since, through: seq, reader: session.user)
                } else {
                    writeJoined(room, seq: seq)
                }
            case .left(let room):
                write(ServerFrame.left(room))
            }
        }

        private func writeJoined(_ room: RoomName, seq: UInt64) {
            write(ServerFrame.joined(room, seq: seq))
            write(ServerFrame.occupants(room, shared.bus.occupants(of: room)))
        }

        /// Reads `(after, through]` of `room` page by page off the loop, writes it as the peer
        /// takes it, then `joined`, then what queued behind it.
        private func startReplay(room: RoomName, after: UInt64, through seq: UInt64, reader: UserName) {
            replaying = true
            flush()
            HistoryReplay.start(
                bus: shared.bus, room: room, reader: reader, after: after, through: seq, channel: channel,
                isCancelled: { [self] in closing },
                write: { [self] page in
                    for envelope in page { write(ServerFrame.envelope(envelope)) }
                    flush()
                },
                finish: { [self] error in
                    replaying = false
                    if let error { write(ServerFrame.error(error, request: "join", room: room.rawValue)) }
                    writeJoined(room, seq: seq)
                    // What queued behind the replay, then the outbox.
                    while !replaying, let event = held.popFirst() {
                        handle(event)
                    }
                    flush()
                    if !replaying { drainOutbox() }
                })
        }

        /// Writes `error`, then starts the closing handshake with `code` (once): the
        /// connection waits for the peer's close frame, or cuts it off after `closeTimeout`.
        func close(_ error: SwitchboardError, code: WebSocketErrorCode) {
            guard !closing else { return }
            if error.code == .slowConsumer {
                shared.logger.warning("websocket session dropped as a slow consumer",
                               metadata: ["peer": "\(channel.remoteAddress.map { "\($0)" } ?? "?")"])
            }
            stopDelivering()
            write(ServerFrame.error(error))
            sendClose(code, reason: error.code.rawValue)
            channel.eventLoop.assumeIsolated().scheduleTask(in: Self.closeTimeout) { [channel] in
                channel.close(promise: nil)
            }
        }

        /// Answers the peer's close frame with `code` and closes the connection once it is written.
        func answerClose(_ code: WebSocketErrorCode) {
            stopDelivering()
            guard !closeSent else {
                channel.close(promise: nil)
                return
            }
            sendClose(code, reason: nil).whenComplete { [channel] _ in channel.close(promise: nil) }
        }

        /// Answers a ping with the same application data.
        func pong(_ data: ByteBuffer) {
            guard !closeSent else { return }
            emitBatch()
            channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .pong, data: data), promise: nil)
        }

        @discardableResult
        private func sendClose(_ code: WebSocketErrorCode, reason: String?) -> EventLoopFuture<Void> {
            closeSent = true
            flush()
            var data = channel.allocator.buffer(capacity: 2 + (reason?.utf8.count ?? 0))
            data.write(webSocketErrorCode: code)
            if let reason { data.writeString(reason) }
            return channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: data))
        }

        private func write(_ payload: [UInt8]) {
            write(ServerFrame.textFrame(payload, allocator: channel.allocator))
        }

        /// Writes a complete, unmasked text frame (header included).
        private func write(_ frame: ByteBuffer) {
            pendingFlush = true
            guard var joined = batch.take() else {
                batch = frame
                batchIsBorrowed = true
                return
            }
            if batchIsBorrowed {
                var copy = channel.allocator.buffer(capacity: max(1024, 2 * (joined.readableBytes + frame.readableBytes)))
                copy.writeImmutableBuffer(joined)
                joined = copy
                batchIsBorrowed = false
            }
            joined.writeImmutableBuffer(frame)
            batch = joined
            if joined.readableBytes >= Self.maxBatchBytes { emitBatch() }
        }

        private func flush() {
            guard pendingFlush else { return }
            pendingFlush = false
            emitBatch()
            channel.flush()
        }

        /// Hands the joined frames to the channel (written past the frame encoder).
        private func emitBatch() {
            guard let batch = batch.take() else { return }
            encoderContext.write(NIOAny(batch), promise: nil)
        }

        private func scheduleRecheck() {
            guard !recheckScheduled else { return }
            recheckScheduled = true
            channel.eventLoop.assumeIsolated().scheduleTask(in: Self.writabilityRecheck) { [self] in
                recheckScheduled = false
                drainOutbox()
            }
        }
    }
}
