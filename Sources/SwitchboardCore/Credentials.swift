import Crypto
import _CryptoExtras
import Foundation

/// What is stored for an account: derived keys only, never the password.
///
/// * SCRAM (RFC 5802 / 7677) for SHA-1 and SHA-256: `StoredKey` and `ServerKey`
///   derived with PBKDF2 from one random salt, so XMPP can run SCRAM-SHA-1 and
///   SCRAM-SHA-256 and plain-password logins are checked against the SHA-256 keys.
/// * SIP digest (RFC 3261 / RFC 8760): `HA1 = H(user:realm:password)` for MD5
///   and SHA-256, for the realm (the configured domain) at the time it was set.
public struct StoredCredentials: Hashable, Sendable {
    public var user: UserName
    public var salt: [UInt8]
    public var iterations: Int
    public var scramSHA1: ScramKeys
    public var scramSHA256: ScramKeys
    public var digestRealm: String
    public var digestHA1MD5: String
    public var digestHA1SHA256: String

    /// The two keys a SCRAM server stores.
    public struct ScramKeys: Hashable, Sendable {
        public var storedKey: [UInt8]
        public var serverKey: [UInt8]
        public init(storedKey: [UInt8], serverKey: [UInt8]) {
            self.storedKey = storedKey
            self.serverKey = serverKey
        }
    }

    public init(
        user: UserName, salt: [UInt8], iterations: Int, scramSHA1: ScramKeys, scramSHA256: ScramKeys,
        digestRealm: String, digestHA1MD5: String, digestHA1SHA256: String
    ) {
        self.user = user
        self.salt = salt
        self.iterations = iterations
        self.scramSHA1 = scramSHA1
        self.scramSHA256 = scramSHA256
        self.digestRealm = digestRealm
        self.digestHA1MD5 = digestHA1MD5
        self.digestHA1SHA256 = digestHA1SHA256
    }

    /// Least PBKDF2 iteration count accepted (RFC 7677 asks for at least 4096).
    public static let minimumIterations = 4096
    /// Longest accepted password, in bytes.
    public static let maxPasswordBytes = 1024

    /// Derives every stored credential from `password`. Slow on purpose (PBKDF2):
    /// call it off any event loop.
    public static func derive(
        user: UserName, password: String, realm: String, iterations: Int
    ) throws -> StoredCredentials {
        guard !password.isEmpty, password.utf8.count <= maxPasswordBytes else {
            throw SwitchboardError("invalid_password", "a password is 1–\(maxPasswordBytes) bytes")
        }
        guard iterations >= minimumIterations else {
            throw SwitchboardError("invalid_iterations", "PBKDF2 needs at least \(minimumIterations) iterations")
        }
        var salt = [UInt8](repeating: 0, count: 16)
        var rng = SystemRandomNumberGenerator()
        for i in salt.indices { salt[i] = rng.next() }
        let sha1 = try scramKeys(password: password, salt: salt, iterations: iterations, hash: .sha1)
        let sha256 = try scramKeys(password: password, salt: salt, iterations: iterations, hash: .sha256)
        let a1 = Array("\(user.rawValue):\(realm):\(password)".utf8)
        return StoredCredentials(
            user: user, salt: salt, iterations: iterations, scramSHA1: sha1, scramSHA256: sha256,
            digestRealm: realm,
            digestHA1MD5: Insecure.MD5.hash(data: a1).hexString,
            digestHA1SHA256: SHA256.hash(data: a1).hexString
        )
    }

    /// Checks a plaintext password against the SCRAM-SHA-256 keys, in constant time.
    public func verify(password: String) -> Bool {
        guard !password.isEmpty, password.utf8.count <= Self.maxPasswordBytes,
              let keys = try? Self.scramKeys(password: password, salt: salt, iterations: iterations, hash: .sha256)
        else { return false }
        return Self.constantTimeEqual(keys.storedKey, scramSHA256.storedKey)
    }

