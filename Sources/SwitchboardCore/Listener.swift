import Logging
import ServiceLifecycle
import Synchronization

/// What `/healthz` asks: is storage usable, is every enabled listener serving?
///
/// Parts register a probe under a name (`storage`, or a listener section);
/// the registry binds one for every listener it starts.
public final class HealthRegistry: Sendable {
    /// One probe's answer.
    public struct Status: Sendable, Equatable {
        public var name: String
        public var isListener: Bool
        public var up: Bool
    }

    private let probes = Mutex<[(name: String, isListener: Bool, probe: @Sendable () -> Bool)]>([])

    public init() {}

    /// Adds (or replaces) the probe called `name`.
    public func register(_ name: String, isListener: Bool, probe: @escaping @Sendable () -> Bool) {
        probes.withLock { list in
            list.removeAll { $0.name == name }
            list.append((name, isListener, probe))
        }
    }

    /// Runs every probe, in registration order.
    public func check() -> [Status] {
        let list = probes.withLock { $0 }
        return list.map { Status(name: $0.name, isListener: $0.isListener, up: $0.probe()) }
    }
}

/// What the registry hands a listener when it binds it.
public struct ListenerContext: Sendable {
    /// The listener's config section name (`line`, `websocket`, …).
    public var section: String
    /// The whole validated configuration.
    public var configuration: SwitchboardConfiguration
    /// The bus every session goes through.
    public var bus: any MessageBus
    /// Accounts, for listeners that run their own authentication (SCRAM, digest).
    public var accounts: any AccountStore
    /// Room administration (listing, creation).
    public var rooms: any RoomStore
    /// Plain-password checks off the event loops.
    public var authenticator: PasswordAuthenticator
    /// A logger labelled for the listener.
    public var logger: Logger
    /// Readiness of storage and of every listener (`/healthz`).
    public var health: HealthRegistry
    /// The metrics in Prometheus text format (`/metrics`), when the process exports them.
    public var metricsExposition: (@Sendable () -> [UInt8])?
    /// SIP registrar bindings and memberships (the SIP listener requires it).
    public var sipState: (any SIPStateStore)?

    public init(
        section: String, configuration: SwitchboardConfiguration, bus: any MessageBus, accounts: any AccountStore,
        rooms: any RoomStore, authenticator: PasswordAuthenticator, logger: Logger,
        health: HealthRegistry = HealthRegistry(), metricsExposition: (@Sendable () -> [UInt8])? = nil,
        sipState: (any SIPStateStore)? = nil
    ) {
        self.section = section
        self.configuration = configuration
        self.bus = bus
        self.accounts = accounts
        self.rooms = rooms
        self.authenticator = authenticator
        self.logger = logger
        self.health = health
        self.metricsExposition = metricsExposition
        self.sipState = sipState
    }
}

/// A running listener: a swift-service-lifecycle `Service` that binds in `run()`,
/// and on graceful shutdown stops accepting, lets its sessions say goodbye and returns.
public protocol ListenerService: Service {
    /// True once bound and serving (for `/healthz`).
    var isReady: Bool { get }
}

/// How a listener declares itself, like Prosody's `module:provides("net", …)`:
/// its config section and a factory. The registry owns binding and lifecycle.
public struct ListenerDescriptor: Sendable {
    /// The config section (and listener name), e.g. `line`.
    public var section: String
    /// The protocol its sessions speak.
    public var via: Via
    /// Builds the service from the context; throws for configuration it cannot use.
    public var makeService: @Sendable (ListenerContext) throws -> any ListenerService

    public init(section: String, via: Via, makeService: @escaping @Sendable (ListenerContext) throws -> any ListenerService) {
        self.section = section
        self.via = via
        self.makeService = makeService
    }
}

/// The listeners compiled into this binary; binds the ones the configuration enables.
public struct ListenerRegistry: Sendable {
    /// The sections that are listeners (their `enabled` key starts them).
    public static let listenerSections = ["websocket", "line", "xmpp", "sip", "mqtt"]

    public private(set) var descriptors: [ListenerDescriptor]

    public init(_ descriptors: [ListenerDescriptor]) {
        self.descriptors = descriptors
    }

    /// Problems with the listeners `configuration` enables: each enabled section
    /// without a listener in this build, by key.
    public func problems(in configuration: SwitchboardConfiguration) -> [String] {
        Self.listenerSections.filter { section in
            configuration.bool(section, "enabled") && !descriptors.contains { $0.section == section }
        }.map { "\($0).enabled: the \($0) listener is not available in this build; set enabled = false" }
    }

    /// Services for every enabled listener, in a stable order. An enabled section
    /// without a listener in this build is an error naming it.
    public func services(
        configuration: SwitchboardConfiguration, makeContext: (String) -> ListenerContext
    ) throws(ConfigurationError) -> [any ListenerService] {
        var problems = problems(in: configuration)
        var services: [any ListenerService] = []
        for section in Self.listenerSections where configuration.bool(section, "enabled") {
            guard let descriptor = descriptors.first(where: { $0.section == section }) else { continue }
            do {
                let context = makeContext(section)
                let service = try descriptor.makeService(context)
                context.health.register(section, isListener: true) { service.isReady }
                services.append(service)
            } catch {
                problems.append("\(section): \(error)")
            }
        }
        if !problems.isEmpty { throw ConfigurationError(problems: problems) }
        return services
    }
}

/// Runs the bus for the lifetime of the service group; on graceful shutdown it
/// commits and delivers what is queued, then stops the writer. Put it first in
/// the group so it shuts down last, after the listeners said goodbye.
public struct BusService: Service {
    let bus: any MessageBus

    public init(bus: any MessageBus) {
        self.bus = bus
    }

    public func run() async throws {
        try? await gracefulShutdown()
        await bus.shutdown()
    }
}

/// Applies history retention (`[history] retention_days`, `max_per_room`) periodically.
public struct RetentionService: Service {
    let store: any HistoryStore
    let maxAgeMillis: Int64?
    let maxPerRoom: Int?
    let intervalSeconds: Int
    let clock: @Sendable () -> Int64
    let logger: Logger

    public init(store: any HistoryStore, configuration: SwitchboardConfiguration, logger: Logger,
                clock: @escaping @Sendable () -> Int64 = WallClock.millis) {
        self.store = store
        let days = configuration.int("history", "retention_days")
        let count = configuration.int("history", "max_per_room")
        self.maxAgeMillis = days > 0 ? Int64(days) * 86_400_000 : nil
        self.maxPerRoom = count > 0 ? count : nil
        self.intervalSeconds = configuration.int("history", "retention_interval_seconds")
        self.clock = clock
        self.logger = logger
    }

    /// True when there is anything to enforce.
    public var isActive: Bool { maxAgeMillis != nil || maxPerRoom != nil }

    public func run() async throws {
        guard isActive else {
            try? await gracefulShutdown()
            return
        }
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                let removed = try await store.applyRetention(now: clock(), maxAgeMillis: maxAgeMillis, maxPerRoom: maxPerRoom)
                if removed > 0 { logger.info("history retention", metadata: ["removed": "\(removed)"]) }
            } catch {
                logger.error("history retention failed", metadata: ["error": "\(error)"])
            }
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(intervalSeconds)) }
            } catch {
                return
            }
        }
    }
}
