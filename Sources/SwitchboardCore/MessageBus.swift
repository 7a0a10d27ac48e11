/// Routes envelopes between sessions: per-room order, fan-out, presence,
/// direct messages, access rules, back-pressure.
///
/// ``LocalBus`` is the single-process implementation; a multi-node bus can
/// implement the same protocol.
public protocol MessageBus: AnyObject, Sendable {
    /// Registers an authenticated session. Events for it arrive through its outbox.
    func openSession(user: UserName, display: String?, via: Via, sink: any SessionSink) -> SessionHandle

    /// Registers a tap: a session that receives every envelope of every group room
    /// (not direct messages nor call logs), without joining and without being an
    /// occupant. For bridges such as MQTT that mirror all rooms. Close it with
    /// ``closeSession(_:)``.
    func openTap(name: UserName, via: Via, sink: any SessionSink) -> SessionHandle

    /// Removes the session from every room (leave envelopes as needed). Idempotent.
    func closeSession(_ session: SessionHandle)

    /// Publishes on behalf of `session`. Checks run now (throwing what a client should
    /// see); the ack, or a later failure, arrives through the session's outbox once
    /// the envelope is committed.
    func publish(_ draft: EnvelopeDraft, from session: SessionHandle) throws(SwitchboardError)

    /// Publishes without a session (REST, MQTT devices, server components) and
    /// returns once committed. `privileged` publishers may write `calls.<user>`.
    func publish(_ draft: EnvelopeDraft, privileged: Bool) async throws(SwitchboardError) -> Ack

    /// Publishes without a session and without waiting: checks run now, and
    /// `completion` gets the ack (or the failure) once committed, on the bus's thread
    /// (it must not block). Submissions are sequenced in call order.
    func submit(_ draft: EnvelopeDraft, privileged: Bool, completion: @escaping @Sendable (Result<Ack, SwitchboardError>) -> Void)

    /// Joins `session` to `room`; `.joined` arrives through the outbox, with `since`
    /// echoed so the listener can replay what the session missed.
    func join(_ session: SessionHandle, room: RoomName, since: UInt64?) throws(SwitchboardError)

    /// Leaves `room`; `.left` (or `.failed` with `not_joined`) arrives through the outbox.
    func leave(_ session: SessionHandle, room: RoomName) throws(SwitchboardError)

    /// Sends a typing notification (never stored) to the room's other participants.
    func typing(_ session: SessionHandle, room: RoomName) throws(SwitchboardError)

    /// `room` was deleted from storage: forget that it exists (sessions in it stay until they leave).
    func roomDeleted(_ room: RoomName)

    /// Current occupants of `room`, one per user and protocol.
    func occupants(of room: RoomName) -> [Occupant]

    /// History of `room` as `reader` may see it (access rules applied), oldest first.
    func history(of room: RoomName, reader: UserName, before: UInt64?, after: UInt64?, limit: Int) async throws(SwitchboardError) -> [Envelope]

    /// The last committed seq of `room` (0 when nothing was ever sent).
    func lastSeq(of room: RoomName) -> UInt64

    /// Returns once everything submitted before the call has been committed and delivered.
    func flush() async

    /// Stops accepting work, commits and delivers what is queued, and stops the writer.
    func shutdown() async
}

/// Access rules shared by every bus implementation.
public enum AccessRules {
    /// May `user` read (join, history) `room`?
    public static func canRead(_ room: RoomName, user: UserName) throws(SwitchboardError) {
        switch room.scope {
        case .group: return
        case .direct(let a, let b):
            guard user == a || user == b else { throw SwitchboardError(.forbidden, "\(room) is a direct conversation of \(a) and \(b)") }
        case .callLog(let owner):
            guard user == owner else { throw SwitchboardError(.forbidden, "\(room) is readable by \(owner) only") }
        case .invalidReserved:
            throw SwitchboardError(.invalidRoom, "room names starting with dm. or calls. are reserved")
        }
    }

    /// May `user` write to `room`? Call logs are written by privileged server components only.
    public static func canWrite(_ room: RoomName, user: UserName, privileged: Bool) throws(SwitchboardError) {
        switch room.scope {
        case .group: return
        case .direct(let a, let b):
            guard user == a || user == b || privileged else {
                throw SwitchboardError(.forbidden, "\(room) is a direct conversation of \(a) and \(b)")
            }
        case .callLog:
            guard privileged else { throw SwitchboardError(.forbidden, "call logs are written by the server only") }
        case .invalidReserved:
            throw SwitchboardError(.invalidRoom, "room names starting with dm. or calls. are reserved")
        }
    }
}
