import Foundation
import SwitchboardCore
import Testing
@testable import XMPPListener

/// The exchanges of RFC 7677 §3 (SCRAM-SHA-256) and RFC 5802 §5 (SCRAM-SHA-1), user "user",
/// password "pencil"; stored keys computed independently (Python hashlib).
@Suite struct ScramServerTests {
    func credentials(sha256 stored: String, _ server: String, sha1 stored1: String, _ server1: String, salt: String) -> StoredCredentials {
        func bytes(_ b64: String) -> [UInt8] { Array(Data(base64Encoded: b64)!) }
        return StoredCredentials(
            user: UserName("user")!, salt: bytes(salt), iterations: 4096,
            scramSHA1: .init(storedKey: bytes(stored1), serverKey: bytes(server1)),
            scramSHA256: .init(storedKey: bytes(stored), serverKey: bytes(server)),
            digestRealm: "localhost", digestHA1MD5: "", digestHA1SHA256: "")
    }

    @Test func rfc7677ExchangeSucceeds() throws {
        let account = credentials(sha256: "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=", "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
                                  sha1: "", "", salt: "W22ZaJ0SNY7soEsUEjb6gQ==")
        var scram = ScramServer(mechanism: .sha256)
        #expect(try scram.start(clientFirst: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO") == "user")
        let first = scram.challenge(for: account, serverNonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
        #expect(first == "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
        let (user, final) = try scram.finish(clientFinal:
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
        #expect(user.rawValue == "user")
        #expect(final == "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    }

    @Test func rfc5802ExchangeSucceeds() throws {
        let account = credentials(sha256: "", "", sha1: "6dlGYMOdZcOPutkcNY8U2g7vK9Y=", "D+CSWLOshSulAsxiupA+qs2/fTE=",
                                  salt: "QSXCR+Q6sek8bf92")
        var scram = ScramServer(mechanism: .sha1)
        _ = try scram.start(clientFirst: "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
        _ = scram.challenge(for: account, serverNonce: "3rfcNHYJY1ZVvWVs7j")
        let (_, final) = try scram.finish(clientFinal: "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
        #expect(final == "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
    }

    @Test func wrongProofUnknownUserAndTamperingFail() throws {
        let account = credentials(sha256: "", "", sha1: "6dlGYMOdZcOPutkcNY8U2g7vK9Y=", "D+CSWLOshSulAsxiupA+qs2/fTE=",
                                  salt: "QSXCR+Q6sek8bf92")
        var scram = ScramServer(mechanism: .sha1)
        _ = try scram.start(clientFirst: "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
        _ = scram.challenge(for: account, serverNonce: "3rfcNHYJY1ZVvWVs7j")
        #expect(throws: ScramServer.Failure.notAuthorized) {
            try scram.finish(clientFinal: "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=AAX8v3Bz2T0CJGbJQyF0X+HI4Ts=")
        }
        #expect(throws: ScramServer.Failure.self) {
            try scram.finish(clientFinal: "c=biws,r=another-nonce,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
        }
        var unknown = ScramServer(mechanism: .sha1)
        _ = try unknown.start(clientFirst: "n,,n=nobody,r=abc")
        let challenge = unknown.challenge(for: nil, serverNonce: "xyz")
        #expect(challenge.hasPrefix("r=abcxyz,s="))
        #expect(throws: ScramServer.Failure.notAuthorized) { try unknown.finish(clientFinal: "c=biws,r=abcxyz,p=AAAA") }
    }

    @Test(arguments: ["", "n,n=user,r=x", "p=tls-unique,,n=user,r=x", "n,,r=x", "n,,n=user", "n,,n=bad=name,r=x", "n,,m=ext,n=u,r=x"])
    func malformedClientFirstIsRefused(_ message: String) {
        var scram = ScramServer(mechanism: .sha256)
        #expect(throws: ScramServer.Failure.self) { try scram.start(clientFirst: message) }
    }

    /// RFC 5802 §7: the GS2 flag is n, y or p=<binding>. Only p= asks for channel binding
    /// (refused as `encryption-required`); anything else is a malformed request.
    @Test func theGS2FlagDecidesTheCondition() {
        var scram = ScramServer(mechanism: .sha256)
        #expect(throws: ScramServer.Failure(condition: "encryption-required", text: "channel binding is not supported")) {
            try scram.start(clientFirst: "p=tls-unique,,n=user,r=x")
        }
        var other = ScramServer(mechanism: .sha256)
        do {
            _ = try other.start(clientFirst: "x,,n=user,r=abc")
            Issue.record("a bad GS2 flag was accepted")
        } catch {
            #expect(error.condition == "malformed-request")
        }
    }

    @Test func saslNamesAreUnescaped() {
        #expect(ScramServer.decodeSaslName("a=2Cb=3Dc") == "a,b=c")
        #expect(ScramServer.decodeSaslName("a=b") == nil)
    }
}
