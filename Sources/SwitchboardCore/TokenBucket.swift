/// A token bucket: `rate` tokens per second up to `burst`. The clock is passed
/// in (nanoseconds, monotonic), so the bucket is a pure value and tests need no sleeping.
public struct TokenBucket: Sendable, Hashable {
    /// Tokens added per second.
    public let rate: Double
    /// Most tokens held.
    public let burst: Double
    private var tokens: Double
    private var lastNanos: UInt64?

    public init(rate: Int, burst: Int) {
        self.rate = Double(max(1, rate))
        self.burst = Double(max(1, burst))
        self.tokens = Double(max(1, burst))
    }

    /// Takes one token at time `nowNanos`; false when the bucket is empty.
    public mutating func take(nowNanos: UInt64) -> Bool {
        if let last = lastNanos, nowNanos > last {
            tokens = min(burst, tokens + Double(nowNanos - last) / 1_000_000_000 * rate)
        }
        lastNanos = max(lastNanos ?? nowNanos, nowNanos)
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
