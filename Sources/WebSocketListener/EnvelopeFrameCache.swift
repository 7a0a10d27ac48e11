import NIOCore
import SwitchboardCore

/// The `envelope` frames an event loop wrote most recently, so a fan-out to many
/// connections on one loop encodes each envelope once instead of once per receiver.
///
/// Confined to its event loop (every ``WebSocketConnection/Writer`` on the loop
/// shares it); a small ring, because a burst delivers the same few envelopes to
/// every connection in the same order.
final class EnvelopeFrameCache {
    private var entries: [(id: String, room: RoomName, frame: ByteBuffer)?]
    private var next = 0

    init(capacity: Int = 64) {
        entries = Array(repeating: nil, count: capacity)
    }

    /// The encoded `{"op":"envelope",…}` frame of `envelope`.
    func frame(for envelope: Envelope, allocator: ByteBufferAllocator) -> ByteBuffer {
        // Newest first: the entry just written is the likeliest hit.
        var index = next
        for _ in 0..<entries.count {
            index = index == 0 ? entries.count - 1 : index - 1
            guard let entry = entries[index] else { break }
            if entry.id == envelope.id && entry.room == envelope.room { return entry.frame }
        }
        let frame = allocator.buffer(bytes: ServerFrame.envelope(envelope))
        entries[next] = (envelope.id, envelope.room, frame)
        next = (next + 1) % entries.count
        return frame
    }
}

/// One ``EnvelopeFrameCache`` per event loop of a group.
final class EnvelopeFrameCacheTable: Sendable {
    private let table: [ObjectIdentifier: NIOLoopBound<EnvelopeFrameCache>]

    init(group: any EventLoopGroup) {
        var table: [ObjectIdentifier: NIOLoopBound<EnvelopeFrameCache>] = [:]
        for loop in group.makeIterator() {
            // NIOLoopBound checks the loop on access only through `value`; build it there.
            table[ObjectIdentifier(loop)] = try? loop.submit { NIOLoopBound(EnvelopeFrameCache(), eventLoop: loop) }.wait()
        }
        self.table = table
    }

    /// The cache of `eventLoop`, to be used on that loop only.
    func cache(for eventLoop: any EventLoop) -> NIOLoopBound<EnvelopeFrameCache>? {
        table[ObjectIdentifier(eventLoop)]
    }
}
