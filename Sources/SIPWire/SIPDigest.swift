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

    /// Parses `Digest username="alice", realm="x", …`. Unknown parameters are ignored; a
    /// repeated one is an error.
    public init(parsing text: String) throws(SIPParseError) {
        // One pass over the UTF-8 bytes: every delimiter is ASCII. Items are split at commas
        // outside quotes and <…> (as SIPHeaders.splitList does), each `name=value` with the
        // value unquoted and unescaped; an item without `=` is ignored.
        let bytes = Array(text.utf8)
        let start = bytes[...].trimmingSIPWhitespace().startIndex
        guard bytes.endIndex - start > 7, zip(bytes[start..<start + 6], "digest".utf8).allSatisfy({ $0.asciiLowercased == $1 }),
              bytes[start + 6].isSIPWhitespace
        else { throw SIPParseError(code: "bad_authorization", message: "not a Digest authorization", status: 400) }
        var fields = [String?](repeating: nil, count: Self.knownParameters.count)
        var otherNames: [[UInt8]] = []
        var item = start + 7
        while item < bytes.endIndex {
            let end = SIPHeaders.listItemEnd(in: bytes, from: item)
            defer { item = end + 1 }
            guard let eq = bytes[item..<end].firstIndex(of: UInt8(ascii: "=")) else { continue }
            let name = bytes[item..<eq].trimmingSIPWhitespace()
            let raw = bytes[(eq + 1)..<end].trimmingSIPWhitespace()
            let value: String
            if raw.count >= 2, raw.first == UInt8(ascii: "\""), raw.last == UInt8(ascii: "\"") {
                value = Self.unescaped(raw.dropFirst().dropLast())
            } else {
                value = String(decoding: raw, as: UTF8.self)
            }
            if let slot = Self.knownParameters.firstIndex(where: { equalIgnoringASCIICase(name, $0) }) {
                guard fields[slot] == nil else {
                    throw SIPParseError(code: "bad_authorization",
                                        message: "repeated digest parameter \(Self.parameterNames[slot])", status: 400)
                }
                fields[slot] = value
            } else {
                let lowered = name.map(\.asciiLowercased)
                guard !otherNames.contains(where: { $0.elementsEqual(lowered) }) else {
                    throw SIPParseError(code: "bad_authorization",
                                        message: "repeated digest parameter \(String(decoding: lowered, as: UTF8.self))", status: 400)
                }
                otherNames.append(lowered)
            }
        }
        guard let username = fields[0], let realm = fields[1], let nonce = fields[2], let uri = fields[3],
              let response = fields[4]
        else { throw SIPParseError(code: "bad_authorization", message: "digest authorization lacks a parameter", status: 400) }
        guard let algorithm = SIPDigestAlgorithm(name: fields[5] ?? "MD5") else {
            throw SIPParseError(code: "bad_authorization", message: "unsupported digest algorithm", status: 400)
        }
        self.username = username
        self.realm = realm
        self.nonce = nonce
        self.uri = uri
        self.response = response.utf8.contains(where: \.isASCIIUppercase) ? response.lowercased() : response
        self.algorithm = algorithm
        self.qop = fields[6]
        self.nc = fields[7]
        self.cnonce = fields[8]
        self.opaque = fields[9]
    }

    /// The parameters read into fields, in slot order (lower case).
    private static let parameterNames = ["username", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc",
                                         "cnonce", "opaque"]
    private static let knownParameters = parameterNames.map { Array($0.utf8) }

    /// The inside of a quoted string with `\x` turned into `x`.
    private static func unescaped(_ bytes: ArraySlice<UInt8>) -> String {
        guard bytes.contains(UInt8(ascii: "\\")) else { return String(decoding: bytes, as: UTF8.self) }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var escaped = false
        for byte in bytes {
            if escaped || byte != UInt8(ascii: "\\") {
                out.append(byte)
                escaped = false
            } else {
                escaped = true
            }
        }
        return String(decoding: out, as: UTF8.self)
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
        digestHex([text])
    }

    /// `H(username:realm:password)`.
    public func ha1(username: String, realm: String, password: String) -> String {
        digestHex([username, ":", realm, ":", password])
    }

    /// The expected `response` for the given HA1 (RFC 2617 §3.2.2.1, with or without `qop=auth`).
    public func response(
        ha1: String, nonce: String, method: String, uri: String, qop: String?, nc: String?, cnonce: String?
    ) -> String {
        let ha2 = digestHex([method, ":", uri])
        if let qop, let nc, let cnonce {
            return digestHex([ha1, ":", nonce, ":", nc, ":", cnonce, ":", qop, ":", ha2])
        }
        return digestHex([ha1, ":", nonce, ":", ha2])
    }

    /// The lower-case hex digest of the pieces' bytes, hashed one after another: no joined
    /// string is built and no bytes are copied (a digest check built and copied six strings
    /// and arrays before).
    func digestHex(_ pieces: [String]) -> String {
        switch self {
        case .md5:
            var hasher = Insecure.MD5()
            for piece in pieces { Self.update(&hasher, piece) }
            return Self.hex(hasher.finalize())
        case .sha256:
            var hasher = SHA256()
            for piece in pieces { Self.update(&hasher, piece) }
            return Self.hex(hasher.finalize())
        }
    }

    private static func update(_ hasher: inout some HashFunction, _ piece: String) {
        var piece = piece
        piece.withUTF8 { hasher.update(bufferPointer: UnsafeRawBufferPointer($0)) }
    }

    private static func hex(_ digest: some Digest) -> String {
        digest.withUnsafeBytes { $0.hexadecimal }
    }
}

extension Collection where Element == UInt8 {
    /// Lower-case hexadecimal, as digests and nonces are written, straight into the string.
    /// Inlinable: the listener calls it on its own collections, which a generic version
    /// would walk through witness tables byte by byte.
    @inlinable
    public var hexadecimal: String {
        String(unsafeUninitializedCapacity: count * 2) { out in
            var i = 0
            for b in self {
                out[i] = hexDigits[Int(b >> 4)]
                out[i + 1] = hexDigits[Int(b & 0xF)]
                i += 2
            }
            return i
        }
    }
}

@usableFromInline
let hexDigits = Array("0123456789abcdef".utf8)
