import NIOCore
import SIPWire
import SwitchboardCore

/// Settings of the SIP listener, from `[sip]`, `[server]` and `[limits]`.
struct SIPSettings: Sendable {
    var bind: String
    var port: Int
    /// The host put in our Via, Record-Route and Call-IDs.
    var advertiseHost: String
    var domain: String
    var minExpires: Int
    var maxExpires: Int
    var nonceTTLSeconds: Int
    var digestAlgorithms: [SIPDigestAlgorithm]
    var limits: SIPLimits
    var maxConnections: Int
    var maxBindingsPerUser: Int
    var timers: SIPTimers
    var deliveryWindow: Int
    /// Server transactions kept at once (a completed one stays 64·T1 over UDP); beyond this a
    /// new request is answered 503 with Retry-After, statelessly.
    var maxTransactions: Int
    var ratePerSecond: Int
    var rateBurst: Int
    var maxBodyBytes: Int
    var shutdownGraceSeconds: Int

    init(_ config: SwitchboardConfiguration) {
        bind = config.string("sip", "bind")
        port = config.int("sip", "port")
        let advertise = config.string("sip", "advertise_host")
        advertiseHost = !advertise.isEmpty ? advertise : (bind == "0.0.0.0" || bind == "::" ? "127.0.0.1" : bind)
        domain = config.string("server", "domain").lowercased()
        minExpires = config.int("sip", "min_expires")
        maxExpires = max(config.int("sip", "max_expires"), config.int("sip", "min_expires"))
        nonceTTLSeconds = config.int("sip", "nonce_ttl_seconds")
        digestAlgorithms = config.strings("sip", "digest_algorithms").compactMap(SIPDigestAlgorithm.init(name:))
        limits = SIPLimits(maxMessageBytes: config.int("sip", "max_message_bytes"), maxHeaders: config.int("sip", "max_headers"))
        maxConnections = config.int("sip", "max_connections")
        maxBindingsPerUser = config.int("sip", "max_bindings_per_user")
        timers = SIPTimers(t1: Int64(config.int("sip", "t1_ms")), t2: Int64(config.int("sip", "t2_ms")),
                           t4: Int64(config.int("sip", "t4_ms")))
        deliveryWindow = config.int("sip", "delivery_window")
        maxTransactions = config.int("sip", "max_transactions")
        ratePerSecond = config.int("sip", "rate_per_second")
        rateBurst = config.int("sip", "rate_burst")
        maxBodyBytes = config.int("limits", "max_body_bytes")
        shutdownGraceSeconds = config.int("server", "shutdown_grace_seconds")
    }

    var conferenceDomain: String { "conference." + domain }
}

/// Where a message came from or goes to: a transport and a socket address.
struct SIPPeer: Hashable, Sendable, CustomStringConvertible {
    enum Transport: String, Sendable { case udp, tcp }
    var transport: Transport
    var address: SocketAddress

    var description: String { "\(transport.rawValue):\(address.ipAddress ?? "?"):\(address.port ?? 0)" }
    var isReliable: Bool { transport == .tcp }

    /// Parses `udp:127.0.0.1:5070`.
    init?(_ text: String) {
        let parts = text.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, let transport = Transport(rawValue: String(parts[0])) else { return nil }
        let rest = parts[1]
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]),
              let address = try? SocketAddress(ipAddress: String(rest[..<colon]), port: port)
        else { return nil }
        self.transport = transport
        self.address = address
    }

    init(transport: Transport, address: SocketAddress) {
        self.transport = transport
        self.address = address
    }
}
