import Crypto
import SIPWire
import SwitchboardCore

/// Issues and checks digest nonces (RFC 3261 §22.4, RFC 8760).
///
/// A nonce is `<issued ms>.<id>.<HMAC-SHA-256 of both, truncated>`, with `id` counting the
/// nonces this server issued: the signature lets the server recognise its own nonces without
/// storing them, and their age is checked against the TTL (an old one is `stale`).
///
/// Replays are refused by remembering the highest `nc` accepted for each of the newest
/// `window` nonces, in a ring indexed by `id` (a nonce used without `qop` counts as `nc` 1, so
/// it is single-use). The memory is fixed whatever the rate: a nonce that `window` newer
/// challenges have pushed out of the ring is answered like an expired one (`stale`), and the
/// client retries with a fresh nonce without asking its user.
public struct DigestNonces: Sendable {
    public let realm: String
    public let ttlMillis: Int64
    public let opaque: String
    /// Offered in this order; credentials with another algorithm are refused.
    public let algorithms: [SIPDigestAlgorithm]
    /// How many of the newest nonces keep their counter (see above).
    public var window: Int { counts.count }
    /// The default window: 262,144 nonces (2 MiB of counters), over a minute of
    /// challenges at several thousand a second.
    public static let defaultWindow = 1 << 18
    /// HMAC-SHA-256 keyed once; each signature works on a copy.
    private let mac: HMAC<SHA256>
    /// Nonces issued so far: the next one gets this id.
    private var issued: UInt64 = 0
    /// The highest `nc` accepted per nonce, at `id % window`; 0 while unused.
    private var counts: [UInt64]

    public init(
        realm: String, ttlSeconds: Int, algorithms: [SIPDigestAlgorithm] = [.sha256, .md5],
        key: SymmetricKey = SymmetricKey(size: .bits256), window: Int = DigestNonces.defaultWindow
    ) {
        self.realm = realm
        self.algorithms = algorithms.isEmpty ? [.sha256, .md5] : algorithms
        self.ttlMillis = Int64(ttlSeconds) * 1000
        self.counts = Array(repeating: 0, count: max(1, window))
        self.mac = HMAC<SHA256>(key: key)
        self.opaque = Array(HMAC<SHA256>.authenticationCode(for: Array("opaque".utf8), using: key)).prefix(8).hexadecimal
    }

    /// `<issued ms>.<id>.<signature>` in hex: unique per challenge even within a millisecond,
    /// since a nonce's counter is tracked for replays.
    public mutating func makeNonce(now: Int64) -> String {
        let id = issued
        issued += 1
        counts[slot(id)] = 0
        let stamp = String(now, radix: 16) + "." + String(id, radix: 16)
        return stamp + "." + signature(stamp)
    }

    private func slot(_ id: UInt64) -> Int { Int(id % UInt64(window)) }

    private func signature(_ stamp: String) -> String {
        var mac = self.mac
        mac.update(data: Array((stamp + ":" + realm).utf8))
        return Array(mac.finalize()).prefix(16).hexadecimal
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
        let parts = credentials.nonce.split(separator: ".")
        guard parts.count == 3, let issuedAt = Int64(parts[0], radix: 16), let id = UInt64(parts[1], radix: 16),
              DigestNonces.equal(String(parts[2]), signature(parts[0] + "." + parts[1])), id < issued
        else { return .rejected }
        if let qop = credentials.qop, qop != "auth" { return .rejected }
        let ha1 = credentials.algorithm == .md5 ? stored.digestHA1MD5 : stored.digestHA1SHA256
        let expected = credentials.algorithm.response(
            ha1: ha1, nonce: credentials.nonce, method: method, uri: credentials.uri,
            qop: credentials.qop, nc: credentials.nc, cnonce: credentials.cnonce)
        guard DigestNonces.equal(expected, credentials.response) else { return .rejected }
        guard now - issuedAt <= ttlMillis, issuedAt <= now + 60_000, issued - id <= UInt64(window) else { return .stale }
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
        StoredCredentials.constantTimeEqual(Array(a.utf8), Array(b.utf8))
    }
}
