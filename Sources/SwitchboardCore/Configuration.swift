import Foundation
import TOMLKit

/// A configuration value after validation.
public enum ConfigValue: Hashable, Sendable, CustomStringConvertible {
    case string(String)
    case int(Int)
    case bool(Bool)
    case strings([String])

    public var description: String {
        switch self {
        case .string(let s): "\"\(s)\""
        case .int(let i): "\(i)"
        case .bool(let b): "\(b)"
        case .strings(let a): "[" + a.map { "\"\($0)\"" }.joined(separator: ", ") + "]"
        }
    }
}

/// Every section and key Switchboard understands, with types, ranges and defaults.
///
/// DESIGN.md fixes the listener sections and their core keys; the rest are
/// documented in README.md. A listener may add keys to its own section by
/// extending ``ConfigSchema/standard``.
public struct ConfigSchema: Sendable {
    /// The type and constraint of one key.
    public enum KeyType: Sendable {
        case string(nonEmpty: Bool)
        case host
        case int(ClosedRange<Int>)
        case bool
        case choice([String])
        case strings
    }

    /// One key with its default.
    public struct Key: Sendable {
        public var name: String
        public var type: KeyType
        public var defaultValue: ConfigValue
        public init(_ name: String, _ type: KeyType, _ defaultValue: ConfigValue) {
            self.name = name
            self.type = type
            self.defaultValue = defaultValue
        }
    }

    /// The sections, in file order.
    public var sections: [(name: String, keys: [Key])]

    public init(sections: [(name: String, keys: [Key])]) {
        self.sections = sections
    }

    func section(_ name: String) -> [Key]? { sections.first { $0.name == name }?.keys }

