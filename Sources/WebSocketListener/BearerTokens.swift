import Crypto
import Foundation
import SwitchboardCore

/// Bearer tokens for REST and `/ws`: compact JWTs (`HS256`) signed with an
/// HMAC-SHA256 key, carrying the user (`sub`) and an expiry (`exp`, seconds).
///
/// Written against swift-crypto rather than jwt-kit: three base64url fields and
/// one HMAC are all a server that only issues and checks its own tokens needs.
struct BearerTokens: Sendable {
    private let key: SymmetricKey
    /// Lifetime of issued tokens.
    let ttlSeconds: Int64

    init(secret: [UInt8], ttlSeconds: Int) {
        self.key = SymmetricKey(data: secret)
        self.ttlSeconds = Int64(ttlSeconds)
    }

    /// The key from `[websocket] token_secret`, or else a random one kept in
    /// `<data_dir>/token.key` (created with mode 0600 on first use) so tokens
    /// survive a restart.
    static func loadSecret(configured: String, dataDir: String) throws -> [UInt8] {
        if !configured.isEmpty { return Array(configured.utf8) }
        let path = (dataDir as NSString).appendingPathComponent("token.key")
        if let data = FileManager.default.contents(atPath: path), data.count >= 32 {
            return Array(data)
        }
        var bytes = [UInt8](repeating: 0, count: 32)
        var generator = SystemRandomNumberGenerator()
        for index in bytes.indices { bytes[index] = UInt8.random(in: .min ... .max, using: &generator) }
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes), attributes: [.posixPermissions: 0o600]) else {
            throw SwitchboardError(.storageUnavailable, "cannot write the token key \(path)")
        }
        return bytes
    }

    /// A signed token for `user`, valid until the returned time (ms since the epoch).
    func issue(for user: UserName, nowMillis: Int64) -> (token: String, expiresAt: Int64) {
        let expiresAt = nowMillis / 1000 + ttlSeconds
        let header = Self.base64URL(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        var payload: [UInt8] = Array(#"{"sub":"#.utf8)
        JSONWriter.string(user.rawValue, into: &payload)
        payload.append(contentsOf: #","exp":\#(expiresAt)}"#.utf8)
        let signingInput = header + "." + Self.base64URL(payload)
        let signature = HMAC<SHA256>.authenticationCode(for: Array(signingInput.utf8), using: key)
        return (signingInput + "." + Self.base64URL(Array(signature)), expiresAt * 1000)
    }

    /// Why a token was refused.
    enum Rejection: Error, Equatable { case malformed, badSignature, expired }

    /// The user of a valid, unexpired token.
    func verify(_ token: String, nowMillis: Int64) throws(Rejection) -> UserName {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard token.utf8.count <= 4096, parts.count == 3,
              let signature = Self.decodeBase64URL(parts[2]),
              let payload = Self.decodeBase64URL(parts[1])
        else { throw .malformed }
        let signingInput = Array(token.utf8.prefix(parts[0].utf8.count + 1 + parts[1].utf8.count))
        guard HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: signingInput, using: key) else {
            throw .badSignature
        }
        struct Claims: Decodable { var sub: String; var exp: Int64 }
        guard let claims = try? JSONDecoder().decode(Claims.self, from: Data(payload)), let user = UserName(claims.sub) else {
            throw .malformed
        }
        guard claims.exp * 1000 > nowMillis else { throw .expired }
        return user
    }

    static func base64URL(_ bytes: [UInt8]) -> String {
        var text = Data(bytes).base64EncodedString()
        text = text.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        while text.hasSuffix("=") { text.removeLast() }
        return text
    }

    static func decodeBase64URL(_ text: Substring) -> [UInt8]? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        guard !base64.contains("=") else { return nil }
        while base64.utf8.count % 4 != 0 { base64.append("=") }
        return Data(base64Encoded: base64).map(Array.init)
    }
}
