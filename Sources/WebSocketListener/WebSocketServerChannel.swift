import HTTPTypes
import HummingbirdCore
import ListenerSupport
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket
import SwitchboardCore

/// Hummingbird's HTTP/1 connection with a WebSocket upgrade served by plain
/// SwiftNIO handlers.
///
/// Requests that are not a WebSocket upgrade go to Hummingbird's responder as
/// usual (`handleHTTP`), one task per connection. An upgraded connection is
/// handed to `upgraded`, which puts its handler into the pipeline after NIO's
/// frame codec; `handle(value:)` then returns, so an open WebSocket costs no
/// Swift task (their stacks were ~21 KiB of each idle connection's memory).
///
/// NIO's upgrade handler does not pass on the head of an upgrade request it did
/// not take, so such a request cannot reach the router: it is answered here,
/// with the JSON error `refusal` gives (or 400 for a malformed handshake).
struct WebSocketServerChannel: ServerChildChannel, HTTPChannelHandler {
    enum Negotiated: Sendable {
        case webSocket
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, APIError)
    }

    struct Value: ServerChildChannelValue {
        let negotiated: EventLoopFuture<Negotiated>
        let channel: any Channel
    }

    let responder: HTTPChannelHandler.Responder
    let maxFrameSize: Int
    /// Connections that are not (yet) WebSockets, capped at `max_http_connections`.
    let httpConnections: ConnectionTracker
    let httpIdleTimeout: TimeAmount
    /// Nil to upgrade this request, or why not (on the channel's event loop).
    let refusal: @Sendable (HTTPRequestHead) -> APIError?
    /// Adds the WebSocket handler after the frame codec (on the channel's event loop).
    let upgraded: @Sendable (any Channel) throws -> Void

    static let malformedHandshake = APIError(
        .badRequest, .badRequest,
        "not a WebSocket handshake this server takes: GET /ws with Upgrade: websocket, Sec-WebSocket-Key and Sec-WebSocket-Version: 13")

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // Why the first request's upgrade was not taken, if it asked for one.
            let refused = NIOLoopBoundBox<APIError?>(nil, eventLoop: channel.eventLoop)
            let upgrader = NIOTypedWebSocketServerUpgrader<Negotiated>(
                maxFrameSize: maxFrameSize,
                shouldUpgrade: { channel, head in
                    let reason = refusal(head)
                    if let reason { refused.value = reason }
                    return channel.eventLoop.makeSucceededFuture(reason == nil ? HTTPHeaders() : nil)
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        // A WebSocket has its own idle timer and limit from here on.
                        let pipeline = channel.pipeline.syncOperations
                        pipeline.removeHandler(try pipeline.handler(type: HTTPConnectionGuard.self), promise: nil)
                        pipeline.removeHandler(try pipeline.handler(type: HTTPParseErrorAnswer.self), promise: nil)
                        try upgraded(channel)
                        return .webSocket
                    }
                })
            let upgrades = NIOTypedHTTPServerUpgradeConfiguration<Negotiated>(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let pipeline = channel.pipeline.syncOperations
                        try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try pipeline.addHandler(HTTPConnectionStateHandler(idleTimeout: nil, logger: logger))
                        let http = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                        return refused.value.map { .refused(http, $0) } ?? .http(http)
                    }
                })
            try channel.pipeline.syncOperations.addHandler(
                HTTPConnectionGuard(tracker: httpConnections, idleTimeout: httpIdleTimeout))
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration(upgradeConfiguration: upgrades)
            // As Hummingbird's own HTTP/1 channel: it pipelines itself. Parse errors are
            // answered by HTTPParseErrorAnswer (below), NIO's handler would not close.
            configuration.enablePipelining = false
            configuration.enableErrorHandling = false
            configuration.enableResponseHeaderValidation = false
            let pipeline = channel.pipeline.syncOperations
            let negotiated = try pipeline.configureUpgradableHTTPServerPipeline(configuration: configuration)
            let decoder = try pipeline.context(handlerType: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try pipeline.addHandler(HTTPParseErrorAnswer(), position: .after(decoder.handler))
            let upgradeHandler = try pipeline.context(handlerType: NIOTypedHTTPServerUpgradeHandler<Negotiated>.self)
            try pipeline.addHandler(UpgradeRequestWatch(refused: refused), position: .before(upgradeHandler.handler))
            return Value(negotiated: negotiated, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.negotiated.get() {
            case .webSocket:
                return   // the channel's handlers serve it from here on
            case .http(let http):
                await handleHTTP(asyncChannel: http, logger: logger)
            case .refused(let http, let error):
                try await http.executeThenClose { _, outbound in
                    let body = error.jsonBody
                    let head = HTTPResponse(status: error.status, headerFields: [
                        .connection: "close", .contentType: "application/json", .contentLength: "\(body.count)",
                    ])
                    try await outbound.write(contentsOf: [.head(head), .body(ByteBuffer(bytes: body)), .end(nil)])
                }
            }
        } catch {
            logger.debug("connection ended before its first request was answered", metadata: ["error": "\(error)"])
            value.channel.close(promise: nil)
        }
    }
}

