import DequeModule
import Synchronization

/// What a listener gives the bus so the bus can reach its connection.
///
/// Both callbacks may come from any thread and must not block: a listener
/// typically hops to its event loop.
public protocol SessionSink: AnyObject, Sendable {
    /// The outbox went from empty to non-empty: call ``SessionHandle/takeEvents()`` soon.
    func outboxReady()
    /// The bus wants this session gone (slow consumer, shutdown). Called at most once.
    func closeRequested(_ reason: SwitchboardError)
}

/// Something the bus tells one session, in order.
public enum SessionEvent: Sendable, Equatable {
    /// An envelope for a room the session is in, or a direct message to its user.
    case envelope(Envelope)
    /// The session's own publish was committed (or was a duplicate of one that was).
    case ack(Ack)
    /// A publish, join, leave or typing submitted by this session failed after it was queued.
    case failed(SwitchboardError, request: BusRequest, room: RoomName?, clientID: String?)
    /// The session is now in `room`: it receives every envelope after `seq` live.
    /// When `since` is set the listener replays `(since, seq]` from history first.
    case joined(room: RoomName, seq: UInt64, since: UInt64?)
    /// The session left `room`.
    case left(room: RoomName)
}

/// The kind of session call a ``SessionEvent/failed(_:request:room:clientID:)`` answers.
public enum BusRequest: String, Sendable, Equatable {
    case publish, join, leave, typing
}

/// One authenticated connection (or logical client) as the bus sees it.
///
/// Holds a bounded outbox. When the outbox is full the session is a slow
/// consumer: it is marked closed, further events are dropped and its sink is
/// asked to disconnect, so it never slows the sender or the other sessions.
public final class SessionHandle: Sendable, Hashable, CustomStringConvertible {
    /// Process-unique id.
    public let id: UInt64
    /// The authenticated user.
    public let user: UserName
    /// Optional display name attached to what this session sends.
    public let display: String?
    /// The protocol of this session.
    public let via: Via
    let sink: any SessionSink
    private let outbox: Mutex<Outbox>

    struct Outbox {
        var events = Deque<SessionEvent>()
        var capacity: Int
        var signaled = false
        var closed = false
    }

    init(id: UInt64, user: UserName, display: String?, via: Via, capacity: Int, sink: any SessionSink) {
        self.id = id
        self.user = user
        self.display = display
        self.via = via
        self.sink = sink
        self.outbox = Mutex(Outbox(capacity: max(1, capacity)))
    }

    /// The sender identity of envelopes this session publishes.
    public var sender: Sender { Sender(user: user, display: display, via: via) }

    /// Removes and returns every queued event, oldest first.
    public func takeEvents() -> Deque<SessionEvent> {
        outbox.withLock { box in
            box.signaled = false
            let events = box.events
            box.events = Deque()
            return events
        }
    }

    /// Swaps the queued events into `buffer` (which must be empty), oldest first.
    ///
    /// The hot-path form of ``takeEvents()``: a listener keeps one buffer per
    /// connection and empties it with `removeAll(keepingCapacity: true)`, so in a
    /// steady state neither side allocates.
    public func takeEvents(into buffer: inout Deque<SessionEvent>) {
        precondition(buffer.isEmpty, "takeEvents(into:) needs an empty buffer")
        outbox.withLock { box in
            box.signaled = false
            swap(&box.events, &buffer)
        }
    }

    /// Number of queued events (for metrics and tests).
    public var queuedCount: Int { outbox.withLock { $0.events.count } }

    /// True once the session was closed by the bus or overflowed.
    public var isClosed: Bool { outbox.withLock { $0.closed } }

    /// What happened to a pushed event.
    enum PushResult { case queued, overflowed, closed }

    /// Queues `event`; on overflow the session is closed and its sink told why.
    @discardableResult
    func push(_ event: SessionEvent) -> PushResult {
        enqueue(count: 1) { $0.append(event) }
    }

    /// Queues `events` in order under one lock; if they do not all fit, the session is
    /// closed and its sink told why (as ``push(_:)`` would on the first that did not).
    func push(contentsOf events: [SessionEvent]) -> PushResult {
        guard !events.isEmpty else { return .queued }
        return enqueue(count: events.count) { $0.append(contentsOf: events) }
    }

    /// Adds `count` events with `append` under the lock, or closes the session if they
    /// do not fit; tells the sink (outside the lock) what it must know.
    private func enqueue(count: Int, _ append: (inout Deque<SessionEvent>) -> Void) -> PushResult {
        enum Outcome { case queued(signal: Bool), overflow, closed }
        let outcome: Outcome = outbox.withLock { box in
            if box.closed { return .closed }
            if box.events.count + count > box.capacity {
                box.closed = true
                box.events.removeAll()
                return .overflow
            }
            append(&box.events)
            if box.signaled { return .queued(signal: false) }
            box.signaled = true
            return .queued(signal: true)
        }
        switch outcome {
        case .queued(let signal):
            if signal { sink.outboxReady() }
            return .queued
        case .overflow:
            sink.closeRequested(SwitchboardError(.slowConsumer, "outbound queue overflowed; the session could not keep up"))
            return .overflowed
        case .closed:
            return .closed
        }
    }

    /// Marks the session closed; returns true the first time.
    func markClosed() -> Bool {
        outbox.withLock { box in
            if box.closed { return false }
            box.closed = true
            return true
        }
    }

    public var description: String { "session#\(id)(\(user)/\(via.rawValue))" }
    public static func == (lhs: SessionHandle, rhs: SessionHandle) -> Bool { lhs === rhs }
    public func hash(into hasher: inout Hasher) { hasher.combine(id) }
}

/// A participant of a room as others see it: one per user and protocol.
public struct Occupant: Hashable, Sendable, Codable, Comparable {
    public var user: UserName
    public var via: Via
    public var display: String?

    public init(user: UserName, via: Via, display: String? = nil) {
        self.user = user
        self.via = via
        self.display = display
    }

    public static func < (lhs: Occupant, rhs: Occupant) -> Bool {
        (lhs.user.rawValue, lhs.via.rawValue) < (rhs.user.rawValue, rhs.via.rawValue)
    }
}
