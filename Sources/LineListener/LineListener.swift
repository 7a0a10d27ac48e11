import ListenerSupport
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import SwitchboardCore

/// The line protocol listener (`[line]`): plain TCP, one command per line.
public enum LineListener {
    /// How the registry finds this listener.
    public static let descriptor = ListenerDescriptor(section: "line", via: .line) { context in
        LineListenerService(context: context)
    }
}

/// Settings of one line listener, from `[line]` and `[limits]`.
struct LineSettings: Sendable {
    var bind: String
    var port: Int
    var maxLineBytes: Int
    var maxConnections: Int
    var idleTimeoutSeconds: Int
    var ratePerSecond: Int
    var rateBurst: Int
    var replayQueueLimit: Int
    var shutdownGraceSeconds: Int

    init(_ config: SwitchboardConfiguration) {
        bind = config.string("line", "bind")
        port = config.int("line", "port")
        maxLineBytes = config.int("line", "max_line_bytes")
        maxConnections = config.int("line", "max_connections")
        idleTimeoutSeconds = config.int("line", "idle_timeout_seconds")
        ratePerSecond = config.int("line", "rate_per_second")
        rateBurst = config.int("line", "rate_burst")
        replayQueueLimit = config.int("limits", "session_queue")
        shutdownGraceSeconds = config.int("server", "shutdown_grace_seconds")
    }
}

/// Sent down each pipeline when the server shuts down.
struct LineShutdownEvent: Sendable {}

/// Binds the line port, serves connections, and on graceful shutdown stops
/// accepting, lets each connection finish its pending replies and say goodbye.
final class LineListenerService: ListenerService {
    private let context: ListenerContext
    private let settings: LineSettings
    private let ready = Atomic<Bool>(false)
    private let tracker: ConnectionTracker

    init(context: ListenerContext) {
        self.context = context
        self.settings = LineSettings(context.configuration)
        self.tracker = ConnectionTracker(limit: settings.maxConnections)
    }

    var isReady: Bool { ready.load(ordering: .relaxed) }

    func run() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let shared = LineConnectionHandler.Shared(
            bus: context.bus, authenticator: context.authenticator, accounts: context.accounts, rooms: context.rooms,
            settings: settings, logger: context.logger, wakeups: LoopWakeupTable(group: group),
            encodings: EnvelopeEncodingCacheTable(group: group, encode: LineConnectionHandler.encode))
        let tracker = self.tracker
        let settings = self.settings
        let logger = context.logger
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // `printf 'AUTH …\nSAY …\n' | nc` half-closes after its last line: answer it all, then close.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 32 * 1024, high: 256 * 1024))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    SwitchboardMetrics.connectionAccepted(.line)
                    guard tracker.add(channel) else {
                        SwitchboardMetrics.reject(.line, reason: .tooManyConnections)
                        try channel.pipeline.syncOperations.addHandler(RejectHandler(
                            line: "ERR too_many_connections the server has \(settings.maxConnections) connections; try later\n"))
                        return
                    }
                    channel.closeFuture.whenComplete { _ in tracker.remove(channel) }
                    try channel.pipeline.syncOperations.addHandler(
                        IdleStateHandler(readTimeout: .seconds(Int64(settings.idleTimeoutSeconds))))
                    try channel.pipeline.syncOperations.addHandler(LineConnectionHandler(shared: shared))
                }
            }
            .bind(host: settings.bind, port: settings.port)
            .get()
        ready.store(true, ordering: .relaxed)
        logger.info("line listener ready", metadata: ["address": "\(settings.bind):\(settings.port)"])

        try? await gracefulShutdown()

        ready.store(false, ordering: .relaxed)
        try? await server.close()
        logger.info("line listener stopping", metadata: ["connections": "\(tracker.all.count)"])
        // Every connection says goodbye within the grace period, or is closed.
        await tracker.closeAll(sending: LineShutdownEvent(), grace: .seconds(settings.shutdownGraceSeconds))
    }
}

/// Writes one line and closes: the answer to a connection over the limit.
final class RejectHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let line: String

    init(line: String) { self.line = line }

    func channelActive(context: ChannelHandlerContext) {
        let buffer = context.channel.allocator.buffer(string: line)
        context.writeAndFlush(NIOAny(buffer)).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

@available(*, unavailable)
extension RejectHandler: Sendable {}
