import SwitchboardCore

/// Settings of the WebSocket listener, from `[websocket]`, `[limits]` and `[server]`.
struct WebSocketSettings: Sendable {
    var bind: String
    var port: Int
    var maxConnections: Int
    var maxHTTPConnections: Int
    var httpIdleTimeoutSeconds: Int
    var maxMessageBytes: Int
    var maxFrameBytes: Int
    var idleTimeoutSeconds: Int
    var pingIntervalSeconds: Int
    var ratePerSecond: Int
    var rateBurst: Int
    var tokenTTLSeconds: Int
    var tokenSecret: String
    var dataDir: String
    var maxBodyBytes: Int
    var shutdownGraceSeconds: Int

    init(_ config: SwitchboardConfiguration) {
        bind = config.string("websocket", "bind")
        port = config.int("websocket", "port")
        maxConnections = config.int("websocket", "max_connections")
        maxHTTPConnections = config.int("websocket", "max_http_connections")
        httpIdleTimeoutSeconds = config.int("websocket", "http_idle_timeout_seconds")
        maxMessageBytes = config.int("websocket", "max_message_bytes")
        maxFrameBytes = max(config.int("websocket", "max_frame_bytes"), maxMessageBytes)
        idleTimeoutSeconds = config.int("websocket", "idle_timeout_seconds")
        pingIntervalSeconds = config.int("websocket", "ping_interval_seconds")
        ratePerSecond = config.int("websocket", "rate_per_second")
        rateBurst = config.int("websocket", "rate_burst")
        tokenTTLSeconds = config.int("websocket", "token_ttl_seconds")
        tokenSecret = config.string("websocket", "token_secret")
        dataDir = config.string("server", "data_dir")
        maxBodyBytes = config.int("limits", "max_body_bytes")
        shutdownGraceSeconds = config.int("server", "shutdown_grace_seconds")
    }

    /// Largest `limit` a history request may ask for.
    static let maxHistoryLimit = 500
    /// `limit` when a history request names none.
    static let defaultHistoryLimit = 50
}
