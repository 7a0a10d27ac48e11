import ListenerSupport
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

/// The groupchat encodings of one event loop, so a room's fan-out to the XMPP occupants on
/// that loop serializes each envelope once instead of once per occupant.
typealias GroupchatEncodingCache = EncodingCache<GroupchatEncoding>
typealias GroupchatEncodingCacheTable = EncodingCacheTable<GroupchatEncoding>

extension EncodingCacheTable where Encoded == GroupchatEncoding {
    /// One groupchat cache per loop of `group`, for the MUC service `mucDomain`.
    convenience init(group: any EventLoopGroup, mucDomain: String) {
        self.init(group: group) { envelope, allocator in
            GroupchatEncoding(envelope, mucDomain: mucDomain, allocator: allocator)
        }
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
