import Foundation
import Testing

@testable import SIPWire

/// The RFC 4475 messages under `Fixtures/rfc4475`, found next to this file (no bundle needed).
enum Fixtures {
    static let rfc4475Directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()
        .appendingPathComponent("Fixtures")
        .appendingPathComponent("rfc4475")

    static func rfc4475(_ name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: rfc4475Directory.appendingPathComponent("\(name).dat")))
    }

    /// Names of every `.dat` file in the directory.
    static func rfc4475Names() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: rfc4475Directory.path)
            .filter { $0.hasSuffix(".dat") }
            .map { String($0.dropLast(4)) }
            .sorted()
    }
}

/// SplitMix64: deterministic across platforms and runs.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// `parse(datagram:)` as a Result, so tests can look at either side.
func parseDatagram(_ bytes: [UInt8], limits: SIPLimits = .default) -> Result<SIPMessage, SIPParseError> {
    do {
        return .success(try SIPParser(limits: limits).parse(datagram: bytes))
    } catch {
        return .failure(error)
    }
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// `text` with every `\n` turned into CRLF.
func crlf(_ text: String) -> [UInt8] {
    Array(text.replacingOccurrences(of: "\n", with: "\r\n").utf8)
}

struct NotARequest: Error {}
struct NotAResponse: Error {}

extension SIPMessage {
    var request: SIPRequest? {
        switch self {
        case .request(let r): r
        case .response: nil
        }
    }

    var response: SIPResponse? {
        switch self {
        case .request: nil
        case .response(let r): r
        }
    }

    var body: [UInt8] {
        switch self {
        case .request(let r): r.body
        case .response(let r): r.body
        }
    }

    /// The message without its Content-Length fields (the serializer moves and rewrites them).
    var withoutContentLength: SIPMessage {
        switch self {
        case .request(var r):
            r.headers.remove("Content-Length")
            return .request(r)
        case .response(var r):
            r.headers.remove("Content-Length")
            return .response(r)
        }
    }
}

/// Parses a fixture that must be a request.
func fixtureRequest(_ name: String) throws -> SIPRequest {
    let message = try SIPParser().parse(datagram: try Fixtures.rfc4475(name))
    guard let request = message.request else { throw NotARequest() }
    return request
}

/// Parses a fixture that must be a response.
func fixtureResponse(_ name: String) throws -> SIPResponse {
    let message = try SIPParser().parse(datagram: try Fixtures.rfc4475(name))
    guard let response = message.response else { throw NotAResponse() }
    return response
}

/// A valid request to build streams and mutations from.
func sampleRequest(callID: String = "a84b4c76e66710", body: String = "") -> [UInt8] {
    var text = "INVITE sip:bob@biloxi.example.com SIP/2.0\n"
        + "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\n"
        + "Max-Forwards: 70\n"
        + "To: Bob <sip:bob@biloxi.example.com>\n"
        + "From: \"Alice\" <sip:alice@atlanta.example.com>;tag=1928301774\n"
        + "Call-ID: \(callID)\n"
        + "CSeq: 314159 INVITE\n"
        + "Contact: <sip:alice@pc33.atlanta.example.com>\n"
    if !body.isEmpty { text += "Content-Type: text/plain\n" }
    text += "Content-Length: \(body.utf8.count)\n\n"
    return crlf(text) + Array(body.utf8)
}
