/// Canonical JSON: fixed key order (`id, room, seq, ts, from{user, display?, via},
/// kind, body, attrs, client_id?`), attrs sorted by key, no whitespace, only the
/// escapes JSON requires. Written by hand because it runs once per envelope on
/// the hot path and must be byte-for-byte stable.
extension Envelope {
    /// The canonical JSON encoding of this envelope.
    public func jsonBytes() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(160 + body.utf8.count)
        writeJSON(into: &out)
        return out
    }

    /// The canonical JSON encoding as a string.
    public func jsonString() -> String {
        String(decoding: jsonBytes(), as: UTF8.self)
    }

    /// Appends the canonical JSON encoding to `out`.
    public func writeJSON(into out: inout [UInt8]) {
        out.append(contentsOf: #"{"id":"#.utf8)
        JSONWriter.string(id, into: &out)
        out.append(contentsOf: #","room":"#.utf8)
        JSONWriter.string(room.rawValue, into: &out)
        out.append(contentsOf: #","seq":"#.utf8)
        out.append(contentsOf: String(seq).utf8)
        out.append(contentsOf: #","ts":"#.utf8)
        out.append(contentsOf: String(ts).utf8)
        out.append(contentsOf: #","from":{"user":"#.utf8)
        JSONWriter.string(from.user.rawValue, into: &out)
        if let display = from.display {
            out.append(contentsOf: #","display":"#.utf8)
            JSONWriter.string(display, into: &out)
        }
        out.append(contentsOf: #","via":"#.utf8)
        JSONWriter.string(from.via.rawValue, into: &out)
        out.append(contentsOf: #"},"kind":"#.utf8)
        JSONWriter.string(kind.rawValue, into: &out)
        out.append(contentsOf: #","body":"#.utf8)
        JSONWriter.string(body, into: &out)
        out.append(contentsOf: #","attrs":"#.utf8)
        JSONWriter.object(attrs, into: &out)
        if let clientID {
            out.append(contentsOf: #","client_id":"#.utf8)
            JSONWriter.string(clientID, into: &out)
        }
        out.append(UInt8(ascii: "}"))
    }
}

/// Minimal JSON output helpers shared by the envelope and the listeners' frames.
public enum JSONWriter {
    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// Appends `string` as a quoted, escaped JSON string.
    public static func string(_ string: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0x0A: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0..<0x20, 0x7F:
                out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                                        hex[Int(byte >> 4)], hex[Int(byte & 0xF)]])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// Appends a string-to-string object with its keys sorted.
    public static func object(_ dictionary: [String: String], into out: inout [UInt8]) {
        out.append(UInt8(ascii: "{"))
        var first = true
        for key in dictionary.keys.sorted() {
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            string(key, into: &out)
            out.append(UInt8(ascii: ":"))
            string(dictionary[key]!, into: &out)
        }
        out.append(UInt8(ascii: "}"))
    }
}
