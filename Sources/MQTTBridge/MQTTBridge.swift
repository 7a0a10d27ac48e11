import CMosquitto
import Crypto
import DequeModule
import Dispatch
import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import SwitchboardCore

/// The MQTT bridge (`[mqtt]`): mirrors rooms between the bus and a real MQTT
/// broker through libmosquitto.
///
/// * Devices publish to `<prefix>/rooms/<room>/in/<sender>`; each message becomes
///   an envelope from `<sender>` via `mqtt`, submitted in arrival order.
/// * Every envelope of a bridged room is published as its JSON to
///   `<prefix>/rooms/<room>/out`; while the broker is away they wait, in order,
///   in a bounded queue.
/// * `<prefix>/status` holds `online` (retained) while the gateway is connected,
///   `offline` as the last will and on shutdown.
public enum MQTTBridge {
    /// How the registry finds this listener.
    public static let descriptor = ListenerDescriptor(section: "mqtt", via: .mqtt) { context in
        MQTTBridgeService(context: context)
    }
}

/// Settings of the bridge, from `[mqtt]`.
struct MQTTSettings: Sendable {
    var options: MosquittoClient.Options
    var autoProtocol: Bool
    var prefix: String
    var rooms: [String]
    var qos: Int32
    var queueSize: Int
    var maxPayloadBytes: Int
    var dedupMillis: Int64
    var reconnectMin: Duration
    var reconnectMax: Duration

    init(_ config: SwitchboardConfiguration) {
        prefix = config.string("mqtt", "prefix")
        func optional(_ key: String) -> String? {
            let value = config.string("mqtt", key)
            return value.isEmpty ? nil : value
        }
        let protocolName = config.string("mqtt", "protocol")
        autoProtocol = protocolName == "auto"
        options = MosquittoClient.Options(
            clientID: config.string("mqtt", "client_id"), host: config.string("mqtt", "host"), port: config.int("mqtt", "port"),
            keepaliveSeconds: config.int("mqtt", "keepalive_seconds"), username: optional("username"), password: optional("password"),
            caFile: optional("tls_ca_file"), certFile: optional("tls_cert_file"), keyFile: optional("tls_key_file"),
            protocolVersion: protocolName == "3.1.1" ? .v311 : .v5,
            sessionExpirySeconds: UInt32(config.int("mqtt", "session_expiry_seconds")),
            will: (topic: "\(prefix)/status", payload: Array("offline".utf8), qos: 1, retain: true))
        rooms = config.strings("mqtt", "rooms")
        qos = Int32(config.int("mqtt", "qos"))
        queueSize = config.int("mqtt", "queue_size")
        maxPayloadBytes = config.int("mqtt", "max_payload_bytes")
        dedupMillis = Int64(config.int("mqtt", "dedup_seconds")) * 1000
        reconnectMin = .milliseconds(config.int("mqtt", "reconnect_min_ms"))
        reconnectMax = .milliseconds(max(config.int("mqtt", "reconnect_max_ms"), config.int("mqtt", "reconnect_min_ms")))
    }

    /// `mqtt.rooms`: `*` bridges every room; otherwise names, where `name*` is a prefix.
    func bridges(_ room: RoomName) -> Bool {
        rooms.contains { pattern in
            pattern == "*" || pattern == room.rawValue || (pattern.hasSuffix("*") && room.rawValue.hasPrefix(pattern.dropLast()))
        }
    }

    var statusTopic: String { "\(prefix)/status" }
    var inboundFilter: String { "\(prefix)/rooms/+/in/+" }
    func outboundTopic(_ room: RoomName) -> String { "\(prefix)/rooms/\(room)/out" }

    /// Capped exponential backoff with full jitter: a random wait in [min, min·2^(n-1)] ∧ max.
    func backoff(failures: Int) -> Duration {
        let exponent = min(max(failures - 1, 0), 20)
        let ceiling = min(reconnectMax, reconnectMin * (1 << exponent))
        let span = (ceiling - reconnectMin).components
        let spanMillis = span.seconds * 1000 + span.attoseconds / 1_000_000_000_000_000
        return reconnectMin + .milliseconds(spanMillis > 0 ? Int64.random(in: 0...spanMillis) : 0)
    }
}

