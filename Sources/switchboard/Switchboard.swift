import ArgumentParser
import Foundation
import LineListener
import Logging
import Metrics
import MQTTBridge
import Prometheus
import SIPListener
import ServiceLifecycle
import SwitchboardCore
import SwitchboardStore
import WebSocketListener
import XMPPListener

/// The `switchboard` command line.
@main
struct Switchboard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard",
        abstract: "A multi-protocol messaging gateway: line, WebSocket, MQTT, XMPP and SIP clients chat in shared rooms.",
        discussion: """
            Configuration is read from --config (default: $SWITCHBOARD_CONFIG, else \(SwitchboardConfiguration.defaultPath) \
            when it exists); any key can be overridden with SWITCHBOARD_<SECTION>_<KEY>.
            """,
        version: SwitchboardVersion.current,
        subcommands: [Serve.self, UserCommand.self, RoomCommand.self, CheckConfig.self, VersionCommand.self]
    )
}

/// The version of this build.
enum SwitchboardVersion {
    static let current = "0.1.0"
}

/// `--config FILE`, shared by every subcommand.
struct ConfigOptions: ParsableArguments {
    @Option(name: .customLong("config"), help: ArgumentHelp("Configuration file.", valueName: "file"))
    var path: String?

    /// The validated configuration, or an error listing every problem.
    func load() throws -> SwitchboardConfiguration {
        let path = path ?? ProcessInfo.processInfo.environment["SWITCHBOARD_CONFIG"]
        do {
            return try SwitchboardConfiguration.load(path: path)
        } catch {
            throw CommandError("invalid configuration:\n" + error.problems.map { "  " + $0 }.joined(separator: "\n"))
        }
    }
}

/// An error printed as `Error: <message>` with exit status 1.
struct CommandError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Opens the database named by `[server] data_dir`.
func openStore(_ config: SwitchboardConfiguration) throws -> SQLiteStore {
    let dataDir = config.string("server", "data_dir")
    do {
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        let synchronous = SQLiteStore.Synchronous(rawValue: config.string("history", "synchronous")) ?? .normal
        return try SQLiteStore(path: (dataDir as NSString).appendingPathComponent("switchboard.sqlite"), synchronous: synchronous)
    } catch {
        throw CommandError("cannot open the database in '\(dataDir)': \(error)")
    }
}

extension RoomName {
    /// The name `/healthz` looks up to see that the database answers.
    static let healthProbe = RoomName("healthz")!
}

/// Every listener compiled into this binary.
let registry = ListenerRegistry([
    LineListener.descriptor, WebSocketListener.descriptor, MQTTBridge.descriptor, XMPPListener.descriptor, SIPListener.descriptor,
])

// MARK: serve

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the gateway with the listeners the configuration enables.",
        discussion: "Stops gracefully on SIGTERM or SIGINT: stops accepting, flushes history, says goodbye to every session.")

    @OptionGroup var config: ConfigOptions

    func run() async throws {
        let configuration = try config.load()
        let level = Logger.Level(rawValue: configuration.string("log", "level")) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "switchboard")
        // Every metric goes to one Prometheus registry, exported at /metrics.
        let prometheus = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: prometheus))
        let store = try openStore(configuration)
        let health = HealthRegistry()
        health.register("storage", isListener: false) { (try? store.roomExists(RoomName.healthProbe)) != nil }
        let syncInterval = configuration.int("history", "wal_sync_interval_ms")
        let walSyncer = syncInterval > 0 ? WALSyncer(store: store, interval: .milliseconds(syncInterval)) : nil
        defer { walSyncer?.stop() }
        let bus: LocalBus
        do {
            bus = try LocalBus(store: store, configuration: LocalBus.Configuration(configuration), logger: Logger(label: "switchboard.bus"))
        } catch {
            throw CommandError("cannot load history: \(error)")
        }
        let authenticator = PasswordAuthenticator(
            accounts: store, dummyIterations: configuration.int("accounts", "pbkdf2_iterations"))
        let listeners: [any ListenerService]
        do {
            listeners = try registry.services(configuration: configuration) { section in
                ListenerContext(
                    section: section, configuration: configuration, bus: bus, accounts: store, rooms: store,
                    authenticator: authenticator, logger: Logger(label: "switchboard.\(section)"),
                    health: health, metricsExposition: {
                        var buffer: [UInt8] = []
                        prometheus.emit(into: &buffer)
                        return buffer
                    }, sipState: store)
            }
        } catch {
            throw CommandError("invalid configuration:\n" + error.problems.map { "  " + $0 }.joined(separator: "\n"))
        }
        var services: [any Service] = [BusService(bus: bus)]
        services.append(RetentionService(store: store, configuration: configuration, logger: Logger(label: "switchboard.retention")))
        services.append(contentsOf: listeners.map { $0 as any Service })
        let group = ServiceGroup(
            configuration: .init(services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        logger.info("switchboard starting", metadata: [
            "version": "\(SwitchboardVersion.current)",
            "config": "\(configuration.path ?? "defaults")",
            "listeners": "\(configuration.enabledSections.joined(separator: ","))",
        ])
        try await group.run()
        logger.info("switchboard stopped")
    }
}

// MARK: check-config

struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate the configuration file and environment overrides; report every problem by key.")

    @OptionGroup var config: ConfigOptions

    func run() async throws {
        let configuration = try config.load()
        let enabled = ListenerRegistry.listenerSections.filter { configuration.bool($0, "enabled") }
        let problems = registry.problems(in: configuration)
        if !problems.isEmpty {
            throw CommandError("invalid configuration:\n" + problems.map { "  " + $0 }.joined(separator: "\n"))
        }
        print("configuration OK: \(configuration.path ?? "built-in defaults") (listeners: \(enabled.joined(separator: ", ")))")
    }
}

// MARK: version

struct VersionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print the version.")

    func run() async throws {
        print("switchboard \(SwitchboardVersion.current)")
    }
}
