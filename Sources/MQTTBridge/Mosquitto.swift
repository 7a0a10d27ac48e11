import CMosquitto
import Foundation
import Synchronization
import SwitchboardCore

/// The thin shim over libmosquitto: the only code in the bridge that touches
/// C pointers.
///
/// One client owns one `struct mosquitto *` and one network thread that runs
/// `mosquitto_loop` and reconnects (with the backoff the bridge chooses). The
/// callbacks libmosquitto makes on that thread reach Swift as ``Event``s.
/// libmosquitto is built thread-safe (`mosquitto_threaded_set`), so publish,
/// subscribe and disconnect may be called from any thread.
final class MosquittoClient: Sendable {
    struct Options: Sendable {
        var clientID: String
        var host: String
        var port: Int
        var keepaliveSeconds: Int
        var username: String?
        var password: String?
        var caFile: String?
        var certFile: String?
        var keyFile: String?
        var protocolVersion: ProtocolVersion
        /// MQTT 5 Session Expiry Interval: how long the broker keeps the session (and its
        /// queued QoS 1 messages) after a disconnect. 3.1.1 sessions never expire.
        var sessionExpirySeconds: UInt32
        /// Topic, payload, QoS and retain of the last will.
        var will: (topic: String, payload: [UInt8], qos: Int32, retain: Bool)?
    }

    enum ProtocolVersion: Int32, Sendable {
        case v311 = 4
        case v5 = 5
    }

    struct Message: Sendable {
        var topic: String
        var payload: [UInt8]
        var qos: Int32
        var retain: Bool
    }

    enum Event: Sendable {
        /// CONNACK arrived; `code` 0 is success (a CONNACK reason code otherwise).
        case connected(code: Int32)
        /// The connection is gone (`code` 0: we asked for it).
        case disconnected(code: Int32)
        case message(Message)
        /// The publish with this message id is done: PUBACK for QoS 1, sent for QoS 0.
        case published(mid: Int32)
    }

    /// A libmosquitto error code with its text.
    struct Failure: Error, CustomStringConvertible {
        var code: Int32
        var description: String { String(cString: mosquitto_strerror(code)) }
    }

    /// The handle libmosquitto gives us. It never changes after `init` and the library
    /// serialises access to the object behind it (threaded mode), so the pointer may be
    /// shared across threads; that is the one fact this wrapper vouches for.
    private struct Handle: @unchecked Sendable {
        let pointer: OpaquePointer
    }

    /// What the C callbacks reach through `obj`: a retained box holding the event sink.
    private final class CallbackBox: Sendable {
        let onEvent: @Sendable (Event) -> Void
        /// Connection failures since the last CONNACK (drives the backoff).
        let failures = Atomic<Int>(0)
        init(onEvent: @escaping @Sendable (Event) -> Void) { self.onEvent = onEvent }
    }

    private static let libraryReady: Bool = {
        mosquitto_lib_init()
        return true
    }()

    private let handle: Handle
    private let box: Unmanaged<CallbackBox>
    private let options: Options
    private let running = Atomic<Bool>(false)

