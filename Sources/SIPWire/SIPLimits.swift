/// Size limits of the parser. Every one of them is checked before the bytes are kept.
public struct SIPLimits: Hashable, Sendable {
    /// Largest message (start line, headers and body). UDP datagrams are at most 65,507 bytes anyway.
    public var maxMessageBytes: Int
    /// Most header fields in one message (a folded field counts once).
    public var maxHeaders: Int
    /// Longest start line or header field, after unfolding.
    public var maxLineBytes: Int

    public init(maxMessageBytes: Int = 65_535, maxHeaders: Int = 128, maxLineBytes: Int = 8_192) {
        self.maxMessageBytes = maxMessageBytes
        self.maxHeaders = maxHeaders
        self.maxLineBytes = maxLineBytes
    }

    public static let `default` = SIPLimits()
}
