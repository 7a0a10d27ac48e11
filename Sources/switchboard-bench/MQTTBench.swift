import ArgumentParser
import CMosquitto
import Dispatch
import Foundation
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// `switchboard-bench mqtt direct|gateway`: an MQTT device publishing through a broker, received
// either by an MQTT subscriber on the same topic (direct: the broker alone) or, through the
// gateway's MQTT bridge, by a WebSocket client in the room (gateway). Payloads start with the
// CLOCK_MONOTONIC send time and the message index; every receiver lives in this process.
//
// The MQTT side is a small libmosquitto wrapper of its own (threaded mode: one network thread
// per client started with mosquitto_loop_start), not the bridge's client.

enum MQTTBenchMode: String, ExpressibleByArgument, CaseIterable, Sendable {
    case direct, gateway
}

/// One libmosquitto client: connect, subscribe, publish; callbacks reach Swift through an
/// `Unmanaged` box passed as libmosquitto's `obj`.
final class BenchMQTTClient: @unchecked Sendable {
    // The pointer is set once; libmosquitto serialises access to it internally (threaded mode),
    // which is what makes sharing it across threads (publisher thread, network thread) safe.

    final class Box: Sendable {
        /// CONNACK result, -1 until it arrives.
        let connack = Atomic<Int32>(-1)
        let subacks = Atomic<Int>(0)
        /// Publishes libmosquitto reported done (PUBACK for QoS 1, written for QoS 0).
        let published = Atomic<Int>(0)
        let disconnected = Atomic<Bool>(false)
        let onMessage: @Sendable (UnsafeRawBufferPointer, UInt64) -> Void
        let onPublished: @Sendable () -> Void
        init(onMessage: @escaping @Sendable (UnsafeRawBufferPointer, UInt64) -> Void, onPublished: @escaping @Sendable () -> Void) {
            self.onMessage = onMessage
            self.onPublished = onPublished
        }
    }

    struct Failure: Error, CustomStringConvertible {
        var what: String
        var code: Int32
        var description: String { "\(what): \(String(cString: mosquitto_strerror(code))) (\(code))" }
    }

    private static let libraryReady: Bool = {
        mosquitto_lib_init()
        return true
    }()

    let id: String
    private let mosq: OpaquePointer
    private let box: Unmanaged<Box>
    var counters: Box { box.takeUnretainedValue() }
    private var started = false

