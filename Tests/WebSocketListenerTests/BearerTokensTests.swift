import Foundation
import SwitchboardCore
import Testing
@testable import WebSocketListener

@Suite struct BearerTokensTests {
    let tokens = BearerTokens(secret: Array("a secret of at least thirty-two bytes".utf8), ttlSeconds: 3600)
    let alice = UserName("alice")!
    let now: Int64 = 1_732_236_000_123

    @Test func issuedTokenVerifiesAsItsUser() throws {
        let issued = tokens.issue(for: alice, nowMillis: now)
        #expect(try tokens.verify(issued.token, nowMillis: now) == alice)
        #expect(issued.expiresAt == (now / 1000 + 3600) * 1000)
        #expect(issued.token.split(separator: ".").count == 3)
    }

    @Test func expiredTokenIsRefused() {
        let issued = tokens.issue(for: alice, nowMillis: now)
        #expect(throws: BearerTokens.Rejection.expired) { try tokens.verify(issued.token, nowMillis: issued.expiresAt) }
    }

    @Test func tokenFromAnotherKeyIsRefused() {
        let other = BearerTokens(secret: Array("another secret, just as long, really".utf8), ttlSeconds: 3600)
        let issued = other.issue(for: alice, nowMillis: now)
        #expect(throws: BearerTokens.Rejection.badSignature) { try tokens.verify(issued.token, nowMillis: now) }
    }

    @Test func tamperedPayloadIsRefused() {
        let issued = tokens.issue(for: alice, nowMillis: now)
        var parts = issued.token.split(separator: ".").map(String.init)
        parts[1] = BearerTokens.base64URL(Array(#"{"sub":"bob","exp":99999999999}"#.utf8))
        #expect(throws: BearerTokens.Rejection.badSignature) { try tokens.verify(parts.joined(separator: "."), nowMillis: now) }
    }

    @Test(arguments: ["", "abc", "a.b", "a.b.c.d", "!!.??.**", String(repeating: "x", count: 5000)])
    func garbageIsMalformed(_ token: String) {
        #expect(throws: BearerTokens.Rejection.self) { try tokens.verify(token, nowMillis: now) }
    }

    @Test func generatedSecretIsKeptInTheDataDirectory() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swb-token-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = try BearerTokens.loadSecret(configured: "", dataDir: dir)
        let second = try BearerTokens.loadSecret(configured: "", dataDir: dir)
        #expect(first.count == 32)
        #expect(first == second)
        let attributes = try FileManager.default.attributesOfItem(atPath: dir + "/token.key")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        #expect(try BearerTokens.loadSecret(configured: "configured", dataDir: dir) == Array("configured".utf8))
    }
}
