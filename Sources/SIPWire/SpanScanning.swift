/// Scanning a header value's UTF-8 bytes by offset. A `Span` is bounds-checked like an array
/// but holds no reference: parsing an address by cutting `Substring`s retained the string and
/// validated both indices at every cut, which was most of what parsing From, To, Contact and
/// Via cost. Ranges here are offsets into the span; ASCII delimiters are never inside a
/// multi-byte character, so every cut is on a character boundary.
extension Span where Element == UInt8 {
    /// The first offset of `byte` in `range`.
    @inline(__always) func firstOffset(of byte: UInt8, in range: Range<Int>) -> Int? {
        var i = range.lowerBound
        while i < range.upperBound {
            if self[i] == byte { return i }
            i &+= 1
        }
        return nil
    }

    /// The first offset in `range` whose byte passes `test`.
    @inline(__always) func firstOffset(in range: Range<Int>, where test: (UInt8) -> Bool) -> Int? {
        var i = range.lowerBound
        while i < range.upperBound {
            if test(self[i]) { return i }
            i &+= 1
        }
        return nil
    }

    @inline(__always) func contains(_ byte: UInt8, in range: Range<Int>) -> Bool {
        firstOffset(of: byte, in: range) != nil
    }

    @inline(__always) func allSatisfy(in range: Range<Int>, _ test: (UInt8) -> Bool) -> Bool {
        firstOffset(in: range) { !test($0) } == nil
    }

    /// `range` without leading and trailing spaces and tabs.
    @inline(__always) func trimmingSWS(_ range: Range<Int>) -> Range<Int> {
        var lower = range.lowerBound, upper = range.upperBound
        while lower < upper, self[lower].isSIPWhitespace { lower &+= 1 }
        while upper > lower, self[upper &- 1].isSIPWhitespace { upper &-= 1 }
        return lower..<upper
    }

    /// The bytes of `range` as a String (they are UTF-8: they were cut from one).
    func string(_ range: Range<Int>) -> String {
        extracting(range).withUnsafeBufferPointer { String(decoding: $0, as: UTF8.self) }
    }

    /// ``string(_:)`` with ASCII capitals made small (schemes, hosts).
    func lowercasedString(_ range: Range<Int>) -> String {
        string(range, folding: \.isASCIIUppercase, with: \.asciiLowercased)
    }

    /// ``string(_:)`` with ASCII small letters made capitals (a Via's transport).
    func uppercasedString(_ range: Range<Int>) -> String {
        string(range, folding: \.isASCIILowercase, with: \.asciiUppercased)
    }

    /// ``string(_:)`` with every byte that `needsFolding` passed through `fold`; no copy
    /// to fold when no byte needs it (nearly always).
    private func string(_ range: Range<Int>, folding needsFolding: (UInt8) -> Bool, with fold: (UInt8) -> UInt8) -> String {
        guard firstOffset(in: range, where: needsFolding) != nil else { return string(range) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(range.count)
        for i in range { bytes.append(fold(self[i])) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Whether `range` holds `literal`, ignoring ASCII case when `ignoringCase`.
    func equals(_ range: Range<Int>, _ literal: StaticString, ignoringCase: Bool = false) -> Bool {
        literal.withUTF8Buffer { expected in
            guard expected.count == range.count else { return false }
            for (i, b) in zip(range, expected) {
                let got = self[i]
                if got != b && (!ignoringCase || got.asciiLowercased != b.asciiLowercased) { return false }
            }
            return true
        }
    }

    /// A decimal 1*DIGIT (leading zeros allowed) of at most 12 significant digits.
    func decimal(_ range: Range<Int>) -> Int? {
        guard !range.isEmpty, allSatisfy(in: range, { $0 >= 48 && $0 <= 57 }) else { return nil }
        var lower = range.lowerBound
        while lower < range.upperBound, self[lower] == 48 { lower &+= 1 }
        guard range.upperBound - lower <= 12 else { return nil }
        var n = 0
        for i in lower..<range.upperBound { n = n * 10 + Int(self[i] - 48) }
        return n
    }
}
