/// Generates ULIDs: 48 bits of milliseconds then 80 random bits, in Crockford
/// base32 (26 characters), so ids sort by creation time.
///
/// Within one millisecond the random part is incremented, so ids from one
/// generator are strictly increasing. Not thread-safe: the bus owns one.
public struct ULIDGenerator: Sendable {
    private static let alphabet: [UInt8] = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)
    private var lastMillis: UInt64 = 0
    private var lastRandom: (hi: UInt16, lo: UInt64) = (0, 0)

    public init() {}

    /// The next id for time `millis` (ms since the epoch).
    public mutating func next(millis: Int64) -> String {
        var ms = UInt64(max(0, millis)) & 0xFFFF_FFFF_FFFF
        if ms <= lastMillis {
            ms = lastMillis
            // Same (or an earlier) millisecond: increment the 80-bit random part.
            let (lo, overflow) = lastRandom.lo.addingReportingOverflow(1)
            lastRandom.lo = lo
            if overflow { lastRandom.hi &+= 1 }
        } else {
            lastMillis = ms
            var rng = SystemRandomNumberGenerator()
            // Keep the top bit clear so increments within a millisecond cannot wrap.
            lastRandom = (UInt16.random(in: 0...0x7FFF, using: &rng), rng.next())
        }
        return Self.encode(millis: ms, hi: lastRandom.hi, lo: lastRandom.lo)
    }

    static func encode(millis: UInt64, hi: UInt16, lo: UInt64) -> String {
        var chars = [UInt8](repeating: 0, count: 26)
        // 48-bit time in 10 characters (50 bits, top 2 zero).
        var t = millis
        for i in stride(from: 9, through: 0, by: -1) {
            chars[i] = alphabet[Int(t & 31)]
            t >>= 5
        }
        // 80-bit randomness in 16 characters.
        var lo = lo
        var hi = UInt64(hi)
        for i in stride(from: 25, through: 10, by: -1) {
            chars[i] = alphabet[Int(lo & 31)]
            lo = (lo >> 5) | ((hi & 31) << 59)
            hi >>= 5
        }
        return String(decoding: chars, as: UTF8.self)
    }

    /// True when `string` has the shape of a ULID.
    public static func isValid(_ string: String) -> Bool {
        string.utf8.count == 26 && string.utf8.allSatisfy { alphabet.contains($0) }
    }
}
