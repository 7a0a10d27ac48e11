/// Text transformations of the line protocol: escaping of `<text…>` fields and keeping
/// free-form fields on one line.
///
/// In a `<text…>` field (`SAY`, `TELL`, `MSG`), `\\` is a backslash, `\n` a line feed and `\r` a
/// carriage return; any other backslash is literal. This lets multi-line bodies travel on one line
/// in both directions.
public enum LineText {
    /// Escapes `text` for a `<text…>` field: `\` becomes `\\`, LF becomes `\n`, CR becomes `\r`.
    ///
    /// The result contains no CR or LF, and `unescape(escape(s)) == s` for every string.
    public static func escape(_ text: String) -> String {
        let utf8 = text.utf8
        guard utf8.contains(where: { $0 == .backslash || $0 == .lf || $0 == .cr }) else {
            return text
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count + 8)
        for byte in utf8 {
            switch byte {
            case .backslash: bytes.append(contentsOf: [.backslash, .backslash])
            case .lf: bytes.append(contentsOf: [.backslash, UInt8(ascii: "n")])
            case .cr: bytes.append(contentsOf: [.backslash, UInt8(ascii: "r")])
            default: bytes.append(byte)
            }
        }
        // Only ASCII bytes were replaced by ASCII bytes, so the result is still valid UTF-8.
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Reverses ``escape(_:)``: `\\` becomes `\`, `\n` LF and `\r` CR. Any other backslash,
    /// including a lone one at the end, is kept literally.
    public static func unescape(_ text: some StringProtocol) -> String {
        let utf8 = text.utf8
        guard utf8.contains(.backslash) else {
            return String(text)
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count)
        var iterator = utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == .backslash else {
                bytes.append(byte)
                continue
            }
            guard let following = iterator.next() else {
                bytes.append(.backslash)
                break
            }
            switch following {
            case .backslash: bytes.append(.backslash)
            case UInt8(ascii: "n"): bytes.append(.lf)
            case UInt8(ascii: "r"): bytes.append(.cr)
            default: bytes.append(contentsOf: [.backslash, following])
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Returns `text` with every CR and LF replaced by a space and every other control character
    /// (but tab) by `?`, for fields that are not escaped (`ERR` messages, `OK` details, names,
    /// `PONG` tokens): they stay on one line, and input echoed back (an unknown command) cannot
    /// carry terminal escape sequences or NULs to the client.
    public static func singleLine(_ text: String) -> String {
        let utf8 = text.utf8
        guard utf8.contains(where: isReplaced) else {
            return text
        }
        return String(decoding: utf8.map { byte in
            byte == .lf || byte == .cr ? .space : isReplaced(byte) ? UInt8(ascii: "?") : byte
        }, as: UTF8.self)
    }

    private static func isReplaced(_ byte: UInt8) -> Bool {
        (byte < 0x20 && byte != UInt8(ascii: "\t")) || byte == 0x7F
    }
}