/// Notes that the first request asked for an upgrade (a malformed handshake is
/// refused before `shouldUpgrade` is asked), then leaves the pipeline.
private final class UpgradeRequestWatch: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart

    private let refused: NIOLoopBoundBox<APIError?>

    init(refused: NIOLoopBoundBox<APIError?>) {
        self.refused = refused
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data), head.headers.contains(name: "upgrade") {
            refused.value = WebSocketServerChannel.malformedHandshake
        }
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// Keeps plain HTTP connections from piling up on the port (each holds a file descriptor
/// and memory): it counts them against `websocket.max_http_connections` (one more gets a 503
/// `too_many_connections` and is closed) and closes one that has neither sent nor received a
/// byte for `websocket.http_idle_timeout_seconds`: nothing sent, a request head or body left
/// half-sent, an idle keep-alive. A connection that becomes a WebSocket leaves it at the
/// upgrade (it has a limit and an idle timer of its own).
final class HTTPConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let tracker: ConnectionTracker
    private let idleTimeout: TimeAmount
    private var state = State.new
    private var lastActivity = NIODeadline.now()
    private var timer: Scheduled<Void>?

    private enum State { case new, counted, refused, released }

    init(tracker: ConnectionTracker, idleTimeout: TimeAmount) {
        self.tracker = tracker
        self.idleTimeout = idleTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    private func start(_ context: ChannelHandlerContext) {
        guard case .new = state else { return }
        guard tracker.add(context.channel) else {
            state = .refused
            SwitchboardMetrics.reject(.ws, reason: .tooManyConnections)
            let error = APIError(.serviceUnavailable, .tooManyConnections,
                                 "the server has too many HTTP connections open; try later")
            let body = error.jsonBody
            var response = context.channel.allocator.buffer(capacity: 160 + body.count)
            response.writeString("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n")
            response.writeString("Content-Length: \(body.count)\r\nConnection: close\r\n\r\n")
            response.writeBytes(body)
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(response)).whenComplete { _ in channel.close(promise: nil) }
            return
        }
        state = .counted
        lastActivity = .now()
        schedule(context, at: lastActivity + idleTimeout)
    }

    private func schedule(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            timer = nil
            guard case .counted = state else { return }
            let due = lastActivity + idleTimeout
            if due <= .now() {
                context.close(promise: nil)
            } else {
                schedule(context, at: due)
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // A refused connection's request is never read: it is answered and closed.
        guard case .counted = state else { return }
        lastActivity = .now()
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        lastActivity = .now()
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        release(context)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        release(context)
    }

    private func release(_ context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        if case .counted = state { tracker.remove(context.channel) }
        state = .released
    }
}

/// Answers a request the HTTP decoder cannot parse (garbage, a bad or doubled Content-Length,
/// an oversized head) with a 400 in the REST error shape, then closes: the error comes before
/// Hummingbird sees a request, and nothing else would answer or close the connection. While a
/// response is being written it only closes (a 400 cannot go in the middle of it).
final class HTTPParseErrorAnswer: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var responding = false
    private var failed = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head: responding = true
        case .end: responding = false
        case .body: break
        }
        context.write(data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is HTTPParserError else { return context.fireErrorCaught(error) }
        guard !failed else { return }
        failed = true
        SwitchboardMetrics.reject(.ws, reason: .badRequest)
        let channel = context.channel
        guard !responding else { return channel.close(promise: nil) }
        let body = APIError(.badRequest, .badRequest, "malformed HTTP request (\(error))").jsonBody
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: "\(body.count)")
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .badRequest, headers: headers))),
                      promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}
