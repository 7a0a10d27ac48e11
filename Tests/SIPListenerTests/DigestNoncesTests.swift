import Testing
@testable import SIPListener
import SIPWire
import SwitchboardCore

@Suite struct DigestNoncesTests {
    let user = UserName("alice")!
    let realm = "localhost"

    func stored(_ password: String = "secret") throws -> StoredCredentials {
        try StoredCredentials.derive(user: user, password: password, realm: realm, iterations: 4096)
    }

    func answer(_ nonce: String, algorithm: SIPDigestAlgorithm, password: String = "secret", nc: String = "00000001",
                method: String = "REGISTER", opaque: String?) -> SIPDigestCredentials {
        let ha1 = algorithm.ha1(username: "alice", realm: realm, password: password)
        let response = algorithm.response(ha1: ha1, nonce: nonce, method: method, uri: "sip:localhost", qop: "auth",
                                          nc: nc, cnonce: "c0ffee")
        return SIPDigestCredentials(username: "alice", realm: realm, nonce: nonce, uri: "sip:localhost", response: response,
                                    algorithm: algorithm, qop: "auth", nc: nc, cnonce: "c0ffee", opaque: opaque)
    }

    @Test func challengesOfferSHA256BeforeMD5() {
        var nonces = DigestNonces(realm: realm, ttlSeconds: 300)
        let challenges = nonces.challenges(now: 1000)
        #expect(challenges.count == 2)
        #expect(challenges[0].contains("algorithm=SHA-256"))
        #expect(challenges[1].contains("algorithm=MD5"))
        #expect(challenges.allSatisfy { $0.contains("qop=\"auth\"") && $0.contains("realm=\"localhost\"") })
    }

    @Test(arguments: SIPDigestAlgorithm.allCases)
    func rightPasswordPassesAndWrongOneFails(_ algorithm: SIPDigestAlgorithm) throws {
        var nonces = DigestNonces(realm: realm, ttlSeconds: 300)
        let nonce = nonces.makeNonce(now: 1000)
        let credentials = try stored()
        #expect(nonces.verify(answer(nonce, algorithm: algorithm, opaque: nonces.opaque), method: "REGISTER",
                              stored: credentials, now: 2000) == .ok)
        #expect(nonces.verify(answer(nonce, algorithm: algorithm, password: "guess", nc: "00000002", opaque: nonces.opaque),
                              method: "REGISTER", stored: credentials, now: 2000) == .rejected)
    }

    @Test func nonceTagsAreRandomAndDistinct() {
        let first = DigestNonces.randomBlock(count: 512), second = DigestNonces.randomBlock(count: 512)
        #expect(first.count == 512 && second.count == 512)
        // 1,024 draws of 64 bits: a repeat (or a block left at zero) means no randomness.
        #expect(Set(first + second).count == 1024)
        var nonces = DigestNonces(realm: realm, ttlSeconds: 300)
        let tags = (0..<600).map { _ in nonces.makeNonce(now: 1000).split(separator: ".").last.map(String.init) ?? "" }
        #expect(Set(tags).count == 600, "tags stay unique across a refill of the pool")
        #expect(tags.allSatisfy { $0.utf8.count == 16 })
    }

    @Test func aReplayedNonceCountIsRejected() throws {
        var nonces = DigestNonces(realm: realm, ttlSeconds: 300)
        let nonce = nonces.makeNonce(now: 0)
        let credentials = try stored()
        let first = answer(nonce, algorithm: .md5, opaque: nonces.opaque)
        #expect(nonces.verify(first, method: "REGISTER", stored: credentials, now: 10) == .ok)
        #expect(nonces.verify(first, method: "REGISTER", stored: credentials, now: 20) == .rejected)
        let next = answer(nonce, algorithm: .md5, nc: "00000002", opaque: nonces.opaque)
        #expect(nonces.verify(next, method: "REGISTER", stored: credentials, now: 30) == .ok)
    }

    @Test func anOldNonceIsStaleAndAForgedOneRejected() throws {
        var nonces = DigestNonces(realm: realm, ttlSeconds: 300)
        let credentials = try stored()
        let old = nonces.makeNonce(now: 0)
        #expect(nonces.verify(answer(old, algorithm: .sha256, opaque: nonces.opaque), method: "REGISTER",
                              stored: credentials, now: 301_000) == .stale)
        var other = DigestNonces(realm: realm, ttlSeconds: 300)   // another server
        let foreign = other.makeNonce(now: 0)
        #expect(nonces.verify(answer(foreign, algorithm: .sha256, opaque: nonces.opaque), method: "REGISTER",
                              stored: credentials, now: 10) == .rejected)
        // An issued nonce with its id kept but another tag (or another time) is not ours.
        let parts = old.split(separator: ".")
        let wrongTag = "\(parts[0]).\(parts[1]).\(String(repeating: "0", count: 16))"
        #expect(nonces.verify(answer(wrongTag, algorithm: .sha256, opaque: nonces.opaque), method: "REGISTER",
                              stored: credentials, now: 10) == .rejected)
        let shortTag = "\(parts[0]).\(parts[1]).\(parts[2].dropFirst())"
        #expect(nonces.verify(answer(shortTag, algorithm: .sha256, opaque: nonces.opaque), method: "REGISTER",
                              stored: credentials, now: 10) == .rejected)
        let later = "\(String(250_000, radix: 16)).\(parts[1]).\(parts[2])"     // a later issue time
        #expect(nonces.verify(answer(later, algorithm: .sha256, opaque: nonces.opaque), method: "REGISTER",
                              stored: credentials, now: 300_000) == .rejected)
        let unissued = "\(parts[0]).\(String(99, radix: 16)).\(parts[2])"
        #expect(nonces.verify(answer(unissued, algorithm: .sha256, opaque: nonces.opaque), method: "REGISTER",
                              stored: credentials, now: 10) == .rejected)
    }

    @Test func aNonceOutsideTheWindowIsStaleAndTheWindowKeepsCounting() throws {
        var nonces = DigestNonces(realm: realm, ttlSeconds: 300, window: 4)
        let credentials = try stored()
        let first = nonces.makeNonce(now: 0)
        let newer = (1...3).map { _ in nonces.makeNonce(now: 0) }
        // Four nonces in a window of four: the first still counts, and is single-use per nc.
        #expect(nonces.verify(answer(first, algorithm: .md5, opaque: nonces.opaque), method: "REGISTER",
                              stored: credentials, now: 10) == .ok)
        #expect(nonces.verify(answer(first, algorithm: .md5, opaque: nonces.opaque), method: "REGISTER",
                              stored: credentials, now: 10) == .rejected)
        // A fifth challenge takes the first one's slot: the first is now stale, the fifth fresh.
        let fifth = nonces.makeNonce(now: 0)
        #expect(nonces.verify(answer(first, algorithm: .md5, nc: "00000002", opaque: nonces.opaque), method: "REGISTER",
                              stored: credentials, now: 10) == .stale)
        #expect(nonces.verify(answer(fifth, algorithm: .md5, opaque: nonces.opaque), method: "REGISTER",
                              stored: credentials, now: 10) == .ok)
        for nonce in newer {
            #expect(nonces.verify(answer(nonce, algorithm: .md5, opaque: nonces.opaque), method: "REGISTER",
                                  stored: credentials, now: 10) == .ok)
        }
    }

    @Test func theMethodIsPartOfTheResponse() throws {
        var nonces = DigestNonces(realm: realm, ttlSeconds: 300)
        let nonce = nonces.makeNonce(now: 0)
        let forInvite = answer(nonce, algorithm: .md5, method: "INVITE", opaque: nonces.opaque)
        #expect(nonces.verify(forInvite, method: "REGISTER", stored: try stored(), now: 10) == .rejected)
    }
}