    /// The schema of `conf/switchboard.toml`.
    public static let standard = ConfigSchema(sections: [
        ("server", [
            Key("domain", .host, .string("localhost")),
            Key("data_dir", .string(nonEmpty: true), .string("data")),
            Key("shutdown_grace_seconds", .int(1...300), .int(5)),
        ]),
        ("log", [
            Key("level", .choice(["trace", "debug", "info", "notice", "warning", "error", "critical"]), .string("info")),
        ]),
        ("limits", [
            Key("max_body_bytes", .int(1...1_048_576), .int(16_384)),
            Key("session_queue", .int(16...1_000_000), .int(4096)),
            Key("max_rooms_per_session", .int(1...10_000), .int(100)),
            Key("dedup_window_seconds", .int(0...86_400), .int(600)),
        ]),
        ("rooms", [
            Key("auto_create", .bool, .bool(true)),
        ]),
        ("history", [
            Key("retention_days", .int(0...36_500), .int(0)),
            Key("max_per_room", .int(0...1_000_000_000), .int(0)),
            Key("retention_interval_seconds", .int(1...86_400), .int(60)),
            Key("max_batch", .int(1...100_000), .int(4096)),
            Key("synchronous", .choice(["normal", "full"]), .string("normal")),
            Key("wal_sync_interval_ms", .int(0...10_000), .int(2)),
        ]),
        ("accounts", [
            Key("pbkdf2_iterations", .int(StoredCredentials.minimumIterations...10_000_000), .int(100_000)),
        ]),
        ("websocket", listenerKeys(port: 8080, enabled: true) + [
            Key("max_connections", .int(1...1_000_000), .int(20_000)),
            Key("max_http_connections", .int(1...1_000_000), .int(1_024)),
            Key("http_idle_timeout_seconds", .int(1...3_600), .int(30)),
            Key("max_message_bytes", .int(1024...16_777_216), .int(65_536)),
            Key("max_frame_bytes", .int(1024...67_108_864), .int(1_048_576)),
            Key("idle_timeout_seconds", .int(1...86_400), .int(300)),
            Key("ping_interval_seconds", .int(0...86_400), .int(30)),
            Key("rate_per_second", .int(1...1_000_000), .int(50)),
            Key("rate_burst", .int(1...1_000_000), .int(100)),
            Key("token_ttl_seconds", .int(1...31_536_000), .int(86_400)),
            Key("token_secret", .string(nonEmpty: false), .string("")),
        ]),
        ("line", listenerKeys(port: 7777, enabled: true) + [
            Key("max_line_bytes", .int(256...1_048_576), .int(16_384)),
            Key("max_connections", .int(1...1_000_000), .int(1000)),
            Key("idle_timeout_seconds", .int(1...86_400), .int(300)),
            Key("rate_per_second", .int(1...1_000_000), .int(100)),
            Key("rate_burst", .int(1...1_000_000), .int(200)),
        ]),
        ("xmpp", listenerKeys(port: 5222, enabled: false) + [
            Key("allow_plain_without_tls", .bool, .bool(false)),
            Key("tls_cert_file", .string(nonEmpty: false), .string("")),
            Key("tls_key_file", .string(nonEmpty: false), .string("")),
            Key("max_stanza_bytes", .int(4096...16_777_216), .int(262_144)),
            Key("max_connections", .int(1...1_000_000), .int(1000)),
            Key("idle_timeout_seconds", .int(1...86_400), .int(600)),
            Key("rate_per_second", .int(1...1_000_000), .int(50)),
            Key("rate_burst", .int(1...1_000_000), .int(200)),
        ]),
        ("sip", listenerKeys(port: 5060, enabled: false) + [
            Key("advertise_host", .string(nonEmpty: false), .string("")),
            Key("min_expires", .int(1...86_400), .int(60)),
            Key("max_expires", .int(1...604_800), .int(3600)),
            Key("nonce_ttl_seconds", .int(5...86_400), .int(300)),
            Key("digest_algorithms", .strings, .strings(["SHA-256", "MD5"])),
            Key("max_message_bytes", .int(1024...65_535), .int(65_535)),
            Key("max_headers", .int(16...1024), .int(128)),
            Key("max_connections", .int(1...1_000_000), .int(1000)),
            Key("max_bindings_per_user", .int(1...100), .int(10)),
            Key("t1_ms", .int(10...10_000), .int(500)),
            Key("t2_ms", .int(100...60_000), .int(4000)),
            Key("t4_ms", .int(100...60_000), .int(5000)),
            Key("delivery_window", .int(1...1024), .int(32)),
            Key("max_transactions", .int(16...4_194_304), .int(262_144)),
            Key("rate_per_second", .int(1...1_000_000), .int(1000)),
            Key("rate_burst", .int(1...1_000_000), .int(2000)),
        ]),
        ("mqtt", [
            Key("enabled", .bool, .bool(false)),
            Key("host", .host, .string("127.0.0.1")),
            Key("port", .int(1...65_535), .int(1883)),
            Key("prefix", .string(nonEmpty: true), .string("switchboard")),
            Key("client_id", .string(nonEmpty: true), .string("switchboard")),
            Key("keepalive_seconds", .int(5...3600), .int(30)),
            Key("username", .string(nonEmpty: false), .string("")),
            Key("password", .string(nonEmpty: false), .string("")),
            Key("protocol", .choice(["auto", "5", "3.1.1"]), .string("auto")),
            Key("session_expiry_seconds", .int(0...2_147_483_647), .int(86_400)),
            Key("tls_ca_file", .string(nonEmpty: false), .string("")),
            Key("tls_cert_file", .string(nonEmpty: false), .string("")),
            Key("tls_key_file", .string(nonEmpty: false), .string("")),
            Key("rooms", .strings, .strings(["*"])),
            Key("qos", .int(0...2), .int(1)),
            Key("queue_size", .int(1...10_000_000), .int(100_000)),
            Key("max_payload_bytes", .int(64...16_777_216), .int(65_536)),
            Key("dedup_seconds", .int(0...86_400), .int(30)),
            Key("reconnect_min_ms", .int(10...600_000), .int(250)),
            Key("reconnect_max_ms", .int(10...3_600_000), .int(30_000)),
        ]),
    ])

    static func listenerKeys(port: Int, enabled: Bool) -> [Key] {
        [
            Key("enabled", .bool, .bool(enabled)),
            Key("bind", .host, .string("127.0.0.1")),
            Key("port", .int(1...65_535), .int(port)),
        ]
    }
}

/// Everything wrong with a configuration, one line per problem, each naming its key.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    /// `section.key: problem` lines.
    public var problems: [String]
    public var description: String { problems.joined(separator: "\n") }
}

/// A validated configuration: the file, then environment overrides, then defaults.
public struct SwitchboardConfiguration: Sendable {
    /// The default configuration file, relative to the working directory.
    public static let defaultPath = "conf/switchboard.toml"
    /// Environment variables that are not configuration keys.
    public static let reservedEnvironment: Set<String> = ["SWITCHBOARD_BIN", "SWITCHBOARD_CONFIG"]