/// The bridge as a service: connects on start, bridges until graceful shutdown,
/// then publishes `offline` and disconnects.
final class MQTTBridgeService: ListenerService, SessionSink {
    private let context: ListenerContext
    private let settings: MQTTSettings
    private let logger: Logger
    private let state = Mutex(State())
    /// Outbound work (draining the tap, publishing) runs here, off the bus thread.
    private let queue = DispatchQueue(label: "switchboard.mqtt.out")
    private let client = Mutex<MosquittoClient?>(nil)
    private let tap = Mutex<SessionHandle?>(nil)
    private let metrics = MQTTMetrics()
    /// A ``scheduleFlush()`` is queued and has not started yet.
    private let flushScheduled = Atomic<Bool>(false)

    private struct State {
        var connected = false
        var stopping = false
        /// Message ids of envelopes handed to libmosquitto and not yet acknowledged.
        var inflight: Set<Int32> = []
        /// Acknowledgements that arrived before `publish` returned their id.
        var earlyAcks: Set<Int32> = []
        /// After a reconnect, libmosquitto first resends what the old connection left
        /// unacknowledged; newer envelopes wait until those are through, to keep order.
        var awaitingResends = false
        var everConnected = false
        var triedV311 = false
        /// Envelopes waiting for the broker, oldest first.
        var pending: Deque<Envelope> = []
        /// Payload digests seen recently (QoS 1 redeliveries), with their time.
        var recent: [SHA256Digest: Int64] = [:]
        var recentOrder: Deque<(SHA256Digest, Int64)> = []
        /// Last time each drop reason was logged, and how many went unlogged since.
        var lastLogged: [String: (at: Int64, suppressed: Int)] = [:]
    }

    /// Most QoS 1/2 publishes handed to libmosquitto at once. Beyond this they wait in
    /// `pending`: libmosquitto walks its whole outgoing list on every PUBACK, so a long
    /// list there costs more than the queue here (measured: 11% of CPU at saturation).
    static let window = 64

    init(context: ListenerContext) {
        self.context = context
        self.settings = MQTTSettings(context.configuration)
        self.logger = context.logger
    }

    var isReady: Bool { state.withLock { $0.connected } }