    /// `protocolVersion`: 4 (3.1.1) or 5. `receiveMaximum`/`sendMaximum`: libmosquitto's
    /// in-flight limits for QoS 1/2 (MQTT 5 Receive Maximum sent to the broker; local send window);
    /// 0 keeps libmosquitto's default (20).
    init(id: String, protocolVersion: Int32, receiveMaximum: Int32, sendMaximum: Int32,
         onMessage: @escaping @Sendable (UnsafeRawBufferPointer, UInt64) -> Void = { _, _ in },
         onPublished: @escaping @Sendable () -> Void = {}) throws {
        _ = Self.libraryReady
        self.id = id
        let box = Unmanaged.passRetained(Box(onMessage: onMessage, onPublished: onPublished))
        guard let mosq = mosquitto_new(id, true, box.toOpaque()) else {
            box.release()
            throw Failure(what: "mosquitto_new", code: MOSQ_ERR_NOMEM.rawValue)
        }
        self.mosq = mosq
        self.box = box
        mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, protocolVersion)
        mosquitto_int_option(mosq, MOSQ_OPT_TCP_NODELAY, 1)
        if receiveMaximum > 0 { mosquitto_int_option(mosq, MOSQ_OPT_RECEIVE_MAXIMUM, receiveMaximum) }
        if sendMaximum > 0 { mosquitto_int_option(mosq, MOSQ_OPT_SEND_MAXIMUM, sendMaximum) }
        mosquitto_connect_callback_set(mosq) { _, obj, rc in
            BenchMQTTClient.box(obj).connack.store(rc, ordering: .releasing)
        }
        mosquitto_disconnect_callback_set(mosq) { _, obj, _ in
            BenchMQTTClient.box(obj).disconnected.store(true, ordering: .releasing)
        }
        mosquitto_subscribe_callback_set(mosq) { _, obj, _, _, _ in
            BenchMQTTClient.box(obj).subacks.wrappingAdd(1, ordering: .releasing)
        }
        mosquitto_publish_callback_set(mosq) { _, obj, _ in
            let box = BenchMQTTClient.box(obj)
            box.published.wrappingAdd(1, ordering: .releasing)
            box.onPublished()
        }
        mosquitto_message_callback_set(mosq) { _, obj, message in
            let now = monoNanos()
            guard let message = message?.pointee, let payload = message.payload, message.payloadlen > 0 else { return }
            BenchMQTTClient.box(obj).onMessage(UnsafeRawBufferPointer(start: payload, count: Int(message.payloadlen)), now)
        }
    }

    deinit {
        mosquitto_destroy(mosq)
        box.release()
    }

    private static func box(_ obj: UnsafeMutableRawPointer?) -> Box {
        Unmanaged<Box>.fromOpaque(obj!).takeUnretainedValue()
    }

    /// Connects, starts the network thread and waits for a successful CONNACK.
    func connect(host: String, port: Int, timeout: Double = 10) async throws {
        let rc = mosquitto_connect(mosq, host, Int32(port), 60)
        guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw Failure(what: "\(id): connect to \(host):\(port)", code: rc) }
        let lrc = mosquitto_loop_start(mosq)
        guard lrc == MOSQ_ERR_SUCCESS.rawValue else { throw Failure(what: "\(id): loop_start", code: lrc) }
        started = true
        let box = counters
        guard await waitFor(seconds: timeout, { box.connack.load(ordering: .acquiring) >= 0 }) else {
            throw LoadError("\(id): no CONNACK from \(host):\(port) within \(timeout) s")
        }
        let code = box.connack.load(ordering: .acquiring)
        guard code == 0 else { throw LoadError("\(id): broker refused the connection (CONNACK \(code))") }
    }

    /// Subscribes and waits for the SUBACK.
    func subscribe(_ topic: String, qos: Int32, timeout: Double = 10) async throws {
        let box = counters
        let before = box.subacks.load(ordering: .acquiring)
        let rc = mosquitto_subscribe(mosq, nil, topic, qos)
        guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw Failure(what: "\(id): subscribe \(topic)", code: rc) }
        guard await waitFor(seconds: timeout, { box.subacks.load(ordering: .acquiring) > before }) else {
            throw LoadError("\(id): no SUBACK for \(topic) within \(timeout) s")
        }
    }

    /// Queues one publish (libmosquitto's network thread writes it); returns the libmosquitto code.
    @inline(__always)
    func publish(topic: UnsafePointer<CChar>, payload: UnsafeRawBufferPointer, qos: Int32) -> Int32 {
        mosquitto_publish(mosq, nil, topic, Int32(payload.count), payload.baseAddress, qos, false)
    }

    /// Disconnects and stops the network thread.
    func stop() {
        guard started else { return }
        started = false
        mosquitto_disconnect(mosq)
        mosquitto_loop_stop(mosq, false)
    }
}

/// What one receiver saw: deliveries, their latency, order.
final class MQTTReceiverSink: Sendable {
    struct Data {
        var samples: [UInt64] = []
        var lastIndex = -1
        var outOfOrder = 0
        var unparsed = 0
    }

    let received = Atomic<Int>(0)
    let lastReceive = Atomic<UInt64>(0)
    private let data = Mutex(Data())
    /// Where the body starts: 0 (the raw payload) or after this marker (an envelope's JSON).
    private let marker: [UInt8]?
    let wakeup: MQTTPublisherWakeup

    init(marker: [UInt8]?, wakeup: MQTTPublisherWakeup) {
        self.marker = marker
        self.wakeup = wakeup
    }

    func reserve(_ n: Int) { data.withLock { $0.samples.reserveCapacity(n) } }

