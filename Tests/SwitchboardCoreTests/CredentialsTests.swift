import Crypto
import Foundation
import Testing
@testable import SwitchboardCore

@Suite struct CredentialsTests {
    @Test func derivedCredentialsVerifyTheRightPasswordOnly() throws {
        let stored = try StoredCredentials.derive(user: UserName("alice")!, password: "correct horse", realm: "localhost", iterations: 4096)
        #expect(stored.verify(password: "correct horse"))
        #expect(!stored.verify(password: "correct horsE"))
        #expect(!stored.verify(password: ""))
        #expect(stored.salt.count == 16)
        let again = try StoredCredentials.derive(user: UserName("alice")!, password: "correct horse", realm: "localhost", iterations: 4096)
        #expect(again.salt != stored.salt)
        #expect(again.scramSHA256.storedKey != stored.scramSHA256.storedKey)
    }

    @Test func sipDigestHA1IsMD5AndSHA256OfUserRealmPassword() throws {
        let stored = try StoredCredentials.derive(user: UserName("bob")!, password: "zanzibar", realm: "biloxi.com", iterations: 4096)
        #expect(stored.digestHA1MD5 == Insecure.MD5.hash(data: Array("bob:biloxi.com:zanzibar".utf8)).hexString)
        #expect(stored.digestHA1SHA256 == SHA256.hash(data: Array("bob:biloxi.com:zanzibar".utf8)).hexString)
        #expect(stored.digestHA1MD5.count == 32 && stored.digestHA1SHA256.count == 64)
    }

    @Test func tooFewIterationsOrAnEmptyPasswordAreRefused() {
        #expect(throws: SwitchboardError.self) {
            _ = try StoredCredentials.derive(user: UserName("a")!, password: "x", realm: "r", iterations: 1000)
        }
        #expect(throws: SwitchboardError.self) {
            _ = try StoredCredentials.derive(user: UserName("a")!, password: "", realm: "r", iterations: 4096)
        }
    }

    /// The exchange of RFC 5802 §5 (SCRAM-SHA-1) checked against stored keys only.
    @Test func scramSHA1MatchesRFC5802() throws {
        try checkScram(
            hash: .sha1, salt: "QSXCR+Q6sek8bf92",
            authMessage: "n=user,r=fyko+d2lbbFgONRv9qkxdawL,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096,c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j",
            proof: "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", serverSignature: "rmF9pqV8S7suAoZWja4dJRkFsKQ=")
    }

    /// The exchange of RFC 7677 §3 (SCRAM-SHA-256).
    @Test func scramSHA256MatchesRFC7677() throws {
        try checkScram(
            hash: .sha256, salt: "W22ZaJ0SNY7soEsUEjb6gQ==",
            authMessage: "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            proof: "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", serverSignature: "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    }

    func checkScram(hash: StoredCredentials.ScramHash, salt: String, authMessage: String, proof: String, serverSignature: String) throws {
        let keys = try StoredCredentials.scramKeys(password: "pencil", salt: Array(Data(base64Encoded: salt)!), iterations: 4096, hash: hash)
        let message = Array(authMessage.utf8)
        let clientSignature: [UInt8]
        let server: [UInt8]
        switch hash {
        case .sha1:
            clientSignature = Array(HMAC<Insecure.SHA1>.authenticationCode(for: message, using: SymmetricKey(data: keys.storedKey)))
            server = Array(HMAC<Insecure.SHA1>.authenticationCode(for: message, using: SymmetricKey(data: keys.serverKey)))
        case .sha256:
            clientSignature = Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: keys.storedKey)))
            server = Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: keys.serverKey)))
        }
        #expect(Data(server).base64EncodedString() == serverSignature)
        // The server's check: ClientKey = proof XOR ClientSignature; H(ClientKey) must equal StoredKey.
        let clientKey = zip(Array(Data(base64Encoded: proof)!), clientSignature).map { $0 ^ $1 }
        let recomputed: [UInt8] = hash == .sha1 ? Array(Insecure.SHA1.hash(data: clientKey)) : Array(SHA256.hash(data: clientKey))
        #expect(recomputed == keys.storedKey)
    }
}
