import Hummingbird
import HummingbirdCore
import ListenerSupport
import Logging
import NIOPosix
import NIOCore
import NIOHTTP1
import NIOWebSocket
import ServiceLifecycle
import Synchronization
import SwitchboardCore

/// The WebSocket listener (`[websocket]`): `/ws`, the REST API under
/// `/api/v1`, `/healthz`, `/metrics` and the web page, on one Hummingbird server.
public enum WebSocketListener {
    /// How the registry finds this listener.
    public static let descriptor = ListenerDescriptor(section: "websocket", via: .ws) { context in
        try WebSocketListenerService(context: context)
    }
}

/// Runs the Hummingbird application. On graceful shutdown it refuses new
/// connections, sends every connection `shutting_down` with close 1001, waits
/// up to `server.shutdown_grace_seconds` for them to go, then stops the server.
final class WebSocketListenerService: ListenerService {
    private let context: ListenerContext
    private let settings: WebSocketSettings
    private let shared: WebSocketShared
    private let ready = Atomic<Bool>(false)
    private let stopping = Atomic<Bool>(false)

    init(context: ListenerContext) throws {
        self.context = context
        let settings = WebSocketSettings(context.configuration)
        self.settings = settings
        let secret = try BearerTokens.loadSecret(configured: settings.tokenSecret, dataDir: settings.dataDir)
        self.shared = WebSocketShared(
            bus: context.bus, authenticator: context.authenticator, accounts: context.accounts,
            tokens: BearerTokens(secret: secret, ttlSeconds: settings.tokenTTLSeconds), settings: settings,
            connections: ConnectionRegistry(), frameCaches: EnvelopeEncodingCacheTable(group: MultiThreadedEventLoopGroup.singleton) { envelope, allocator in
                ServerFrame.textFrame(ServerFrame.envelope(envelope), allocator: allocator)
            },
            wakeups: LoopWakeupTable(group: MultiThreadedEventLoopGroup.singleton),
            logger: context.logger,
            clock: WallClock.millis)
    }

    var isReady: Bool { ready.load(ordering: .relaxed) }

    func run() async throws {
        let logger = context.logger
        // Hummingbird runs in its own service group, detached from the process's
        // graceful shutdown: this service decides how connections say goodbye
        // before the server stops.
        let server = ServiceGroup(configuration: .init(services: [makeApplication()], logger: logger))
        let serverTask = Task.detached { try await server.run() }
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await serverTask.value
            } onGracefulShutdown: {
                Task { await self.shutDown(server: server) }
            }
        } onCancel: {
            serverTask.cancel()
        }
        logger.info("websocket listener stopped")
    }

    private func shutDown(server: ServiceGroup) async {
        ready.store(false, ordering: .relaxed)
        stopping.store(true, ordering: .relaxed)
        let connections = shared.connections.all
        context.logger.info("websocket listener stopping", metadata: ["connections": "\(connections.count)"])
        for connection in connections {
            connection.requestClose(SwitchboardError(.shuttingDown, "server is shutting down"), code: .goingAway)
        }
        let deadline = ContinuousClock.now + .seconds(settings.shutdownGraceSeconds)
        while shared.connections.count > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        await server.triggerGracefulShutdown()
    }

    /// Why an upgrade request is not taken, or nil to take it.
    private func refusal(_ head: HTTPRequestHead) -> APIError? {
        let path = head.uri.split(separator: "?", maxSplits: 1).first ?? ""
        guard head.method == .GET, path == "/ws" else {
            return APIError(.notFound, .notFound, "no WebSocket endpoint at \(path); it is GET /ws")
        }
        if stopping.load(ordering: .relaxed) {
            return APIError(.serviceUnavailable, .shuttingDown, "the server is shutting down")
        }
        if shared.connections.count >= settings.maxConnections {
            return APIError(.serviceUnavailable, .tooManyConnections, "the server has \(settings.maxConnections) connections; try later")
        }
        return nil
    }

    private func makeApplication() -> some ApplicationProtocol {
        let router = Router()
        router.middlewares.add(JSONErrorMiddleware())
        let shared = self.shared
        let settings = self.settings
        let api = RESTAPI(shared: shared, rooms: context.rooms, health: context.health,
                          metricsExposition: context.metricsExposition)
        api.register(on: router)
        // A plain GET of /ws: it needs the upgrade headers.
        router.get("ws") { _, _ -> Response in
            throw APIError(.upgradeRequired, "upgrade_required",
                           "/ws speaks WebSocket: send a GET with Upgrade: websocket and Sec-WebSocket-Version: 13")
        }
        let page = WebPage.load()
        if page.isEmpty { context.logger.warning("web page resources not found; / answers 404") }
        page.register(on: router)

        let logger = context.logger
        let httpConnections = ConnectionTracker(limit: settings.maxHTTPConnections)
        return Application(
            router: router,
            server: HTTPServerBuilder { responder in
                WebSocketServerChannel(
                    responder: responder, maxFrameSize: settings.maxFrameBytes,
                    httpConnections: httpConnections, httpIdleTimeout: .seconds(Int64(settings.httpIdleTimeoutSeconds)),
                    refusal: { head in self.refusal(head) },
                    upgraded: { channel in
                        SwitchboardMetrics.connectionAccepted(.ws)
                        try WebSocketConnection.install(on: channel, shared: shared)
                    })
            },
            configuration: ApplicationConfiguration(
                address: .hostname(settings.bind, port: settings.port), serverName: "switchboard", backlog: 1024,
                reuseAddress: true),
            onServerRunning: { _ in
                self.ready.store(true, ordering: .relaxed)
                logger.info("websocket listener ready", metadata: ["address": "\(settings.bind):\(settings.port)"])
            },
            logger: logger)
    }
}
