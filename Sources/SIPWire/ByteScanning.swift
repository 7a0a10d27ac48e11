/// Scanning helpers on UTF-8 bytes. SIP's delimiters are ASCII, so a UTF-8 index found here is
/// also a valid `String.Index` for slicing — and it avoids grapheme breaking, which made
/// character-by-character parsing of a REGISTER cost tens of microseconds.
extension Substring {
    @inline(__always) func byteIndex(of byte: UInt8) -> Index? { utf8.firstIndex(of: byte) }
    @inline(__always) func after(_ index: Index) -> Index { utf8.index(after: index) }
    @inline(__always) var firstByte: UInt8? { utf8.first }

    /// Without leading and trailing spaces and tabs.
    var trimmedSWS: Substring {
        guard let start = utf8.firstIndex(where: { $0 != 32 && $0 != 9 }),
              let end = utf8.lastIndex(where: { $0 != 32 && $0 != 9 })
        else { return self[endIndex...] }
        // A half-open range from the UTF-8 view: `start...end` would step over a Character.
        return self[start..<utf8.index(after: end)]
    }

    /// Splits at every `byte` (empty pieces kept).
    package func splitBytes(_ byte: UInt8) -> [Substring] {
        var parts: [Substring] = []
        // Sized once (the count is a cheap pass over bytes about to be scanned anyway).
        parts.reserveCapacity(utf8.reduce(1) { $1 == byte ? $0 + 1 : $0 })
        var start = startIndex
        var index = startIndex
        while index != endIndex {
            if utf8[index] == byte {
                parts.append(self[start..<index])
                start = utf8.index(after: index)
            }
            index = utf8.index(after: index)
        }
        parts.append(self[start..<endIndex])
        return parts
    }
}

extension String {
    @inline(__always) func byteIndex(of byte: UInt8) -> Index? { utf8.firstIndex(of: byte) }
    @inline(__always) func after(_ index: Index) -> Index { utf8.index(after: index) }
}

/// Whether two byte strings are equal ignoring ASCII case: the one comparison behind SIP's
/// case-insensitive header names, parameter names and digest fields.
func equalIgnoringASCIICase(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
    guard a.count == b.count else { return false }
    // Two indices rather than `zip`, whose iterators hold (retain) both collections.
    var i = a.startIndex, j = b.startIndex
    while i != a.endIndex {
        let x = a[i], y = b[j]
        if x != y, x.asciiLowercased != y.asciiLowercased { return false }
        a.formIndex(after: &i)
        b.formIndex(after: &j)
    }
    return true
}

/// ASCII case folding, byte by byte: SIP's names, schemes, hosts and parameters compare
/// without case, and everything that folds them goes through these two.
extension UInt8 {
    @inline(__always) package var isASCIIUppercase: Bool { self >= 65 && self <= 90 }
    @inline(__always) package var isASCIILowercase: Bool { self >= 97 && self <= 122 }
    /// The byte with an ASCII capital turned into its small letter; any other byte as is.
    @inline(__always) package var asciiLowercased: UInt8 { isASCIIUppercase ? self | 0x20 : self }
    /// The byte with an ASCII small letter turned into its capital; any other byte as is.
    @inline(__always) package var asciiUppercased: UInt8 { isASCIILowercase ? self & ~0x20 : self }
}
