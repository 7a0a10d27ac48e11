import DequeModule
import NIOCore
import SwitchboardCore
import XMPPWire

/// A live groupchat `<message>` of one envelope as wire bytes, split around the value of
/// its `to` attribute: the only part that differs between the copies a room's occupants get.
///
/// `head` is `<message type='groupchat' id='…' from='room@conference.…/nick' to='`, `tail`
/// is `'><body>…</body><stanza-id …/></message>`; a recipient's copy is head, its escaped
/// full JID, tail, exactly what ``XMLSerializer`` writes for the element
/// ``XMPPConnectionHandler/groupchatElement(_:to:mucDomain:delayed:)`` builds.
struct GroupchatEncoding {
    var head: ByteBuffer
    var tail: ByteBuffer

    /// `head` and `tail` as text (one serialization of the element with an empty `to`).
    static func parts(_ envelope: Envelope, mucDomain: String) -> (head: String, tail: String) {
        let element = XMPPConnectionHandler.groupchatElement(envelope, to: "", mucDomain: mucDomain, delayed: false)
        let text = XMLSerializer.clientStream.serialize(element)
        // Attribute values are escaped (no raw `'` inside them), so the first ` to=''` is the
        // attribute itself, before any character data.
        let marker = Array(" to=''".utf8)
        let bytes = Array(text.utf8)
        var split = bytes.count
        if bytes.count >= marker.count {
            for start in 0...(bytes.count - marker.count) where bytes[start..<start + marker.count].elementsEqual(marker) {
                split = start + marker.count - 1
                break
            }
        }
        precondition(split < bytes.count, "no to attribute in \(text)")
        return (String(decoding: bytes[..<split], as: UTF8.self), String(decoding: bytes[split...], as: UTF8.self))
    }

    init(_ envelope: Envelope, mucDomain: String, allocator: ByteBufferAllocator) {
        let (head, tail) = Self.parts(envelope, mucDomain: mucDomain)
        self.head = allocator.buffer(string: head)
        self.tail = allocator.buffer(string: tail)
    }
}

/// The groupchat encodings an event loop made most recently, so a room's fan-out to the
/// XMPP occupants on one loop serializes each envelope once instead of once per occupant.
///
/// Works like ``EnvelopeEncodingCache`` (which keeps a single buffer per envelope): confined
/// to its loop, keyed by the envelope's shared storage, each entry keeping its envelope alive
/// so a key is not reused while cached, the oldest entry evicted first.
final class GroupchatEncodingCache {
    private let mucDomain: String
    private var entries: [ObjectIdentifier: (envelope: Envelope, encoding: GroupchatEncoding)] = [:]
    private var order: Deque<ObjectIdentifier> = []
    private let capacity: Int

    init(mucDomain: String, capacity: Int = 512) {
        self.mucDomain = mucDomain
        self.capacity = capacity
        entries.reserveCapacity(capacity + 1)
    }

    /// The encoding of `envelope`, from the cache or made now.
    func encoding(_ envelope: Envelope, allocator: ByteBufferAllocator) -> GroupchatEncoding {
        let key = envelope.storageIdentity
        if let entry = entries[key] { return entry.encoding }
        let encoding = GroupchatEncoding(envelope, mucDomain: mucDomain, allocator: allocator)
        entries[key] = (envelope, encoding)
        order.append(key)
        if order.count > capacity, let oldest = order.popFirst() {
            entries[oldest] = nil
        }
        return encoding
    }
}

/// One ``GroupchatEncodingCache`` per event loop of a group (one table per listener, so per
/// MUC domain).
final class GroupchatEncodingCacheTable: Sendable {
    private let table: [ObjectIdentifier: NIOLoopBound<GroupchatEncodingCache>]
    private let mucDomain: String

    /// Builds one cache on each loop of `group` (call it off the loops, at start-up).
    init(group: any EventLoopGroup, mucDomain: String) {
        var table: [ObjectIdentifier: NIOLoopBound<GroupchatEncodingCache>] = [:]
        for loop in group.makeIterator() {
            table[ObjectIdentifier(loop)] = try? loop.submit {
                NIOLoopBound(GroupchatEncodingCache(mucDomain: mucDomain), eventLoop: loop)
            }.wait()
        }
        self.table = table
        self.mucDomain = mucDomain
    }

    /// The cache of `eventLoop`; call on that loop. A loop outside the group gets a fresh one.
    func cache(for eventLoop: any EventLoop) -> GroupchatEncodingCache {
        table[ObjectIdentifier(eventLoop)]?.value ?? GroupchatEncodingCache(mucDomain: mucDomain)
    }
}

/// The occupants one session was shown in one room, so that each occupant's available
/// presence reaches it once per join (XEP-0045 §7.2.3).
///
/// The occupant list a joining session gets is read from the bus when its `joined` event is
/// handled, which can be after other sessions' joins (or leaves) were sequenced, while their
/// join (or leave) envelopes are still on their way to this session: those would otherwise
/// be announced twice (or an occupant never shown would be said to leave). Keyed like the
/// bus counts occupants, by user and protocol.
struct AnnouncedOccupants: Sendable {
    struct Key: Hashable, Sendable {
        var user: UserName
        var via: Via
    }

    private var shown: Set<Key> = []

    init() {}

    /// The occupant list on joining: the occupants to announce (those not shown yet).
    mutating func list(_ occupants: [Occupant]) -> [Occupant] {
        occupants.filter { shown.insert(Key(user: $0.user, via: $0.via)).inserted }
    }

    /// A join envelope from `sender`: true when its presence is to be sent.
    mutating func joined(_ sender: Sender) -> Bool {
        shown.insert(Key(user: sender.user, via: sender.via)).inserted
    }

    /// A leave envelope from `sender`: true when its unavailable presence is to be sent.
    mutating func left(_ sender: Sender) -> Bool {
        shown.remove(Key(user: sender.user, via: sender.via)) != nil
    }
}