    func run() async throws {
        let client: MosquittoClient
        do {
            client = try MosquittoClient(options: settings.options) { [weak self] event in self?.handle(event) }
        } catch {
            throw SwitchboardError("mqtt_setup", "cannot set up the MQTT client: \(error)")
        }
        self.client.withLock { $0 = client }
        let tap = context.bus.openTap(name: UserName("mqtt-bridge")!, via: .mqtt, sink: self)
        self.tap.withLock { $0 = tap }
        let settings = self.settings
        logger.info("mqtt bridge connecting", metadata: [
            "broker": "\(settings.options.host):\(settings.options.port)", "client_id": "\(settings.options.clientID)"])
        client.start { settings.backoff(failures: $0) }

        try? await gracefulShutdown()

        context.bus.closeSession(tap)
        // Say goodbye: what is queued goes out if it can, then `offline` replaces the will.
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            queue.async {
                self.drainTap()
                self.flushPending()
                if self.state.withLock({ $0.connected }) {
                    try? self.publishTracked(client, topic: settings.statusTopic, payload: Array("offline".utf8), qos: 1, retain: true)
                }
                continuation.resume()
            }
        }
        state.withLock { $0.stopping = true }
        client.stop()
        state.withLock { $0.connected = false }
        metrics.connected(false)
        logger.info("mqtt bridge stopped")
    }

    // MARK: libmosquitto events (its network thread)

    private func handle(_ event: MosquittoClient.Event) {
        switch event {
        case .connected(let code):
            connected(code: code)
        case .disconnected(let code):
            let (was, stopping) = state.withLock { state in
                defer { state.connected = false }
                return (state.connected, state.stopping)
            }
            metrics.connected(false)
            if stopping {
                logger.info("mqtt bridge disconnected")
            } else if was {
                metrics.reconnect()
                logger.warning("mqtt broker connection lost; reconnecting", metadata: ["code": "\(code)"])
            } else if code != 0 {
                logger.debug("mqtt connect failed", metadata: ["code": "\(code)"])
            }
        case .message(let message):
            receive(message)
        case .published(let mid):
            let more = state.withLock { state -> Bool in
                // QoS 0 publishes are reported too; they were never tracked, so keep this bounded.
                if state.inflight.remove(mid) == nil {
                    if state.earlyAcks.count > 1024 { state.earlyAcks.removeAll() }
                    state.earlyAcks.insert(mid)
                }
                if state.awaitingResends, state.inflight.isEmpty {
                    state.awaitingResends = false
                    return true
                }
                return !state.pending.isEmpty && state.inflight.count < Self.window
            }
            // A window slot is free (or the resends are through): publish what waits.
            if more { scheduleFlush() }
        }
    }

    private func connected(code: Int32) {
        guard let client = client.withLock({ $0 }) else { return }
        guard code == 0 else {
            // 132 (v5) / 1 (3.1.1): the broker does not speak MQTT 5; try 3.1.1 once.
            if settings.autoProtocol, code == 132 || code == 1, !state.withLock({ $0.triedV311 }) {
                state.withLock { $0.triedV311 = true }
                logger.notice("mqtt broker refused MQTT 5; using 3.1.1")
                client.useProtocol(.v311)
            } else {
                logger.error("mqtt broker refused the connection", metadata: ["code": "\(code)"])
            }
            return
        }
        do {
            try client.subscribe(settings.inboundFilter, qos: 1)
            try publishTracked(client, topic: settings.statusTopic, payload: Array("online".utf8), qos: 1, retain: true)
        } catch {
            logger.error("mqtt subscribe failed", metadata: ["error": "\(error)"])
        }
        let first = state.withLock { state in
            state.connected = true
            state.awaitingResends = !state.inflight.isEmpty
            defer { state.everConnected = true }
            return !state.everConnected
        }
        metrics.connected(true)
        logger.info(first ? "mqtt bridge connected" : "mqtt bridge reconnected", metadata: [
            "broker": "\(settings.options.host):\(settings.options.port)", "subscribed": "\(settings.inboundFilter)"])
        scheduleFlush()
    }

    private func receive(_ message: MosquittoClient.Message) {
        let inbound: MQTTInbound
        switch MQTTInbound.parse(topic: message.topic, payload: message.payload, prefix: settings.prefix,
                                 maxPayloadBytes: settings.maxPayloadBytes) {
        case .failure(let reason):
            drop(reason, detail: message.topic)
            return
        case .success(let parsed):
            inbound = parsed
        }
        if inbound.clientID == nil, isRedelivery(message) {
            drop(.duplicate, detail: message.topic)
            return
        }
        metrics.received()
        let draft = EnvelopeDraft(room: inbound.room, from: Sender(user: inbound.sender, via: .mqtt), kind: inbound.kind,
                                  body: inbound.body, clientID: inbound.clientID)
        context.bus.submit(draft, privileged: false) { [weak self] result in
            if case .failure(let error) = result {
                self?.drop(.rejected, detail: "\(message.topic): \(error)")
            }
        }
    }

    /// True when the same topic and payload arrived within `mqtt.dedup_seconds`: a QoS 1
    /// redelivery after a broker or gateway restart. Devices that repeat themselves on
    /// purpose send a `client_id`, which the bus deduplicates instead.
    private func isRedelivery(_ message: MosquittoClient.Message) -> Bool {
        guard settings.dedupMillis > 0 else { return false }
        var hasher = SHA256()
        hasher.update(data: Array(message.topic.utf8))
        hasher.update(data: [0])
        hasher.update(data: message.payload)
        let digest = hasher.finalize()
        let now = WallClock.millis()
        return state.withLock { state in
            while let (oldest, at) = state.recentOrder.first, at < now - settings.dedupMillis {
                state.recentOrder.removeFirst()
                if state.recent[oldest] == at { state.recent[oldest] = nil }
            }
            if state.recent[digest] != nil { return true }
            state.recent[digest] = now
            state.recentOrder.append((digest, now))
            return false
        }
    }

    /// Counts a dropped message and logs it, at most once a minute per reason.
    private func drop(_ reason: MQTTDropReason, detail: String) {
        metrics.dropped(reason)
        SwitchboardMetrics.reject(.mqtt, reason: SwitchboardError.Code(rawValue: reason.rawValue))
        let now = WallClock.millis()
        let suppressed: Int? = state.withLock { state in
            if let last = state.lastLogged[reason.rawValue], now - last.at < 60_000 {
                state.lastLogged[reason.rawValue]!.suppressed += 1
                return nil
            }
            let suppressed = state.lastLogged[reason.rawValue]?.suppressed ?? 0
            state.lastLogged[reason.rawValue] = (now, 0)
            return suppressed
        }
        if let suppressed {
            logger.warning("mqtt message dropped", metadata: [
                "reason": "\(reason.rawValue)", "detail": "\(detail)", "suppressed_since_last_log": "\(suppressed)"])
        }
    }

    // MARK: Outbound (the tap, drained on `queue`)

    func outboxReady() {
        queue.async { self.drainTap() }
    }

    func closeRequested(_ reason: SwitchboardError) {
        logger.warning("mqtt bridge tap closed by the bus", metadata: ["reason": "\(reason)"])
    }

    private func drainTap() {
        guard let tap = tap.withLock({ $0 }) else { return }
        let events = tap.takeEvents()
        var overflowed = 0
        state.withLock { state in
            for case .envelope(let envelope) in events where envelope.kind != .typing && settings.bridges(envelope.room) {
                if state.pending.count >= settings.queueSize {
                    overflowed += 1
                } else {
                    state.pending.append(envelope)
                }
            }
        }
        if overflowed > 0 {
            metrics.overflow(overflowed)
            drop(.queueOverflow, detail: "\(overflowed) envelopes did not fit the queue of \(settings.queueSize)")
        }
        flushPending()
    }

    /// Publishes and, for QoS 1 and 2, remembers the message id until it is acknowledged.
    private func publishTracked(_ client: MosquittoClient, topic: String, payload: [UInt8], qos: Int32, retain: Bool) throws {
        let mid = try client.publish(topic: topic, payload: payload, qos: qos, retain: retain)
        guard qos > 0 else { return }
        state.withLock { state in
            if state.earlyAcks.remove(mid) == nil { state.inflight.insert(mid) }
        }
    }

    /// Runs ``flushPending()`` on `queue` soon. At saturation every PUBACK frees a window
    /// slot; one scheduled flush takes all of them instead of one dispatch per PUBACK.
    private func scheduleFlush() {
        guard !flushScheduled.exchange(true, ordering: .acquiringAndReleasing) else { return }
        queue.async {
            self.flushScheduled.store(false, ordering: .releasing)
            self.flushPending()
        }
    }

    /// Publishes queued envelopes in order while connected.
    private func flushPending() {
        guard let client = client.withLock({ $0 }) else { return }
        while let envelope = state.withLock({ state -> Envelope? in
            guard state.connected, !state.awaitingResends, state.inflight.count < Self.window else { return nil }
            return state.pending.first
        }) {
            do {
                try publishTracked(client, topic: settings.outboundTopic(envelope.room), payload: envelope.jsonBytes(),
                                   qos: settings.qos, retain: false)
            } catch {
                // Lost the broker between the check and the publish: it stays queued.
                state.withLock { $0.connected = false }
                break
            }
            state.withLock { _ = $0.pending.popFirst() }
            metrics.sent()
        }
        metrics.queueDepth(state.withLock { $0.pending.count })
    }
}

/// The bridge's own metrics (besides the bus's envelope counters).
struct MQTTMetrics: Sendable {
    private let connectedGauge = Gauge(label: "switchboard_mqtt_connected")
    private let inCounter = Counter(label: "switchboard_mqtt_messages_in_total")
    private let outCounter = Counter(label: "switchboard_mqtt_messages_out_total")
    private let depthGauge = Gauge(label: "switchboard_mqtt_queue_depth")
    private let reconnects = Counter(label: "switchboard_mqtt_reconnects_total")
    private let overflowCounter = Counter(label: "switchboard_mqtt_queue_overflow_total")

    func connected(_ up: Bool) { connectedGauge.record(up ? 1 : 0) }
    func received() { inCounter.increment() }
    func sent() { outCounter.increment() }
    func queueDepth(_ depth: Int) { depthGauge.record(depth) }
    func reconnect() { reconnects.increment() }
    func overflow(_ count: Int) { overflowCounter.increment(by: count) }
    func dropped(_ reason: MQTTDropReason) {
        Counter(label: "switchboard_mqtt_dropped_total", dimensions: [("reason", reason.rawValue)]).increment()
    }
}