@Suite struct DigestNonceUniquenessTests {
    @Test func noncesIssuedInTheSameMillisecondDiffer() {
        var nonces = DigestNonces(realm: "localhost", ttlSeconds: 300)
        let issued = Set((0..<1000).map { _ in nonces.makeNonce(now: 42) })
        #expect(issued.count == 1000)
    }
}

@Suite struct DigestURITests {
    let requestURI = try! SIPURI(parsing: "sip:bob@localhost")

    @Test(arguments: ["sip:bob@localhost", "sip:bob@LOCALHOST", "sip:bob@localhost:5060", "sip:bob@localhost;transport=udp"])
    func theRequestURIMatches(_ uri: String) {
        #expect(SIPCore.digestURI(uri, matches: requestURI))
    }

    @Test(arguments: ["sip:carol@localhost", "sip:bob@example.com", "sip:bob@localhost:5070", "sips:bob@localhost",
                      "sip:localhost", "not a uri", ""])
    func anotherResourceDoesNot(_ uri: String) {
        #expect(!SIPCore.digestURI(uri, matches: requestURI))
    }
}

@Suite struct ToTagTests {
    @Test(arguments: ["<sip:bob@localhost>;tag=abc", "<sip:bob@localhost>;TAG=abc", "bob <sip:bob@x>; x=1;;tag=9"])
    func aTagIsFound(_ value: String) {
        #expect(SIPCore.hasTagParameter(value))
    }

    @Test(arguments: ["<sip:bob@localhost>", "<sip:tag@localhost>;x=tag", "<sip:bob@localhost>;tagx=1", ""])
    func noTagIsFound(_ value: String) {
        #expect(!SIPCore.hasTagParameter(value))
    }
}
