import ListenerSupport
import NIOCore
import SwitchboardCore
import Testing

@Suite struct EncodingCacheTests {
    static let alice = UserName("alice")!
    static let lobby = RoomName("lobby")!

    static func envelope(_ seq: UInt64) -> Envelope {
        Envelope(id: "id-\(seq)", room: lobby, seq: seq, ts: 1, from: Sender(user: alice, via: .line), kind: .chat, body: "m\(seq)")
    }

    /// Counts the encodings it makes.
    final class Counter { var made: [UInt64] = [] }

    func makeCache(capacity: Int, counter: Counter) -> EncodingCache<String> {
        EncodingCache(capacity: capacity) { envelope, _ in
            counter.made.append(envelope.seq)
            return "\(envelope.seq):\(envelope.body)"
        }
    }

    @Test func fanOutEncodesEachEnvelopeOnce() {
        let counter = Counter()
        let cache = makeCache(capacity: 4, counter: counter)
        let first = Self.envelope(1), second = Self.envelope(2)
        for _ in 0..<1000 { #expect(cache.encoded(first, allocator: ByteBufferAllocator()) == "1:m1") }
        for _ in 0..<1000 { #expect(cache.encoded(second, allocator: ByteBufferAllocator()) == "2:m2") }
        // Interleaved receivers: both still cached.
        #expect(cache.encoded(first, allocator: ByteBufferAllocator()) == "1:m1")
        #expect(cache.encoded(second, allocator: ByteBufferAllocator()) == "2:m2")
        #expect(counter.made == [1, 2])
    }

    @Test func evictedEntriesAreEncodedAgainAndNeverConfused() {
        let counter = Counter()
        let cache = makeCache(capacity: 2, counter: counter)
        let envelopes = (1...3).map(Self.envelope)
        for envelope in envelopes { _ = cache.encoded(envelope, allocator: ByteBufferAllocator()) }
        // 1 was evicted by 3; asking again encodes it anew, and the answers stay right.
        #expect(cache.encoded(envelopes[0], allocator: ByteBufferAllocator()) == "1:m1")
        #expect(cache.encoded(envelopes[2], allocator: ByteBufferAllocator()) == "3:m3")
        #expect(counter.made == [1, 2, 3, 1])
        // An equal envelope in other storage is another key, not a stale hit.
        #expect(cache.encoded(Self.envelope(3), allocator: ByteBufferAllocator()) == "3:m3")
        #expect(counter.made == [1, 2, 3, 1, 3])
    }
}