    /// Where the file came from (nil: defaults only).
    public var path: String?
    private var values: [String: [String: ConfigValue]]

    /// Reads `path` (or the default file when it exists), applies `environment`, validates.
    public static func load(
        path: String?, environment: [String: String] = ProcessInfo.processInfo.environment,
        schema: ConfigSchema = .standard
    ) throws(ConfigurationError) -> SwitchboardConfiguration {
        var problems: [String] = []
        var table: TOMLTable?
        let resolved = path ?? (FileManager.default.fileExists(atPath: defaultPath) ? defaultPath : nil)
        if let resolved {
            do {
                let text = try String(contentsOfFile: resolved, encoding: .utf8)
                table = try TOMLTable(string: text)
            } catch let error as TOMLParseError {
                problems.append("\(resolved):\(error.source.begin.line):\(error.source.begin.column): \(error.description)")
            } catch {
                problems.append("\(resolved): cannot read: \(error.localizedDescription)")
            }
        }
        var values: [String: [String: ConfigValue]] = [:]
        for (section, keys) in schema.sections {
            for key in keys { values[section, default: [:]][key.name] = key.defaultValue }
        }
        if let table {
            for sectionName in table.keys.sorted() {
                guard let keys = schema.section(sectionName) else {
                    problems.append("unknown section '\(sectionName)'")
                    continue
                }
                guard let sectionTable = table[sectionName]?.table else {
                    problems.append("\(sectionName): expected a [\(sectionName)] table")
                    continue
                }
                for keyName in sectionTable.keys.sorted() {
                    guard let key = keys.first(where: { $0.name == keyName }) else {
                        problems.append("unknown key '\(sectionName).\(keyName)'")
                        continue
                    }
                    let raw = sectionTable[keyName]!
                    switch validate(tomlValue: raw, key: key) {
                    case .success(let value): values[sectionName]![keyName] = value
                    case .failure(let message): problems.append("\(sectionName).\(keyName): \(message.text)")
                    }
                }
            }
        }
        for (name, text) in environment.sorted(by: { $0.key < $1.key }) where name.hasPrefix("SWITCHBOARD_") {
            if reservedEnvironment.contains(name) { continue }
            let rest = name.dropFirst("SWITCHBOARD_".count).lowercased()
            guard let underscore = rest.firstIndex(of: "_") else {
                problems.append("environment \(name): not of the form SWITCHBOARD_<SECTION>_<KEY>")
                continue
            }
            let sectionName = String(rest[..<underscore])
            let keyName = String(rest[rest.index(after: underscore)...])
            guard let keys = schema.section(sectionName) else {
                problems.append("environment \(name): unknown section '\(sectionName)'")
                continue
            }
            guard let key = keys.first(where: { $0.name == keyName }) else {
                problems.append("environment \(name): unknown key '\(sectionName).\(keyName)'")
                continue
            }
            switch validate(environment: text, key: key) {
            case .success(let value): values[sectionName]![keyName] = value
            case .failure(let message): problems.append("\(sectionName).\(keyName) (from \(name)): \(message.text)")
            }
        }
        if !problems.isEmpty { throw ConfigurationError(problems: problems) }
        return SwitchboardConfiguration(path: resolved, values: values)
    }

    /// The defaults alone (for tests and tools).
    public static func defaults(schema: ConfigSchema = .standard) -> SwitchboardConfiguration {
        var values: [String: [String: ConfigValue]] = [:]
        for (section, keys) in schema.sections {
            for key in keys { values[section, default: [:]][key.name] = key.defaultValue }
        }
        return SwitchboardConfiguration(path: nil, values: values)
    }

    // MARK: Typed access

    /// The value of `section.key`; the schema guarantees presence and type.
    public func value(_ section: String, _ key: String) -> ConfigValue? { values[section]?[key] }

    public func string(_ section: String, _ key: String) -> String {
        if case .string(let s)? = values[section]?[key] { return s }
        preconditionFailure("config \(section).\(key) is not a string in the schema")
    }

    public func int(_ section: String, _ key: String) -> Int {
        if case .int(let i)? = values[section]?[key] { return i }
        preconditionFailure("config \(section).\(key) is not an integer in the schema")
    }

