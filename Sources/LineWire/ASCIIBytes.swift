/// The bytes the line protocol's framing and escapes are made of.
extension UInt8 {
    /// ASCII line feed, `\n`.
    static let lf = UInt8(ascii: "\n")
    /// ASCII carriage return, `\r`.
    static let cr = UInt8(ascii: "\r")
    /// ASCII space.
    static let space = UInt8(ascii: " ")
    /// ASCII backslash.
    static let backslash = UInt8(ascii: "\\")
}
