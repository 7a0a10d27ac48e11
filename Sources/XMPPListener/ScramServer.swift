import Crypto
import Foundation
import SwitchboardCore

/// The server side of SASL SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677),
/// against the stored keys of an account (never the password).
///
/// A value type driven by the listener: ``start(clientFirst:)`` parses the
/// client-first-message, the listener looks the account up, ``challenge(for:)``
/// makes the server-first-message, ``finish(clientFinal:)`` checks the proof and
/// yields the server-final-message. Channel binding is not offered (`n,,` and
/// `y,,` are accepted, `p=` is refused). An unknown user gets a made-up salt and
/// fails only at the proof, as a wrong password does.
struct ScramServer: Sendable {
    enum Mechanism: String, Sendable, CaseIterable {
        case sha256 = "SCRAM-SHA-256"
        case sha1 = "SCRAM-SHA-1"
    }

    /// Why an exchange failed; `condition` is the SASL failure element to send.
    struct Failure: Error, Equatable {
        var condition: String
        var text: String
        static func malformed(_ text: String) -> Failure { Failure(condition: "malformed-request", text: text) }
        static let notAuthorized = Failure(condition: "not-authorized", text: "authentication failed")
    }

    let mechanism: Mechanism
    private(set) var username = ""
    private var gs2Header = ""
    private var clientFirstBare = ""
    private var clientNonce = ""
    private var serverFirst = ""
    private var nonce = ""
    private var keys: StoredCredentials.ScramKeys?
    private var user: UserName?

    init(mechanism: Mechanism) {
        self.mechanism = mechanism
    }

    /// Parses the client-first-message; returns the user name to look up.
    mutating func start(clientFirst message: String) throws(Failure) -> String {
        // gs2-header = gs2-cbind-flag "," [ authzid ] "," ; no channel binding offered.
        let parts = message.split(separator: ",", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw .malformed("client-first-message needs a GS2 header") }
        switch parts[0] {
        case "n", "y": break
        case let flag where flag.hasPrefix("p="):
            throw Failure(condition: "encryption-required", text: "channel binding is not supported")
        default: throw .malformed("the GS2 header starts with n, y or p=")
        }
        guard parts[1].isEmpty || parts[1].hasPrefix("a=") else { throw .malformed("bad authzid") }
        gs2Header = "\(parts[0]),\(parts[1]),"
        clientFirstBare = String(parts[2])
        let attributes = Self.attributes(clientFirstBare)
        guard !clientFirstBare.hasPrefix("m="), let name = attributes["n"], let cnonce = attributes["r"], !cnonce.isEmpty,
              let decoded = Self.decodeSaslName(name)
        else { throw .malformed("client-first-message needs n= and r=") }
        if parts[1].hasPrefix("a="), Self.decodeSaslName(String(parts[1].dropFirst(2))) != decoded {
            throw Failure(condition: "invalid-authzid", text: "authorization identity must be the user")
        }
        username = decoded
        clientNonce = cnonce
        return decoded
    }

    /// The server-first-message for `credentials` (nil: unknown user). `serverNonce` is
    /// random unless a test fixes it.
    mutating func challenge(for credentials: StoredCredentials?, serverNonce: String = ScramServer.randomNonce()) -> String {
        let salt: [UInt8]
        let iterations: Int
        if let credentials {
            salt = credentials.salt
            iterations = credentials.iterations
            keys = mechanism == .sha256 ? credentials.scramSHA256 : credentials.scramSHA1
            user = credentials.user
        } else {
            // Same shape as a real account; the proof can never match.
            salt = Array(SHA256.hash(data: Array("switchboard-unknown-\(username)".utf8)).prefix(16))
            iterations = StoredCredentials.minimumIterations
            keys = nil
        }
        nonce = clientNonce + serverNonce
        serverFirst = "r=\(nonce),s=\(Data(salt).base64EncodedString()),i=\(iterations)"
        return serverFirst
    }

    /// Checks the client-final-message; returns the authenticated user and the server-final-message.
    func finish(clientFinal message: String) throws(Failure) -> (user: UserName, serverFinal: String) {
        guard let proofRange = message.range(of: ",p=") else { throw .malformed("client-final-message needs p=") }
        let withoutProof = String(message[..<proofRange.lowerBound])
        let attributes = Self.attributes(message)
        guard let binding = attributes["c"], let finalNonce = attributes["r"], let proofText = attributes["p"],
              let proof = Data(base64Encoded: proofText).map(Array.init)
        else { throw .malformed("client-final-message needs c=, r= and p=") }
        guard binding == Data(gs2Header.utf8).base64EncodedString() else {
            throw Failure(condition: "not-authorized", text: "channel binding data does not match")
        }
        guard finalNonce == nonce else { throw Failure(condition: "not-authorized", text: "nonce mismatch") }
        guard let keys, let user else { throw .notAuthorized }
        let authMessage = Array("\(clientFirstBare),\(serverFirst),\(withoutProof)".utf8)
        let (clientSignature, serverSignature): ([UInt8], [UInt8])
        let clientKeyHash: (([UInt8]) -> [UInt8])
        switch mechanism {
        case .sha256:
            clientSignature = Array(HMAC<SHA256>.authenticationCode(for: authMessage, using: SymmetricKey(data: keys.storedKey)))
            serverSignature = Array(HMAC<SHA256>.authenticationCode(for: authMessage, using: SymmetricKey(data: keys.serverKey)))
            clientKeyHash = { Array(SHA256.hash(data: $0)) }
        case .sha1:
            clientSignature = Array(HMAC<Insecure.SHA1>.authenticationCode(for: authMessage, using: SymmetricKey(data: keys.storedKey)))
            serverSignature = Array(HMAC<Insecure.SHA1>.authenticationCode(for: authMessage, using: SymmetricKey(data: keys.serverKey)))
            clientKeyHash = { Array(Insecure.SHA1.hash(data: $0)) }
        }
        guard proof.count == clientSignature.count else { throw .notAuthorized }
        let clientKey = zip(proof, clientSignature).map { $0 ^ $1 }
        guard StoredCredentials.constantTimeEqual(clientKeyHash(clientKey), keys.storedKey) else { throw .notAuthorized }
        return (user, "v=\(Data(serverSignature).base64EncodedString())")
    }

    // MARK: Helpers

    /// `a=1,b=2` → ["a": "1", "b": "2"] (values may contain `=`).
    static func attributes(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        for part in text.split(separator: ",") {
            guard part.count >= 2, part.dropFirst().first == "=" else { continue }
            result[String(part.prefix(1))] = String(part.dropFirst(2))
        }
        return result
    }

    /// saslname: `=2C` is `,` and `=3D` is `=`; any other `=` is invalid.
    static func decodeSaslName(_ text: String) -> String? {
        var out = ""
        var index = text.startIndex
        while index < text.endIndex {
            let character = text[index]
            if character == "=" {
                let code = text[index...].prefix(3)
                switch code {
                case "=2C": out.append(",")
                case "=3D": out.append("=")
                default: return nil
                }
                index = text.index(index, offsetBy: 3)
            } else {
                out.append(character)
                index = text.index(after: index)
            }
        }
        return out
    }

    static func randomNonce() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<18).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return Data(bytes).base64EncodedString()
    }
}