    func receive(_ payload: UnsafeRawBufferPointer, now: UInt64) {
        var i = 0
        if let marker {
            guard let at = WSWire.find(marker, in: payload) else { return }  // join/leave/status envelopes
            i = at + marker.count
        }
        guard let sentAt = LoadClientHandler.number(payload, &i) else {
            data.withLock { $0.unparsed += 1 }
            return
        }
        i += 1
        guard let index = LoadClientHandler.number(payload, &i) else {
            data.withLock { $0.unparsed += 1 }
            return
        }
        let m = Int(index)
        data.withLock { d in
            d.samples.append(now &- sentAt)
            if m != d.lastIndex + 1 { d.outOfOrder += 1 }
            d.lastIndex = m
        }
        received.wrappingAdd(1, ordering: .releasing)
        lastReceive.store(now, ordering: .relaxed)
        wakeup.poke()
    }

    func snapshot() -> Data { data.withLock { $0 } }
}

/// Lets a windowed publisher sleep until an ack or a delivery frees the window.
final class MQTTPublisherWakeup: Sendable {
    private let waiting = Atomic<Bool>(false)
    private let semaphore = DispatchSemaphore(value: 0)

    func poke() {
        if waiting.load(ordering: .relaxed), waiting.exchange(false, ordering: .acquiringAndReleasing) { semaphore.signal() }
    }

    /// Waits until poked or `microseconds` pass (the timeout covers a missed poke and
    /// receivers that cannot poke, like the WebSocket client).
    func wait(microseconds: Int, recheck: () -> Bool) {
        waiting.store(true, ordering: .sequentiallyConsistent)
        if recheck() {
            waiting.store(false, ordering: .relaxed)
            return
        }
        _ = semaphore.wait(timeout: .now() + .microseconds(microseconds))
        waiting.store(false, ordering: .relaxed)
    }
}