    /// The hash functions SCRAM is used with.
    public enum ScramHash: Sendable { case sha1, sha256 }

    /// SaltedPassword = PBKDF2(password, salt, i); ClientKey = HMAC(SaltedPassword, "Client Key");
    /// StoredKey = H(ClientKey); ServerKey = HMAC(SaltedPassword, "Server Key").
    public static func scramKeys(password: String, salt: [UInt8], iterations: Int, hash: ScramHash) throws -> ScramKeys {
        let passwordBytes = Array(password.utf8)
        switch hash {
        case .sha1:
            let salted = try KDF.Insecure.PBKDF2.deriveKey(
                from: passwordBytes, salt: salt, using: .insecureSHA1, outputByteCount: 20, unsafeUncheckedRounds: iterations)
            let clientKey = Array(HMAC<Insecure.SHA1>.authenticationCode(for: Array("Client Key".utf8), using: salted))
            let serverKey = Array(HMAC<Insecure.SHA1>.authenticationCode(for: Array("Server Key".utf8), using: salted))
            return ScramKeys(storedKey: Array(Insecure.SHA1.hash(data: clientKey)), serverKey: serverKey)
        case .sha256:
            let salted = try KDF.Insecure.PBKDF2.deriveKey(
                from: passwordBytes, salt: salt, using: .sha256, outputByteCount: 32, unsafeUncheckedRounds: iterations)
            let clientKey = Array(HMAC<SHA256>.authenticationCode(for: Array("Client Key".utf8), using: salted))
            let serverKey = Array(HMAC<SHA256>.authenticationCode(for: Array("Server Key".utf8), using: salted))
            return ScramKeys(storedKey: Array(SHA256.hash(data: clientKey)), serverKey: serverKey)
        }
    }

    /// Compares two byte strings without an early exit.
    ///
    /// Inlinable so that callers get a version specialized for their collections: the
    /// generic one, called from another module, looked up type metadata and went through
    /// witness tables for every byte (7 % of a SIP REGISTER's CPU, checking the digest).
    @inlinable
    public static func constantTimeEqual(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for (x, y) in zip(a, b) { diff |= x ^ y }
        return diff == 0
    }
}

extension Sequence where Element == UInt8 {
    /// Lower-case hexadecimal.
    public var hexString: String {
        var out = ""
        for byte in self {
            out += String(byte >> 4, radix: 16) + String(byte & 0xF, radix: 16)
        }
        return out
    }
}

/// Checks passwords against an ``AccountStore`` without blocking the caller's
/// thread: PBKDF2 runs on a dedicated queue, never on an event loop or the
/// cooperative pool.
public struct PasswordAuthenticator: Sendable {
    private let accounts: any AccountStore
    private let dummyIterations: Int
    private static let queue = DispatchQueue(label: "switchboard.auth", attributes: .concurrent)

    /// `dummyIterations`: the PBKDF2 cost spent on unknown users (the configured cost).
    public init(accounts: any AccountStore, dummyIterations: Int = 100_000) {
        self.accounts = accounts
        self.dummyIterations = max(StoredCredentials.minimumIterations, dummyIterations)
    }

    /// The user when `password` is right; nil otherwise (unknown users cost the same time).
    public func authenticate(user name: String, password: String) async -> UserName? {
        guard let user = UserName(name), user.rawValue == name.lowercased() else { return nil }
        let stored = try? await accounts.credentials(for: user)
        let ok: Bool = await withCheckedContinuation { continuation in
            let dummyIterations = self.dummyIterations
            Self.queue.async {
                if let stored {
                    continuation.resume(returning: stored.verify(password: password))
                } else {
                    // Spend the same effort for unknown users so timing does not reveal them.
                    _ = try? StoredCredentials.scramKeys(
                        password: password, salt: Array(repeating: 0, count: 16),
                        iterations: dummyIterations, hash: .sha256)
                    continuation.resume(returning: false)
                }
            }
        }
        return ok ? user : nil
    }
}