    init(options: Options, onEvent: @escaping @Sendable (Event) -> Void) throws(Failure) {
        _ = Self.libraryReady
        self.options = options
        let box = Unmanaged.passRetained(CallbackBox(onEvent: onEvent))
        // clean_session = false: the broker keeps the bridge's subscription and its QoS 1
        // messages while the gateway reconnects.
        guard let pointer = mosquitto_new(options.clientID, false, box.toOpaque()) else {
            box.release()
            throw Failure(code: MOSQ_ERR_NOMEM.rawValue)
        }
        self.handle = Handle(pointer: pointer)
        self.box = box
        let mosq = pointer
        mosquitto_threaded_set(mosq, true)
        mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, options.protocolVersion.rawValue)
        mosquitto_int_option(mosq, MOSQ_OPT_TCP_NODELAY, 1)
        mosquitto_connect_v5_callback_set(mosq) { _, obj, rc, _, _ in
            let box = MosquittoClient.box(obj)
            if rc == 0 { box.failures.store(0, ordering: .relaxed) }
            box.onEvent(.connected(code: rc))
        }
        mosquitto_disconnect_v5_callback_set(mosq) { _, obj, rc, _ in
            MosquittoClient.box(obj).onEvent(.disconnected(code: rc))
        }
        mosquitto_publish_v5_callback_set(mosq) { _, obj, mid, _, _ in
            MosquittoClient.box(obj).onEvent(.published(mid: mid))
        }
        mosquitto_message_v5_callback_set(mosq) { _, obj, message, _ in
            guard let message = message?.pointee, let topic = message.topic else { return }
            let payload: [UInt8] = message.payloadlen > 0 && message.payload != nil
                ? Array(UnsafeRawBufferPointer(start: message.payload, count: Int(message.payloadlen)))
                : []
            MosquittoClient.box(obj).onEvent(.message(Message(topic: String(cString: topic), payload: payload,
                                                   qos: message.qos, retain: message.retain)))
        }
        do throws(Failure) {
            if let username = options.username {
                try check(mosquitto_username_pw_set(mosq, username, options.password))
            }
            if options.caFile != nil || options.certFile != nil {
                try check(mosquitto_tls_set(mosq, options.caFile, nil, options.certFile, options.keyFile, nil))
            }
            if let will = options.will {
                try check(will.payload.withUnsafeBytes { bytes in
                    mosquitto_will_set(mosq, will.topic, Int32(bytes.count), bytes.baseAddress, will.qos, will.retain)
                })
            }
        } catch {
            mosquitto_destroy(mosq)
            box.release()
            throw error
        }
    }

    deinit {
        mosquitto_destroy(handle.pointer)
        box.release()
    }

    private static func box(_ obj: UnsafeMutableRawPointer?) -> CallbackBox {
        Unmanaged<CallbackBox>.fromOpaque(obj!).takeUnretainedValue()
    }

    private func check(_ rc: Int32) throws(Failure) {
        guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw Failure(code: rc) }
    }

    // MARK: Network thread

    /// Starts the network thread: connect, run the loop, and after each failure wait
    /// `backoff(failures)` before reconnecting (failures count from 1 and reset on CONNACK).
    func start(backoff: @escaping @Sendable (Int) -> Duration) {
        guard !running.exchange(true, ordering: .relaxed) else { return }
        Thread.startNamed("swb-mqtt") { [self] in
            let box = self.box.takeUnretainedValue()
            var connected = false
            var firstAttempt = true
            while running.load(ordering: .relaxed) {
                if !connected {
                    let rc = firstAttempt ? connect() : mosquitto_reconnect(handle.pointer)
                    firstAttempt = false
                    guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                        box.onEvent(.disconnected(code: rc))
                        pause(backoff(box.failures.add(1, ordering: .relaxed).newValue))
                        continue
                    }
                    connected = true
                }
                if mosquitto_loop(handle.pointer, 100, 1) != MOSQ_ERR_SUCCESS.rawValue {
                    connected = false
                    guard running.load(ordering: .relaxed) else { break }
                    pause(backoff(box.failures.add(1, ordering: .relaxed).newValue))
                }
            }
        }
    }

    /// The first connect; libmosquitto keeps its properties for every reconnect.
    private func connect() -> Int32 {
        var properties: OpaquePointer? = nil
        defer { mosquitto_property_free_all(&properties) }
        if options.protocolVersion == .v5 {
            mosquitto_property_add_int32(&properties, Int32(MQTT_PROP_SESSION_EXPIRY_INTERVAL.rawValue), options.sessionExpirySeconds)
        }
        return mosquitto_connect_bind_v5(handle.pointer, options.host, Int32(options.port), Int32(options.keepaliveSeconds), nil,
                                         properties)
    }

    /// Sleeps in short steps, so ``stop()`` is not held up by a long backoff.
    private func pause(_ duration: Duration) {
        let deadline = ContinuousClock.now + duration
        while running.load(ordering: .relaxed) {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { return }
            let seconds = Double(remaining.components.seconds) + Double(remaining.components.attoseconds) / 1e18
            Thread.sleep(forTimeInterval: min(0.05, seconds))
        }
    }

    /// Disconnects cleanly (no last will) and stops the network thread.
    func stop() {
        mosquitto_disconnect(handle.pointer)
        // Let the loop send the DISCONNECT before the thread ends.
        let deadline = ContinuousClock.now + .milliseconds(500)
        while ContinuousClock.now < deadline {
            if mosquitto_want_write(handle.pointer) == false { break }
            Thread.sleep(forTimeInterval: 0.01)
        }
        running.store(false, ordering: .relaxed)
    }

    // MARK: Operations (any thread)

    /// Queues a publish and returns its message id; fails with `MOSQ_ERR_NO_CONN` while disconnected.
    @discardableResult
    func publish(topic: String, payload: [UInt8], qos: Int32, retain: Bool) throws(Failure) -> Int32 {
        var mid: Int32 = 0
        try check(payload.withUnsafeBytes { bytes in
            mosquitto_publish(handle.pointer, &mid, topic, Int32(bytes.count), bytes.baseAddress, qos, retain)
        })
        return mid
    }

    /// Switches the protocol for the next (re)connect.
    func useProtocol(_ version: ProtocolVersion) {
        mosquitto_int_option(handle.pointer, MOSQ_OPT_PROTOCOL_VERSION, version.rawValue)
    }

    func subscribe(_ pattern: String, qos: Int32) throws(Failure) {
        try check(mosquitto_subscribe(handle.pointer, nil, pattern, qos))
    }
}