struct MQTTLoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mqtt",
        abstract: "MQTT device -> broker -> subscriber (direct) or -> gateway -> WebSocket client (gateway): latency and msgs/s.")

    @Argument(help: "direct: an MQTT subscriber on the device's topic; gateway: a WebSocket client in the room.")
    var mode: MQTTBenchMode
    @Option(help: "Broker address.") var mqttHost = "127.0.0.1"
    @Option(help: "Broker port.") var mqttPort: Int
    @Option(help: "MQTT protocol of the bench clients: 5 or 3.1.1 (the gateway speaks 5).") var mqttProtocol = "5"
    @Option(help: "QoS of the device's publishes and of the direct subscription (the gateway subscribes at 1).") var qos = 1
    @Option(help: "Receive Maximum of the bench subscribers (MQTT 5; 0: libmosquitto's default of 20, as the gateway).")
    var receiveMaximum = 0
    @Option(help: "direct: the topic.") var topic = "bench/direct"
    @Option(help: "gateway: mqtt.prefix of the server.") var prefix = "switchboard"
    @Option(help: "gateway: the room.") var room = "bench"
    @Option(help: "gateway: the device's sender name (last topic level).") var sender = "sensor-1"
    @Option(help: "gateway: server address (WebSocket/REST).") var host = "127.0.0.1"
    @Option(help: "gateway: WebSocket (and REST) port.") var wsPort: Int?
    @Option(help: "gateway: the WebSocket receiver's user.") var user = "bench000"
    @Option(help: "gateway: its password.") var password = ""
    @Flag(help: "gateway: also subscribe to <prefix>/rooms/<room>/out and measure there.") var outSubscriber = false
    @Option(help: "Messages per second (paced mode).") var rate = 1000
    @Option(help: "Seconds of sending (paced mode).") var seconds: Double = 5
    @Flag(help: "Publish as fast as the windows allow instead of pacing.") var saturate = false
    @Option(help: "Messages to publish with --saturate.") var messages = 20000
    @Option(help: "--saturate: most publishes not yet acknowledged by the broker (PUBACK; QoS 0: not yet written).")
    var window = 100
    @Option(help: "--saturate: most messages published but not yet received by the measured receiver.") var deliveryWindow = 1000
    @Option(help: "Payload (body) size in bytes.") var bodyBytes = 64
    @Option(help: "Seconds to let subscriptions and joins settle before publishing.") var settle: Double = 1
    @Option(help: "Seconds to wait for stragglers after the last publish.") var drainTimeout: Double = 30

    func validate() throws {
        guard rate >= 1, seconds > 0, messages >= 1, window >= 1, deliveryWindow >= 1, bodyBytes >= 32, (0...1).contains(qos) else {
            throw ValidationError("rate, seconds, messages, windows must be positive, body-bytes at least 32, qos 0 or 1")
        }
        guard mqttProtocol == "5" || mqttProtocol == "3.1.1" else { throw ValidationError("--mqtt-protocol is 5 or 3.1.1") }
        if mode == .gateway && wsPort == nil { throw ValidationError("gateway mode needs --ws-port") }
    }

    func run() async throws {
        emitJSON(try await runLoad())
    }

    private func runLoad() async throws -> [String: Any] {
        let total = saturate ? messages : Int((Double(rate) * seconds).rounded())
        let protocolVersion: Int32 = mqttProtocol == "5" ? 5 : 4
        let tag = "\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let wakeup = MQTTPublisherWakeup()
        let publishTopic = mode == .direct ? topic : "\(prefix)/rooms/\(room)/in/\(sender)"

        // Receivers.
        var group: MultiThreadedEventLoopGroup?
        var wsChannels: [any Channel] = []
        let wsState = LoadState()
        let wsCounters = WSCounters()
        var directSink: MQTTReceiverSink?
        var outSink: MQTTReceiverSink?
        var subscribers: [BenchMQTTClient] = []
        var device: BenchMQTTClient?
        func cleanup() async {
            device?.stop()
            for s in subscribers { s.stop() }
            wsCounters.closing.store(true, ordering: .relaxed)
            await closeAll(wsChannels)
            wsChannels = []
            if let group { try? await group.shutdownGracefully() }
            group = nil
        }
        let setupStart = monoNanos()
        do {
            switch mode {
            case .direct:
                let sink = MQTTReceiverSink(marker: nil, wakeup: wakeup)
                sink.reserve(total)
                let sub = try BenchMQTTClient(id: "bench-sub-\(tag)", protocolVersion: protocolVersion,
                                              receiveMaximum: Int32(receiveMaximum), sendMaximum: 0,
                                              onMessage: { payload, now in sink.receive(payload, now: now) })
                subscribers.append(sub)
                try await sub.connect(host: mqttHost, port: mqttPort)
                try await sub.subscribe(topic, qos: Int32(qos))
                directSink = sink
            case .gateway:
                let g = MultiThreadedEventLoopGroup(numberOfThreads: 1)
                group = g
                let wsPort = self.wsPort!
                let tokens = try await fetchTokens(group: g, host: host, port: wsPort, users: [user], password: password)
                let options = try ConnectOptions.parse(["--host", host, "--port", String(wsPort)])
                let settings = WSSettings(
                    host: host, port: wsPort, room: room, total: total, intervalNanos: 1, window: window,
                    deliveryWindow: deliveryWindow, receivers: 1, bodyBytes: bodyBytes, sampleStride: 1)
                let token = tokens[user] ?? ""
                let user = self.user
                wsChannels = try await connectInBatches(count: 1, options: options, group: g, port: wsPort) { i in
                    let ready = g.next().makePromise(of: Void.self)
                    let bootstrap = try options.bootstrap(group: g, index: i) { channel in
                        try channel.pipeline.syncOperations.addHandler(WSClientHandler(
                            role: .receiver, index: i, user: user, token: token, settings: settings, state: wsState,
                            counters: wsCounters, ready: ready))
                    }
                    return (bootstrap, ready.futureResult)
                }
                if outSubscriber {
                    let sink = MQTTReceiverSink(marker: WSWire.chatBodyMarker, wakeup: MQTTPublisherWakeup())
                    sink.reserve(total)
                    let sub = try BenchMQTTClient(id: "bench-out-\(tag)", protocolVersion: protocolVersion,
                                                  receiveMaximum: Int32(receiveMaximum), sendMaximum: 0,
                                                  onMessage: { payload, now in sink.receive(payload, now: now) })
                    subscribers.append(sub)
                    try await sub.connect(host: mqttHost, port: mqttPort)
                    try await sub.subscribe("\(prefix)/rooms/\(room)/out", qos: 1)
                    outSink = sink
                }
            }
            let dev = try BenchMQTTClient(id: "bench-dev-\(tag)", protocolVersion: protocolVersion, receiveMaximum: 0,
                                          sendMaximum: saturate ? Int32(min(window, 65535)) : 0,
                                          onPublished: { wakeup.poke() })
            device = dev
            try await dev.connect(host: mqttHost, port: mqttPort)
        } catch {
            await cleanup()
            throw error
        }
        let setupSeconds = Double(monoNanos() - setupStart) / 1e9
        try await Task.sleep(for: .milliseconds(Int64(settle * 1000)))
        wsState.resetErrors()

        let delivered: @Sendable () -> Int = { [directSink] in
            directSink?.received.load(ordering: .acquiring) ?? wsState.delivered.load(ordering: .relaxed)
        }
        let dev = device!
        let publishedBefore = dev.counters.published.load(ordering: .acquiring)
        let progress = PublisherProgress()
        let cpuBefore = processCPUSeconds()
        let saturate = self.saturate, window = self.window, deliveryWindow = self.deliveryWindow
        let interval = UInt64(1e9 / Double(rate))
        let bodyBytes = self.bodyBytes, qos = Int32(self.qos)
        let publisher = BenchThread(name: "mqtt-device") {
            var topicC = publishTopic.utf8CString
            var payload = Array(makeBody(bytes: bodyBytes, prefix: String(repeating: "0", count: 20) + " 00000000 ").utf8)
            let start = monoNanos()
            topicC.withUnsafeMutableBufferPointer { topicBuffer in
                let topicPointer = UnsafePointer(topicBuffer.baseAddress!)
                payload.withUnsafeMutableBytes { buffer in
                    for i in 0..<total {
                        if saturate {
                            while true {
                                let acked = dev.counters.published.load(ordering: .acquiring) - publishedBefore
                                if i - acked < window && i - delivered() < deliveryWindow { break }
                                wakeup.wait(microseconds: 200) {
                                    let acked = dev.counters.published.load(ordering: .acquiring) - publishedBefore
                                    return i - acked < window && i - delivered() < deliveryWindow
                                }
                            }
                        } else {
                            sleepUntil(start + UInt64(i) * interval)
                        }
                        let at = monoNanos()
                        writeDigits(at, width: 20, into: buffer, at: 0)
                        writeDigits(UInt64(i), width: 8, into: buffer, at: 21)
                        let rc = dev.publish(topic: topicPointer, payload: UnsafeRawBufferPointer(buffer), qos: qos)
                        if rc != MOSQ_ERR_SUCCESS.rawValue {
                            progress.failures.wrappingAdd(1, ordering: .relaxed)
                            continue
                        }
                        if i == 0 { progress.firstSend.store(at, ordering: .relaxed) }
                        progress.lastSend.store(at, ordering: .relaxed)
                        progress.sent.store(i + 1, ordering: .releasing)
                    }
                }
            }
            progress.done.store(true, ordering: .releasing)
        }
        let sendBudget = saturate ? Double(total) / 500 + 120 : seconds * 3 + 30
        let sendDone = await waitFor(seconds: sendBudget) { progress.done.load(ordering: .acquiring) }
        if !sendDone { note("publisher did not finish within \(Int(sendBudget)) s") }
        let allArrived = await waitFor(seconds: drainTimeout) {
            delivered() >= progress.sent.load(ordering: .acquiring)
                && (outSink.map { $0.received.load(ordering: .acquiring) >= progress.sent.load(ordering: .acquiring) } ?? true)
        }
        _ = await waitFor(seconds: 5) {
            dev.counters.published.load(ordering: .acquiring) - publishedBefore >= progress.sent.load(ordering: .acquiring)
        }
        let cpu = processCPUSeconds() - cpuBefore
        let closedByServer = wsCounters.closedByServer.load(ordering: .relaxed)
        let deviceDisconnected = dev.counters.disconnected.load(ordering: .acquiring)
        if sendDone { publisher.join() }
        await cleanup()

        let sent = progress.sent.load(ordering: .acquiring)
        let firstSend = progress.firstSend.load(ordering: .relaxed)
        let lastSend = progress.lastSend.load(ordering: .relaxed)
        let failures = progress.failures.load(ordering: .relaxed)
        let acked = dev.counters.published.load(ordering: .acquiring) - publishedBefore

        func perSecond(received: Int, last: UInt64) -> Double {
            last > firstSend ? (Double(received) / (Double(last - firstSend) / 1e9)).rounded() : 0
        }
        var result: [String: Any] = [
            "bench": "mqtt",
            "mode": mode.rawValue,
            "run": saturate ? "saturate" : "paced",
            "mqtt_protocol": mqttProtocol,
            "qos": qos,
            "receive_maximum": receiveMaximum,
            "topic": publishTopic,
            "rate": saturate ? 0 : rate,
            "seconds": saturate ? 0 : seconds,
            "messages": total,
            "window": saturate ? window : 0,
            "delivery_window": saturate ? deliveryWindow : 0,
            "body_bytes": bodyBytes,
            "setup_seconds": round3(setupSeconds),
            "sent": sent,
            "publish_failures": failures,
            "acked": acked,
            "sender_finished": sendDone,
            "send_rate": lastSend > firstSend ? (Double(sent - 1) / (Double(lastSend - firstSend) / 1e9)).rounded() : 0,
            "device_disconnected": deviceDisconnected,
            "all_arrived": allArrived,
            "client_cpu_seconds": round3(cpu),
        ]
        var ok = sendDone && allArrived && failures == 0 && sent == total && !deviceDisconnected
        switch mode {
        case .direct:
            let sink = directSink!
            let data = sink.snapshot()
            let received = sink.received.load(ordering: .acquiring)
            result["receiver"] = "mqtt"
            result["received"] = received
            result["lost"] = max(0, sent - received)
            result["out_of_order"] = data.outOfOrder
            result["unparsed"] = data.unparsed
            result["received_per_s"] = perSecond(received: received, last: sink.lastReceive.load(ordering: .relaxed))
            result["receive_seconds"] = round3(Double(sink.lastReceive.load(ordering: .relaxed) &- firstSend) / 1e9)
            result["latency"] = LatencySummary(nanos: data.samples).json
        case .gateway:
            let snapshot = wsState.snapshot()
            let received = wsState.delivered.load(ordering: .relaxed)
            let last = wsState.lastReceive.load(ordering: .relaxed)
            result["receiver"] = "ws"
            result["room"] = room
            result["received"] = received
            result["lost"] = max(0, sent - received)
            result["out_of_order"] = snapshot.outOfOrder
            result["received_per_s"] = perSecond(received: received, last: last)
            result["receive_seconds"] = round3(Double(last &- firstSend) / 1e9)
            result["latency"] = LatencySummary(nanos: snapshot.samples).json
            result["closed_by_server"] = closedByServer
            result["errors"] = snapshot.errorCount
            result["first_errors"] = snapshot.firstErrors
            ok = ok && snapshot.errorCount == 0 && closedByServer == 0
            if let outSink {
                let data = outSink.snapshot()
                let got = outSink.received.load(ordering: .acquiring)
                result["out_subscriber"] = [
                    "topic": "\(prefix)/rooms/\(room)/out",
                    "received": got,
                    "lost": max(0, sent - got),
                    "out_of_order": data.outOfOrder,
                    "received_per_s": perSecond(received: got, last: outSink.lastReceive.load(ordering: .relaxed)),
                    "latency": LatencySummary(nanos: data.samples).json,
                ] as [String: Any]
            }
        }
        result["ok"] = ok
        return result
    }
}

/// How far the device's publisher thread got.
final class PublisherProgress: Sendable {
    let sent = Atomic<Int>(0)
    let failures = Atomic<Int>(0)
    let firstSend = Atomic<UInt64>(0)
    let lastSend = Atomic<UInt64>(0)
    let done = Atomic<Bool>(false)
}

/// Writes `value` as `width` decimal digits (zero padded) at `offset`.
@inline(__always)
func writeDigits(_ value: UInt64, width: Int, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) {
    var v = value
    var k = offset + width - 1
    while k >= offset {
        buffer[k] = UInt8(ascii: "0") &+ UInt8(v % 10)
        v /= 10
        k -= 1
    }
}
