import DequeModule
import NIOCore
import SwitchboardCore

/// The wire encodings an event loop produced most recently, so a fan-out to many
/// connections on one loop encodes each envelope once instead of once per receiver.
///
/// Confined to its event loop (every connection on the loop shares it). Keyed by
/// the envelope's shared storage, so a lookup is one hash of a pointer; each entry
/// keeps its envelope alive, so a key cannot be reused while it is cached.
/// `Encoded` is whatever a listener writes: a finished frame (``ByteBuffer``), or
/// parts it completes per receiver.
///
/// `encoded(_:allocator:)` is inlinable so that each listener gets it specialized
/// for its `Encoded`: called once per receiver, its unspecialized form spent more
/// on generic metadata and tuple copies than on the lookup.
public final class EncodingCache<Encoded> {
    @usableFromInline
    struct Entry {
        @usableFromInline var envelope: Envelope
        @usableFromInline var encoded: Encoded

        @inlinable
        init(envelope: Envelope, encoded: Encoded) {
            self.envelope = envelope
            self.encoded = encoded
        }
    }

    @usableFromInline let encode: (Envelope, ByteBufferAllocator) -> Encoded
    @usableFromInline var entries: [ObjectIdentifier: Entry] = [:]
    @usableFromInline var order: Deque<ObjectIdentifier> = []
    @usableFromInline let capacity: Int
    /// The most recent answer: a fan-out asks for one envelope once per receiver, in a
    /// row. Always an entry that is still cached (so its key cannot have been reused).
    @usableFromInline var last: (key: ObjectIdentifier, encoded: Encoded)?

    /// Receivers that fall behind one another still share encodings as long as they are
    /// less than `capacity` envelopes apart. The default is what a session's outbox holds
    /// by default (`limits.session_queue`): with 512, receivers of an overloaded
    /// 10,000-member room drifted apart and each encoded most envelopes itself (JSON
    /// encoding was a quarter of the loops' time). Entries only exist under traffic.
    public init(capacity: Int = 4096, encode: @escaping (Envelope, ByteBufferAllocator) -> Encoded) {
        self.encode = encode
        self.capacity = capacity
    }

    /// The encoding of `envelope`, from the cache or made now.
    @inlinable
    public func encoded(_ envelope: Envelope, allocator: ByteBufferAllocator) -> Encoded {
        let key = envelope.storageIdentity
        if let last, last.key == key { return last.encoded }
        let encoded: Encoded
        if let entry = entries[key] {
            encoded = entry.encoded
        } else {
            encoded = encode(envelope, allocator)
            entries[key] = Entry(envelope: envelope, encoded: encoded)
            order.append(key)
            if order.count > capacity, let oldest = order.popFirst() {
                entries[oldest] = nil
                if last?.key == oldest { last = nil }
            }
        }
        last = (key, encoded)
        return encoded
    }
}

/// One ``EncodingCache`` per event loop of a group.
public final class EncodingCacheTable<Encoded>: Sendable {
    private let table: [ObjectIdentifier: NIOLoopBound<EncodingCache<Encoded>>]
    private let encode: @Sendable (Envelope, ByteBufferAllocator) -> Encoded

    /// Builds one cache on each loop of `group` (call it off the loops, at start-up).
    public init(group: any EventLoopGroup, encode: @escaping @Sendable (Envelope, ByteBufferAllocator) -> Encoded) {
        var table: [ObjectIdentifier: NIOLoopBound<EncodingCache<Encoded>>] = [:]
        for loop in group.makeIterator() {
            table[ObjectIdentifier(loop)] = try? loop.submit {
                NIOLoopBound(EncodingCache(encode: encode), eventLoop: loop)
            }.wait()
        }
        self.table = table
        self.encode = encode
    }

    /// The cache of `eventLoop`; call on that loop. A loop outside the group gets a fresh one.
    public func cache(for eventLoop: any EventLoop) -> EncodingCache<Encoded> {
        table[ObjectIdentifier(eventLoop)]?.value ?? EncodingCache(encode: encode)
    }
}

/// The common case: each envelope becomes one finished buffer.
public typealias EnvelopeEncodingCache = EncodingCache<ByteBuffer>
public typealias EnvelopeEncodingCacheTable = EncodingCacheTable<ByteBuffer>
