import Crypto
#if canImport(Glibc)
import Glibc
#endif
import SIPWire
import SwitchboardCore

/// Issues and checks digest nonces (RFC 3261 §22.4, RFC 8760).
///
/// A nonce is `<issued ms>.<id>.<tag>`, with `id` counting the nonces this server issued and
/// `tag` 64 random bits. For each of the newest `window` nonces a ring indexed by `id` keeps
/// its tag and issue time (so a nonce the server did not issue, or one with its time changed to
/// live longer, is refused) and the highest `nc` accepted for
/// it (so replays are refused; a nonce used without `qop` counts as `nc` 1, so it is
/// single-use). Its age is checked against the TTL (an old one is `stale`).
///
/// The memory is fixed whatever the rate (16 bytes per slot), and nothing is swept: a nonce
/// that `window` newer challenges have pushed out of the ring is answered like an expired one
/// (`stale`, and only after the response proved the password), so the client retries with a
/// fresh nonce without asking its user. Before, the tag was an HMAC of the rest, which needed
/// no table; with the ring already there for `nc`, a random tag does the same job for a
/// fraction of the CPU (two HMACs were ~6 % of a REGISTER's cost).
public struct DigestNonces: Sendable {
    public let realm: String
    public let ttlMillis: Int64
    public let opaque: String
    /// Offered in this order; credentials with another algorithm are refused.
    public let algorithms: [SIPDigestAlgorithm]
    /// How many of the newest nonces keep their counter (see above).
    public var window: Int { counts.count }
    /// The default window: 262,144 nonces (4 MiB of tags and counters), over a minute of
    /// challenges at several thousand a second.
    public static let defaultWindow = 1 << 18
    /// Nonces issued so far: the next one gets this id.
    private var issued: UInt64 = 0
    /// The highest `nc` accepted per nonce, at `id % window`; 0 while unused.
    private var counts: [UInt64]
    /// The random tag of the nonce at `id % window`, XORed with its issue time (so neither
    /// can be changed in a nonce the server gave out).
    private var tags: [UInt64]
    /// Random tags not handed out yet, refilled from the system CSPRNG a block at a time.
    private var pool: [UInt64] = []

    public init(
        realm: String, ttlSeconds: Int, algorithms: [SIPDigestAlgorithm] = [.sha256, .md5],
        key: SymmetricKey = SymmetricKey(size: .bits256), window: Int = DigestNonces.defaultWindow
    ) {
        self.realm = realm
        self.algorithms = algorithms.isEmpty ? [.sha256, .md5] : algorithms
        self.ttlMillis = Int64(ttlSeconds) * 1000
        self.counts = Array(repeating: 0, count: max(1, window))
        self.tags = Array(repeating: 0, count: max(1, window))
        self.opaque = Array(HMAC<SHA256>.authenticationCode(for: Array("opaque".utf8), using: key)).prefix(8).hexadecimal
    }

    /// `<issued ms>.<id>.<tag>` in hex: unique per challenge even within a millisecond,
    /// since a nonce's counter is tracked for replays.
    public mutating func makeNonce(now: Int64) -> String {
        let id = issued
        issued += 1
        let tag = randomTag()
        counts[slot(id)] = 0
        tags[slot(id)] = tag ^ UInt64(bitPattern: now)     // binds the issue time too
        return String(now, radix: 16) + "." + String(id, radix: 16) + "." + Self.hex16(tag)
    }

    private func slot(_ id: UInt64) -> Int { Int(id % UInt64(window)) }

    private mutating func randomTag() -> UInt64 {
        if pool.isEmpty {
            pool = Self.randomBlock(count: 512)
        }
        return pool.removeLast()
    }

    /// `count` words from the kernel's CSPRNG in one read. `SymmetricKey(size:)` (used
    /// before) asks the kernel for 8 bytes at a time: 512 `getrandom` calls per block.
    static func randomBlock(count: Int) -> [UInt64] {
        var words = [UInt64](repeating: 0, count: count)
        #if canImport(Glibc)
        let fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
        if fd >= 0 {
            defer { close(fd) }
            let filled = words.withUnsafeMutableBytes { buffer -> Bool in
                var offset = 0
                while offset < buffer.count {
                    let n = read(fd, buffer.baseAddress! + offset, buffer.count - offset)
                    if n < 0, errno == EINTR { continue }
                    guard n > 0 else { return false }
                    offset += n
                }
                return true
            }
            if filled { return words }
        }
        #endif
        var generator = SystemRandomNumberGenerator()
        for index in words.indices { words[index] = generator.next() }
        return words
    }

    /// 16 hex digits, leading zeros kept: a tag always has the same length.
    static func hex16(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.utf8.count) + digits
    }

    /// The `WWW-Authenticate` / `Proxy-Authenticate` values to send, most preferred first
    /// (SHA-256, then MD5, unless configured otherwise).
    public mutating func challenges(now: Int64, stale: Bool = false) -> [String] {
        let nonce = makeNonce(now: now)
        return algorithms.map { algorithm in
            "Digest realm=\"\(realm)\", nonce=\"\(nonce)\", opaque=\"\(opaque)\", algorithm=\(algorithm.name), qop=\"auth\""
                + (stale ? ", stale=true" : "")
        }
    }

    public enum Verdict: Equatable, Sendable {
        case ok
        /// The response was computed right but the nonce is too old: challenge again with stale=true.
        case stale
        /// Wrong password, a foreign or replayed nonce, or another realm.
        case rejected
    }

    /// Checks `credentials` for a request with `method` against the stored HA1 of the user.
    public mutating func verify(
        _ credentials: SIPDigestCredentials, method: String, stored: StoredCredentials, now: Int64
    ) -> Verdict {
        guard credentials.realm == realm, stored.digestRealm == realm, algorithms.contains(credentials.algorithm),
              credentials.opaque == nil || credentials.opaque == opaque
        else { return .rejected }
        let parts = Substring(credentials.nonce).splitBytes(UInt8(ascii: "."))
        guard parts.count == 3, let issuedAt = Int64(parts[0], radix: 16), let id = UInt64(parts[1], radix: 16),
              id < issued, parts[2].utf8.count == 16, let tag = UInt64(parts[2], radix: 16)
        else { return .rejected }
        // In the ring the tag and time must be the ones issued; a nonce pushed out of it is judged stale
        // below, once the response has shown that its sender knows the password.
        let inWindow = issued - id <= UInt64(window)
        if inWindow, tags[slot(id)] != tag ^ UInt64(bitPattern: issuedAt) { return .rejected }
        if let qop = credentials.qop, qop != "auth" { return .rejected }
        let ha1 = credentials.algorithm == .md5 ? stored.digestHA1MD5 : stored.digestHA1SHA256
        let expected = credentials.algorithm.response(
            ha1: ha1, nonce: credentials.nonce, method: method, uri: credentials.uri,
            qop: credentials.qop, nc: credentials.nc, cnonce: credentials.cnonce)
        guard DigestNonces.equal(expected, credentials.response) else { return .rejected }
        guard now - issuedAt <= ttlMillis, issuedAt <= now + 60_000, inWindow else { return .stale }
        // Replay protection: nc must grow for each use of a nonce.
        let count: UInt64
        if credentials.qop != nil {
            guard let nc = credentials.nc, let value = UInt64(nc, radix: 16) else { return .rejected }
            count = value
        } else {
            count = 1
        }
        let slot = slot(id)
        guard count > counts[slot] else { return .rejected }
        counts[slot] = count
        return .ok
    }

    static func equal(_ a: String, _ b: String) -> Bool {
        StoredCredentials.constantTimeEqual(a.utf8, b.utf8)
    }
}
