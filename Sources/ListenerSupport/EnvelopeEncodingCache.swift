import NIOCore
import SwitchboardCore

/// The wire encodings an event loop produced most recently, so a fan-out to many
/// connections on one loop encodes each envelope once instead of once per receiver.
///
/// Confined to its event loop (every connection on the loop shares it); a small
/// ring, because a burst delivers the same few envelopes to every connection in
/// the same order.
public final class EnvelopeEncodingCache {
    private let encode: (Envelope, ByteBufferAllocator) -> ByteBuffer
    private var entries: [(id: String, room: RoomName, encoded: ByteBuffer)?]
    private var next = 0

    public init(capacity: Int = 64, encode: @escaping (Envelope, ByteBufferAllocator) -> ByteBuffer) {
        self.encode = encode
        entries = Array(repeating: nil, count: capacity)
    }

    /// The encoding of `envelope`, from the cache or made now.
    public func encoded(_ envelope: Envelope, allocator: ByteBufferAllocator) -> ByteBuffer {
        // Newest first: the entry just written is the likeliest hit.
        var index = next
        for _ in 0..<entries.count {
            index = index == 0 ? entries.count - 1 : index - 1
            guard let entry = entries[index] else { break }
            if entry.id == envelope.id && entry.room == envelope.room { return entry.encoded }
        }
        let encoded = encode(envelope, allocator)
        entries[next] = (envelope.id, envelope.room, encoded)
        next = (next + 1) % entries.count
        return encoded
    }
}

/// One ``EnvelopeEncodingCache`` per event loop of a group.
public final class EnvelopeEncodingCacheTable: Sendable {
    private let table: [ObjectIdentifier: NIOLoopBound<EnvelopeEncodingCache>]
    private let encode: @Sendable (Envelope, ByteBufferAllocator) -> ByteBuffer

    /// Builds one cache on each loop of `group` (call it off the loops, at start-up).
    public init(group: any EventLoopGroup, encode: @escaping @Sendable (Envelope, ByteBufferAllocator) -> ByteBuffer) {
        var table: [ObjectIdentifier: NIOLoopBound<EnvelopeEncodingCache>] = [:]
        for loop in group.makeIterator() {
            table[ObjectIdentifier(loop)] = try? loop.submit {
                NIOLoopBound(EnvelopeEncodingCache(encode: encode), eventLoop: loop)
            }.wait()
        }
        self.table = table
        self.encode = encode
    }

    /// The cache of `eventLoop`; call on that loop. A loop outside the group gets a fresh one.
    public func cache(for eventLoop: any EventLoop) -> EnvelopeEncodingCache {
        table[ObjectIdentifier(eventLoop)]?.value ?? EnvelopeEncodingCache(encode: encode)
    }
}
