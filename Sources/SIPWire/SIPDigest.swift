import Crypto

/// HTTP Digest as SIP uses it (RFC 3261 §22, RFC 8760): the parameters of an
/// `Authorization` / `Proxy-Authorization` header and the response computation.
public struct SIPDigestCredentials: Hashable, Sendable {
    public var username: String
    public var realm: String
    public var nonce: String
    public var uri: String
    public var response: String
    public var algorithm: SIPDigestAlgorithm
    public var qop: String?
    public var nc: String?
    public var cnonce: String?
    public var opaque: String?

    /// Parses `Digest username="alice", realm="x", …`. Unknown parameters are ignored.
    public init(parsing text: String) throws(SIPParseError) {
        // Scanned as UTF-8 bytes: every delimiter is ASCII, and Character-wise slicing
        // (grapheme breaking) was most of a REGISTER's parsing time.
        let bytes = Array(text.trimmingSIPWhitespace().utf8)
        guard bytes.count > 7, zip(bytes[0..<6], "digest".utf8).allSatisfy({ $0 | 0x20 == $1 }),
              bytes[6] == UInt8(ascii: " ") || bytes[6] == UInt8(ascii: "\t")
        else { throw SIPParseError(code: "bad_authorization", message: "not a Digest authorization", status: 400) }
        var params: [String: String] = [:]
        for item in SIPHeaders.splitList(String(decoding: bytes[7...], as: UTF8.self)) {
            let utf8 = Array(item.utf8)
            guard let eq = utf8.firstIndex(of: UInt8(ascii: "=")) else { continue }
            let name = String(decoding: utf8[..<eq], as: UTF8.self).trimmingSIPWhitespace().lowercased()
            let raw = Array(String(decoding: utf8[(eq + 1)...], as: UTF8.self).trimmingSIPWhitespace().utf8)
            let quoted = raw.count >= 2 && raw.first == UInt8(ascii: "\"") && raw.last == UInt8(ascii: "\"")
            let value = quoted
                ? String(decoding: raw[1..<(raw.count - 1)], as: UTF8.self).replacingEscapes()
                : String(decoding: raw, as: UTF8.self)
            guard params[name] == nil else {
                throw SIPParseError(code: "bad_authorization", message: "repeated digest parameter \(name)", status: 400)
            }
            params[name] = value
        }
        guard let username = params["username"], let realm = params["realm"], let nonce = params["nonce"],
              let uri = params["uri"], let response = params["response"]
        else { throw SIPParseError(code: "bad_authorization", message: "digest authorization lacks a parameter", status: 400) }
        guard let algorithm = SIPDigestAlgorithm(name: params["algorithm"] ?? "MD5") else {
            throw SIPParseError(code: "bad_authorization", message: "unsupported digest algorithm", status: 400)
        }
        self.username = username
        self.realm = realm
        self.nonce = nonce
        self.uri = uri
        self.response = response.lowercased()
        self.algorithm = algorithm
        self.qop = params["qop"]
        self.nc = params["nc"]
        self.cnonce = params["cnonce"]
        self.opaque = params["opaque"]
    }

    public init(
        username: String, realm: String, nonce: String, uri: String, response: String,
        algorithm: SIPDigestAlgorithm, qop: String?, nc: String?, cnonce: String?, opaque: String?
    ) {
        self.username = username
        self.realm = realm
        self.nonce = nonce
        self.uri = uri
        self.response = response
        self.algorithm = algorithm
        self.qop = qop
        self.nc = nc
        self.cnonce = cnonce
        self.opaque = opaque
    }

    /// The header value a client sends.
    public var headerValue: String {
        func quoted(_ text: String) -> String {
            var out = "\""
            for c in text.unicodeScalars where c != "\r" && c != "\n" {
                if c == "\"" || c == "\\" { out += "\\" }
                out.unicodeScalars.append(c)
            }
            return out + "\""
        }
        var out = "Digest username=\(quoted(username)), realm=\(quoted(realm)), nonce=\(quoted(nonce)), "
            + "uri=\(quoted(uri)), response=\(quoted(response)), algorithm=\(algorithm.name)"
        if let qop { out += ", qop=\(qop)" }
        if let nc { out += ", nc=\(nc)" }
        if let cnonce { out += ", cnonce=\(quoted(cnonce))" }
        if let opaque { out += ", opaque=\(quoted(opaque))" }
        return out
    }
}

/// The digest algorithms a server offers (RFC 8760 adds SHA-256 to RFC 3261's MD5).
public enum SIPDigestAlgorithm: String, Hashable, Sendable, CaseIterable {
    case sha256 = "SHA-256"
    case md5 = "MD5"

    public init?(name: String) {
        switch name.uppercased() {
        case "MD5": self = .md5
        case "SHA-256": self = .sha256
        default: return nil
        }
    }

    public var name: String { rawValue }

    public func hash(_ text: String) -> String {
        switch self {
        case .md5: Insecure.MD5.hash(data: Array(text.utf8)).hexadecimal
        case .sha256: SHA256.hash(data: Array(text.utf8)).hexadecimal
        }
    }

    /// `H(username:realm:password)`.
    public func ha1(username: String, realm: String, password: String) -> String {
        hash("\(username):\(realm):\(password)")
    }

    /// The expected `response` for the given HA1 (RFC 2617 §3.2.2.1, with or without `qop=auth`).
    public func response(
        ha1: String, nonce: String, method: String, uri: String, qop: String?, nc: String?, cnonce: String?
    ) -> String {
        let ha2 = hash("\(method):\(uri)")
        if let qop, let nc, let cnonce {
            return hash("\(ha1):\(nonce):\(nc):\(cnonce):\(qop):\(ha2)")
        }
        return hash("\(ha1):\(nonce):\(ha2)")
    }
}

extension Sequence where Element == UInt8 {
    /// Lower-case hexadecimal, as digests and nonces are written.
    public var hexadecimal: String {
        var out: [UInt8] = []
        out.reserveCapacity(underestimatedCount * 2)
        for b in self {
            out.append(hexDigits[Int(b >> 4)])
            out.append(hexDigits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension String {
    fileprivate func replacingEscapes() -> String {
        guard utf8.contains(UInt8(ascii: "\\")) else { return self }
        var out = ""
        var escaped = false
        for c in self {
            if escaped || c != "\\" {
                out.append(c)
                escaped = false
            } else {
                escaped = true
            }
        }
        return out
    }
}

private let hexDigits = Array("0123456789abcdef".utf8)