    public func bool(_ section: String, _ key: String) -> Bool {
        if case .bool(let b)? = values[section]?[key] { return b }
        preconditionFailure("config \(section).\(key) is not a boolean in the schema")
    }

    public func strings(_ section: String, _ key: String) -> [String] {
        if case .strings(let a)? = values[section]?[key] { return a }
        preconditionFailure("config \(section).\(key) is not a string array in the schema")
    }

    /// Sets a value (tests, command-line flags). No validation.
    public mutating func set(_ section: String, _ key: String, _ value: ConfigValue) {
        values[section, default: [:]][key] = value
    }

    /// The sections that hold an `enabled = true` key: the listeners to start.
    public var enabledSections: [String] {
        values.keys.filter { values[$0]?["enabled"] == .bool(true) }.sorted()
    }

    // MARK: Validation

    private static func validate(tomlValue raw: any TOMLValueConvertible, key: ConfigSchema.Key) -> Result<ConfigValue, Message> {
        switch key.type {
        case .int:
            guard raw.type == .int, let i = raw.int else { return .failure("expected an integer, got \(describe(raw))") }
            return check(.int(i), key: key)
        case .bool:
            guard raw.type == .bool, let b = raw.bool else { return .failure("expected true or false, got \(describe(raw))") }
            return .success(.bool(b))
        case .strings:
            guard let array = raw.array else { return .failure("expected an array of strings, got \(describe(raw))") }
            var strings: [String] = []
            for element in array {
                guard element.type == .string, let s = element.string else { return .failure("expected an array of strings") }
                strings.append(s)
            }
            return .success(.strings(strings))
        case .string, .host, .choice:
            guard raw.type == .string, let s = raw.string else { return .failure("expected a string, got \(describe(raw))") }
            return check(.string(s), key: key)
        }
    }

    private static func validate(environment text: String, key: ConfigSchema.Key) -> Result<ConfigValue, Message> {
        switch key.type {
        case .int:
            guard let i = Int(text.trimmingCharacters(in: .whitespaces)) else { return .failure("expected an integer, got \"\(text)\"") }
            return check(.int(i), key: key)
        case .bool:
            switch text.lowercased() {
            case "true", "1", "yes", "on": return .success(.bool(true))
            case "false", "0", "no", "off": return .success(.bool(false))
            default: return .failure("expected true or false, got \"\(text)\"")
            }
        case .strings:
            return .success(.strings(text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }))
        case .string, .host, .choice:
            return check(.string(text), key: key)
        }
    }

    private static func check(_ value: ConfigValue, key: ConfigSchema.Key) -> Result<ConfigValue, Message> {
        switch (key.type, value) {
        case (.int(let range), .int(let i)):
            return range.contains(i) ? .success(value) : .failure("\(i) is out of range \(range.lowerBound)...\(range.upperBound)")
        case (.string(let nonEmpty), .string(let s)):
            return nonEmpty && s.isEmpty ? .failure("must not be empty") : .success(value)
        case (.host, .string(let s)):
            let ok = !s.isEmpty && s.utf8.count <= 253 && s.utf8.allSatisfy {
                RoomName.isAllowed($0) || $0 == UInt8(ascii: ":") || ($0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z"))
            }
            return ok ? .success(value) : .failure("\"\(s)\" is not a host name or IP address")
        case (.choice(let options), .string(let s)):
            return options.contains(s) ? .success(value) : .failure("\"\(s)\" is not one of \(options.joined(separator: ", "))")
        default:
            return .success(value)
        }
    }

    private static func describe(_ raw: any TOMLValueConvertible) -> String {
        switch raw.type {
        case .string: "the string \"\(raw.string ?? "")\""
        case .int: "the integer \(raw.int ?? 0)"
        case .bool: "\(raw.bool ?? false)"
        case .double: "the number \(raw.double ?? 0)"
        case .array: "an array"
        case .table: "a table"
        default: "a \(raw.type)"
        }
    }

    struct Message: Error, ExpressibleByStringInterpolation {
        var text: String
        init(stringLiteral value: String) { text = value }
        init(stringInterpolation: DefaultStringInterpolation) { text = String(stringInterpolation: stringInterpolation) }
    }
}

extension Result where Failure == SwitchboardConfiguration.Message {
    fileprivate static func failure(_ text: String) -> Self { .failure(SwitchboardConfiguration.Message(text: text)) }
}

extension SwitchboardConfiguration.Message {
    init(text: String) { self.text = text }
}
