import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket

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
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration(upgradeConfiguration: upgrades)
            // As Hummingbird's own HTTP/1 channel: it pipelines and reports errors itself.
            configuration.enablePipelining = false
            configuration.enableErrorHandling = false
            configuration.enableResponseHeaderValidation = false
            let pipeline = channel.pipeline.syncOperations
            let negotiated = try pipeline.configureUpgradableHTTPServerPipeline(configuration: configuration)
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
