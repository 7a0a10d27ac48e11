import ListenerSupport
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import SwitchboardCore

/// The XMPP listener (`[xmpp]`): client-to-server streams on TCP, group chat
/// in `<room>@conference.<domain>` (XEP-0045), direct chat to `<user>@<domain>`.
public enum XMPPListener {
    /// How the registry finds this listener.
    public static let descriptor = ListenerDescriptor(section: "xmpp", via: .xmpp) { context in
        try XMPPListenerService(context: context)
    }
}

/// Settings of the XMPP listener, from `[xmpp]`, `[server]` and `[limits]`.
struct XMPPSettings: Sendable {
    var bind: String
    var port: Int
    var domain: String
    var allowPlainWithoutTLS: Bool
    var maxStanzaBytes: Int
    var maxConnections: Int
    var idleTimeoutSeconds: Int
    var ratePerSecond: Int
    var rateBurst: Int
    var shutdownGraceSeconds: Int
    var tlsCertFile: String?
    var tlsKeyFile: String?
    var dataDir: String

    init(_ config: SwitchboardConfiguration) {
        bind = config.string("xmpp", "bind")
        port = config.int("xmpp", "port")
        domain = config.string("server", "domain").lowercased()
        allowPlainWithoutTLS = config.bool("xmpp", "allow_plain_without_tls")
        maxStanzaBytes = config.int("xmpp", "max_stanza_bytes")
        maxConnections = config.int("xmpp", "max_connections")
        idleTimeoutSeconds = config.int("xmpp", "idle_timeout_seconds")
        ratePerSecond = config.int("xmpp", "rate_per_second")
        rateBurst = config.int("xmpp", "rate_burst")
        shutdownGraceSeconds = config.int("server", "shutdown_grace_seconds")
        let cert = config.string("xmpp", "tls_cert_file")
        let key = config.string("xmpp", "tls_key_file")
        tlsCertFile = cert.isEmpty ? nil : cert
        tlsKeyFile = key.isEmpty ? nil : key
        dataDir = config.string("server", "data_dir")
    }
}

/// Binds the XMPP port; on graceful shutdown sends each stream `system-shutdown`.
final class XMPPListenerService: ListenerService {
    private let context: ListenerContext
    private let settings: XMPPSettings
    private let ready = Atomic<Bool>(false)
    private let tracker: ConnectionTracker

    private let tls: XMPPTLS

    init(context: ListenerContext) throws {
        self.context = context
        let settings = XMPPSettings(context.configuration)
        self.settings = settings
        self.tracker = ConnectionTracker(limit: settings.maxConnections)
        guard (settings.tlsCertFile == nil) == (settings.tlsKeyFile == nil) else {
            throw SwitchboardError("tls_setup", "xmpp.tls_cert_file and xmpp.tls_key_file go together")
        }
        do {
            self.tls = try XMPPTLS.load(settings: settings)
        } catch {
            throw SwitchboardError("tls_setup", "cannot set up TLS for XMPP: \(error)")
        }
    }

    var isReady: Bool { ready.load(ordering: .relaxed) }

    func run() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let shared = XMPPConnectionHandler.Shared(
            bus: context.bus, accounts: context.accounts, authenticator: context.authenticator, rooms: context.rooms,
            settings: settings, logger: context.logger, wakeups: LoopWakeupTable(group: group), tls: tls.context,
            groupchats: GroupchatEncodingCacheTable(group: group, mucDomain: "conference.\(settings.domain)"))
        let tracker = self.tracker
        let settings = self.settings
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 32 * 1024, high: 256 * 1024))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    SwitchboardMetrics.connectionAccepted(.xmpp)
                    guard tracker.add(channel) else {
                        SwitchboardMetrics.reject(.xmpp, reason: .tooManyConnections)
                        channel.close(promise: nil)
                        return
                    }
                    channel.closeFuture.whenComplete { _ in tracker.remove(channel) }
                    try channel.pipeline.syncOperations.addHandler(
                        IdleStateHandler(readTimeout: .seconds(Int64(settings.idleTimeoutSeconds))))
                    try channel.pipeline.syncOperations.addHandler(XMPPConnectionHandler(shared: shared))
                }
            }
            .bind(host: settings.bind, port: settings.port)
            .get()
        ready.store(true, ordering: .relaxed)
        context.logger.info("xmpp listener ready", metadata: [
            "address": "\(settings.bind):\(settings.port)", "domain": "\(settings.domain)",
            "certificate": "\(tls.source)", "sha256_fingerprint": "\(tls.fingerprint)"])

        try? await gracefulShutdown()

        ready.store(false, ordering: .relaxed)
        try? await server.close()
        context.logger.info("xmpp listener stopping", metadata: ["connections": "\(tracker.all.count)"])
        // Every connection says goodbye within the grace period, or is closed.
        await tracker.closeAll(sending: XMPPShutdownEvent(), grace: .seconds(settings.shutdownGraceSeconds))
    }
}
