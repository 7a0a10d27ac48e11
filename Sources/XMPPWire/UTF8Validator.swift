/// Checks that a byte stream is UTF-8, however it is split into chunks.
///
/// libxml2 reacts to bytes that are not UTF-8 by guessing another encoding; XMPP wants the
/// stream closed with `unsupported-encoding` instead (RFC 6120 §11.6), so the reader checks the
/// bytes before libxml2 sees them. Rejects overlong forms, surrogates and code points above
/// U+10FFFF (RFC 3629), and NUL, which XML never allows and which would otherwise let libxml2
/// detect a UCS-4 or UTF-16 stream.
struct UTF8Validator: Sendable {
    /// Continuation bytes still expected for the current sequence.
    private var pending = 0
    /// The range allowed for the next continuation byte (narrower right after some lead bytes).
    private var low: UInt8 = 0x80
    private var high: UInt8 = 0xBF

    /// Returns the offset of the first byte that makes the stream invalid, or `nil` when all of
    /// `bytes` is valid so far (a sequence may continue in the next chunk).
    mutating func firstInvalidOffset(in bytes: UnsafeRawBufferPointer) -> Int? {
        var index = 0
        let count = bytes.count
        while index < count {
            let byte = bytes[index]
            if self.pending == 0 {
                switch byte {
                case 0x01...0x7F: break
                case 0xC2...0xDF: self.expect(1, 0x80, 0xBF)
                case 0xE0: self.expect(2, 0xA0, 0xBF)
                case 0xE1...0xEC, 0xEE...0xEF: self.expect(2, 0x80, 0xBF)
                case 0xED: self.expect(2, 0x80, 0x9F)
                case 0xF0: self.expect(3, 0x90, 0xBF)
                case 0xF1...0xF3: self.expect(3, 0x80, 0xBF)
                case 0xF4: self.expect(3, 0x80, 0x8F)
                default: return index
                }
            } else {
                guard byte >= self.low, byte <= self.high else { return index }
                self.pending -= 1
                self.low = 0x80
                self.high = 0xBF
            }
            index += 1
        }
        return nil
    }

    private mutating func expect(_ continuations: Int, _ low: UInt8, _ high: UInt8) {
        self.pending = continuations
        self.low = low
        self.high = high
    }
}
