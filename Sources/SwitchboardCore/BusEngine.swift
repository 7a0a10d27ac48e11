import DequeModule
import Logging
import Metrics

/// Everything one batch of bus work decided, between sequencing and delivery.
struct Batch {
    enum Effect {
        /// Deliver `envelopes[index]`; ack the origin when `ack` is set.
        case deliver(index: Int, origin: LocalBus.Origin?, ack: Bool)
        /// Deliver an ephemeral envelope (typing) that was never stored.
        case ephemeral(Envelope, origin: SessionHandle)
        /// Answer a repeated client_id with the original ack.
        case duplicate(LocalBus.Origin, Ack)
        /// Tell the origin its request failed.
        case fail(LocalBus.Origin, SwitchboardError, request: BusRequest, room: RoomName?, clientID: String?)
        case addMember(SessionHandle, RoomName)
        case removeMember(SessionHandle, RoomName)
        case joined(SessionHandle, RoomName, seq: UInt64, since: UInt64?)
        case left(SessionHandle, RoomName)
        case register(SessionHandle)
        case unregister(SessionHandle)
        case barrier(CheckedContinuation<Void, Never>)
    }

    var envelopes: [Envelope] = []
    var effects: [Effect] = []
}

extension Batch.Effect {
    /// The fields of a `.deliver`, with the publishing session if the origin is one.
    var delivery: (index: Int, session: SessionHandle?, ack: Bool)? {
        switch self {
        case .deliver(let index, .session(let session)?, let ack): (index, session, ack)
        case .deliver(let index, _, let ack): (index, nil, ack)
        default: nil
        }
    }
}

/// Remembers `(room, user, client_id)` → ack for the dedup window.
struct DedupCache {
    struct Key: Hashable {
        var room: RoomName
        var user: UserName
        var clientID: String
    }

    private var acks: [Key: Ack] = [:]
    private var order: [RoomName: Deque<(key: Key, ts: Int64)>] = [:]
    let windowMillis: Int64
    let maxPerRoom: Int

    init(windowMillis: Int64, maxPerRoom: Int) {
        self.windowMillis = windowMillis
        self.maxPerRoom = maxPerRoom
    }

    func lookup(_ key: Key, now: Int64) -> Ack? {
        guard let ack = acks[key], now - ack.ts <= windowMillis else { return nil }
        return ack
    }

    mutating func remember(_ envelope: Envelope, now: Int64) {
        guard let clientID = envelope.clientID else { return }
        let key = Key(room: envelope.room, user: envelope.from.user, clientID: clientID)
        acks[key] = Ack(room: envelope.room, id: envelope.id, seq: envelope.seq, ts: envelope.ts, clientID: clientID)
        order[envelope.room, default: []].append((key, envelope.ts))
        expire(envelope.room, now: now)
    }

    mutating func forget(_ key: Key) {
        acks[key] = nil
    }

    private mutating func expire(_ room: RoomName, now: Int64) {
        // The room is hashed once; its queue is mutated in place through the index (copying
        // it out of the dictionary would make every insert O(window)).
        guard let index = order.index(forKey: room) else { return }
        while let first = order.values[index].first,
              order.values[index].count > maxPerRoom || now - first.ts > windowMillis {
            order.values[index].removeFirst()
            if acks[first.key]?.ts == first.ts { acks[first.key] = nil }
        }
        if order.values[index].isEmpty { order.remove(at: index) }
    }
}

/// The bus's state. Lives inside a mutex of ``LocalBus``; only the writer
/// thread mutates it, other threads read snapshots (occupants, last seq).
struct BusEngine {
    struct OccupantKey: Hashable {
        var user: UserName
        var via: Via
    }

    struct Room {
        /// Sessions that receive the room's envelopes (changed in delivery order).
        var members: [UInt64: SessionHandle] = [:]
        /// Sessions per (user, protocol), as sequenced (decides join/leave envelopes).
        var occupancy: [OccupantKey: Int] = [:]
        var displays: [OccupantKey: String] = [:]
    }

    let configuration: LocalBus.Configuration
    /// Next-to-assign counters (sequencing view).
    var seqs: [RoomName: UInt64]
    /// Last committed seq per room (delivery view).
    var committed: [RoomName: UInt64]
    var rooms: [RoomName: Room] = [:]
    /// Rooms each session is in, as sequenced.
    var sessionRooms: [UInt64: Set<RoomName>] = [:]
    /// Live sessions per user, as delivered (direct messages go to all of them).
    var sessionsByUser: [UserName: [UInt64: SessionHandle]] = [:]
    /// Sessions that see every group room's envelopes (``MessageBus/openTap(name:via:sink:)``).
    var taps: [UInt64: SessionHandle] = [:]
    var knownRooms: Set<RoomName> = []
    var dedup: DedupCache
    var ids = ULIDGenerator()
    private var outCounts: [Int] = Array(repeating: 0, count: Via.allCases.count)
    let metrics: BusMetrics

    init(configuration: LocalBus.Configuration, sequences: [RoomName: UInt64]) {
        self.configuration = configuration
        self.metrics = BusMetrics(factory: configuration.metricsFactory)
        self.seqs = sequences
        self.committed = sequences
        self.knownRooms = Set(sequences.keys)
        self.dedup = DedupCache(windowMillis: configuration.dedupWindowMillis, maxPerRoom: configuration.dedupMaxPerRoom)
    }

    // MARK: Reads

    func occupants(of room: RoomName) -> [Occupant] {
        guard let state = rooms[room] else { return [] }
        return state.occupancy.keys.map { Occupant(user: $0.user, via: $0.via, display: state.displays[$0]) }.sorted()
    }

    func allSessions() -> [SessionHandle] {
        sessionsByUser.values.flatMap { $0.values }
    }

    // MARK: Step 1: sequence

    mutating func sequence(_ ops: Deque<LocalBus.Op>, now: Int64, store: any HistoryStore, logger: Logger) -> Batch {
        var batch = Batch()
        for op in ops {
            switch op {
            case .open(let session):
                sessionRooms[session.id] = []
                batch.effects.append(.register(session))
                metrics.sessionOpened(session.via)

            case .openTap(let session):
                taps[session.id] = session

            case .close(let session) where taps[session.id] != nil:
                taps[session.id] = nil

            case .close(let session):
                guard let joined = sessionRooms.removeValue(forKey: session.id) else { continue }
                for room in joined.sorted() {
                    leaveRoom(session, room, now: now, batch: &batch)
                }
                batch.effects.append(.unregister(session))
                metrics.sessionClosed(session.via)

            case .publish(let draft, let origin):
                sequencePublish(draft, origin: origin, now: now, store: store, logger: logger, batch: &batch)

            case .join(let session, let room, let since):
                // Read through the dictionary (no local copy), so the insert below mutates in place.
                guard let joinedCount = sessionRooms[session.id]?.count else { continue }
                if sessionRooms[session.id]!.contains(room) {
                    batch.effects.append(.joined(session, room, seq: seqs[room] ?? 0, since: since))
                    continue
                }
                guard joinedCount < configuration.maxRoomsPerSession else {
                    batch.effects.append(.fail(.session(session), SwitchboardError(
                        .tooManyRooms, "a session may be in at most \(configuration.maxRoomsPerSession) rooms"), request: .join, room: room, clientID: nil))
                    continue
                }
                guard roomExists(room, store: store, logger: logger) else {
                    batch.effects.append(.fail(.session(session), SwitchboardError(.noSuchRoom, "room \(room) does not exist"), request: .join, room: room, clientID: nil))
                    continue
                }
                sessionRooms[session.id]!.insert(room)
                let key = OccupantKey(user: session.user, via: session.via)
                let count = rooms[room, default: Room()].occupancy[key, default: 0]
                rooms[room, default: Room()].occupancy[key] = count + 1
                if let display = session.display { rooms[room]?.displays[key] = display }
                if count == 0 {
                    let draft = EnvelopeDraft(room: room, from: session.sender, kind: .join, body: "")
                    let index = append(draft, now: now, batch: &batch)
                    batch.effects.append(.deliver(index: index, origin: .session(session), ack: false))
                }
                batch.effects.append(.addMember(session, room))
                batch.effects.append(.joined(session, room, seq: seqs[room] ?? 0, since: since))

            case .leave(let session, let room):
                guard sessionRooms[session.id] != nil else { continue }
                guard sessionRooms[session.id]!.remove(room) != nil else {
                    batch.effects.append(.fail(.session(session), SwitchboardError(.notJoined, "not in room \(room)"), request: .leave, room: room, clientID: nil))
                    continue
                }
                leaveRoom(session, room, now: now, batch: &batch)
                batch.effects.append(.left(session, room))

            case .forget(let room):
                // Deleted by an administrator: with auto_create off it must be created again.
                // Its seq counter stays, so a recreated room never reuses a seq a client saw.
                knownRooms.remove(room)

            case .typing(let session, let room):
                guard sessionRooms[session.id] != nil else { continue }
                if case .group = room.scope, sessionRooms[session.id]?.contains(room) != true {
                    batch.effects.append(.fail(.session(session), SwitchboardError(.notJoined, "join \(room) first"), request: .typing, room: room, clientID: nil))
                    continue
                }
                let envelope = Envelope(
                    id: ids.next(millis: now), room: room, seq: 0, ts: now, from: session.sender, kind: .typing, body: "")
                batch.effects.append(.ephemeral(envelope, origin: session))

            case .barrier(let continuation):
                batch.effects.append(.barrier(continuation))
            }
        }
        return batch
    }

    private mutating func leaveRoom(_ session: SessionHandle, _ room: RoomName, now: Int64, batch: inout Batch) {
        let key = OccupantKey(user: session.user, via: session.via)
        let count = rooms[room]?.occupancy[key] ?? 0
        batch.effects.append(.removeMember(session, room))
        if count <= 1 {
            rooms[room]?.occupancy[key] = nil
            rooms[room]?.displays[key] = nil
            let draft = EnvelopeDraft(room: room, from: session.sender, kind: .leave, body: "")
            let index = append(draft, now: now, batch: &batch)
            batch.effects.append(.deliver(index: index, origin: .session(session), ack: false))
        } else {
            rooms[room]?.occupancy[key] = count - 1
        }
    }

    private mutating func sequencePublish(
        _ draft: EnvelopeDraft, origin: LocalBus.Origin, now: Int64, store: any HistoryStore, logger: Logger, batch: inout Batch
    ) {
        if let session = origin.session {
            guard let joined = sessionRooms[session.id] else { return } // closed meanwhile
            if case .group = draft.room.scope, !joined.contains(draft.room) {
                batch.effects.append(.fail(origin, SwitchboardError(.notJoined, "join \(draft.room) before sending to it"),
                                           request: .publish, room: draft.room, clientID: draft.clientID))
                return
            }
        }
        if let clientID = draft.clientID {
            if let ack = dedup.lookup(DedupCache.Key(room: draft.room, user: draft.from.user, clientID: clientID), now: now) {
                var again = ack
                again.duplicate = true
                batch.effects.append(.duplicate(origin, again))
                return
            }
        }
        if case .group = draft.room.scope, !roomExists(draft.room, store: store, logger: logger) {
            batch.effects.append(.fail(origin, SwitchboardError(.noSuchRoom, "room \(draft.room) does not exist"),
                                       request: .publish, room: draft.room, clientID: draft.clientID))
            return
        }
        let index = append(draft, now: now, batch: &batch)
        dedup.remember(batch.envelopes[index], now: now)
        metrics.envelopeIn(draft.from.via)
        batch.effects.append(.deliver(index: index, origin: origin, ack: true))
    }

    private mutating func roomExists(_ room: RoomName, store: any HistoryStore, logger: Logger) -> Bool {
        if configuration.autoCreateRooms || knownRooms.contains(room) { return true }
        if case .callLog = room.scope { return true }
        do {
            if try store.roomExists(room) {
                knownRooms.insert(room)
                return true
            }
        } catch {
            logger.warning("room lookup failed", metadata: ["room": "\(room)", "error": "\(error)"])
        }
        return false
    }

    /// Gives `draft` its id, seq and time and adds it to the batch.
    private mutating func append(_ draft: EnvelopeDraft, now: Int64, batch: inout Batch) -> Int {
        let previous = seqs[draft.room] ?? 0
        seqs[draft.room] = previous + 1
        batch.envelopes.append(Envelope(
            id: ids.next(millis: now), room: draft.room, seq: previous + 1, ts: now, from: draft.from,
            kind: draft.kind, body: draft.body, attrs: draft.attrs, clientID: draft.clientID))
        return batch.envelopes.count - 1
    }

    // MARK: Step 2 failed: roll back

    /// Takes back `batches`: one whose commit failed, and the one sequenced behind it if
    /// any (it holds the seqs after the lost ones). Every room's counter goes back to just
    /// before its first envelope in them, which is its last committed seq (whatever was
    /// delivered meanwhile), and their `client_id`s are forgotten.
    mutating func rollBack(_ batches: [Batch]) {
        for batch in batches {
            for envelope in batch.envelopes {
                seqs[envelope.room] = min(seqs[envelope.room] ?? 0, envelope.seq - 1)
                if let clientID = envelope.clientID {
                    dedup.forget(DedupCache.Key(room: envelope.room, user: envelope.from.user, clientID: clientID))
                }
            }
        }
    }

    // MARK: Step 3: deliver

    /// Delivers `batch`; when `ok` is false its commit failed and ``rollBack(_:)`` has
    /// already taken it back.
    mutating func deliver(_ batch: inout Batch, committed ok: Bool) {
        if ok {
            for envelope in batch.envelopes { committed[envelope.room] = envelope.seq }
        }
        let failure = SwitchboardError(.storageUnavailable, "the message could not be stored; it was not delivered")
        var next = batch.effects.startIndex
        while next < batch.effects.endIndex {
            if ok, batch.effects[next].delivery != nil {
                var end = next + 1
                while end < batch.effects.endIndex, batch.effects[end].delivery != nil { end += 1 }
                if end - next > 1 {
                    deliverRun(batch, next..<end)
                    next = end
                    continue
                }
            }
            let current = next
            next += 1
            // Switched over in place: copying a whole effect (an enum with many payloads)
            // goes through the runtime, once per message at a trickle.
            switch batch.effects[current] {
            case .deliver(let index, let origin, let ack):
                let envelope = batch.envelopes[index]
                guard ok else {
                    if ack, let origin { fail(origin, failure, request: .publish, room: envelope.room, clientID: envelope.clientID) }
                    continue
                }
                deliver(envelope, origin: origin, ack: ack)
            case .ephemeral(let envelope, let origin):
                fanOut(envelope, except: origin)
            case .duplicate(let origin, let ack):
                // The original may have been in a batch whose commit failed.
                if (committed[ack.room] ?? 0) >= ack.seq {
                    respond(origin, ack)
                } else {
                    fail(origin, failure, request: .publish, room: ack.room, clientID: ack.clientID)
                }
            case .fail(let origin, let error, let request, let room, let clientID):
                fail(origin, error, request: request, room: room, clientID: clientID)
            case .addMember(let session, let room):
                rooms[room, default: Room()].members[session.id] = session
            case .removeMember(let session, let room):
                rooms[room]?.members[session.id] = nil
                if let state = rooms[room], state.members.isEmpty, state.occupancy.isEmpty { rooms[room] = nil }
            case .joined(let session, let room, let seq, let since):
                // After a failed commit the join envelope is gone: report the committed seq.
                let effective = ok ? seq : min(seq, committed[room] ?? 0)
                session.push(.joined(room: room, seq: effective, since: since))
            case .left(let session, let room):
                session.push(.left(room: room))
            case .register(let session):
                sessionsByUser[session.user, default: [:]][session.id] = session
            case .unregister(let session):
                sessionsByUser[session.user]?[session.id] = nil
                if sessionsByUser[session.user]?.isEmpty == true { sessionsByUser[session.user] = nil }
                _ = session.markClosed()
            case .barrier(let continuation):
                continuation.resume()
            }
        }
        flushOutCounts()
    }

    private static func ack(for envelope: Envelope) -> Ack {
        Ack(room: envelope.room, id: envelope.id, seq: envelope.seq, ts: envelope.ts, clientID: envelope.clientID)
    }

    /// Delivers a run of committed envelopes to group rooms room by room: each member
    /// gets all of the run's envelopes for its room in one push.
    ///
    /// Envelope by envelope, a fan-out touches every member session once per envelope,
    /// and in a large room each touch (the session's retain, its lock, its outbox) is a
    /// cache miss; this way it is once per batch. Every session still receives its
    /// events in commit order: a publisher's acks take its own envelopes' places, a
    /// session in several of the run's rooms (and every tap) gets the run merged in
    /// commit order, and the acks of publishers that are not sessions in the room
    /// (REST, the MQTT bridge) go out in commit order after the run. A run that
    /// touches a direct or call-log room is delivered envelope by envelope.
    private mutating func deliverRun(_ batch: Batch, _ run: Range<Int>) {
        var items: [RunItem] = []
        items.reserveCapacity(run.count)
        // The run's rooms in first-delivery order, each looked up (hashed) once per envelope.
        var groupIndex: [RoomName: Int] = [:]
        var groups: [RunGroup] = []
        for i in run {
            guard let delivery = batch.effects[i].delivery else { continue }
            let room = batch.envelopes[delivery.index].room
            let g: Int
            if let known = groupIndex[room] {
                g = known
            } else {
                guard case .group = room.scope, let members = rooms[room]?.members else {
                    for effect in run { deliverOne(batch, effect) }
                    return
                }
                g = groups.count
                groupIndex[room] = g
                groups.append(RunGroup(members: members))
            }
            groups[g].positions.append(items.count)
            if let session = delivery.session, groups[g].members[session.id] != nil {
                groups[g].publishers.insert(session.id)
            }
            items.append(RunItem(effect: i, envelope: delivery.index, group: g, publisher: delivery.session, ack: delivery.ack))
        }
        // Sessions that are members of more than one of the run's rooms (usually none, or
        // the few that publish to many rooms: a short list, scanned rather than hashed).
        var merged: [UInt64: SessionHandle] = [:]
        if groups.count > 1 {
            var seen: Set<UInt64> = []
            for group in groups {
                for (id, session) in group.members where !seen.insert(id).inserted { merged[id] = session }
            }
        }
        var mergedIDs = SmallIDSet()
        for id in merged.keys { mergedIDs.insert(id) }
        // With a single room in the run, taps get the same events as its members.
        var onlyRoomEvents: [SessionEvent]?
        for group in groups {
            let roomItems = group.positions.map { items[$0] }
            let events = roomItems.map { SessionEvent.envelope(batch.envelopes[$0.envelope]) }
            if groups.count == 1 { onlyRoomEvents = events }
            for (id, session) in group.members where !mergedIDs.contains(id) {
                if group.publishers.contains(id) {
                    let (own, count) = runEvents(for: session, of: roomItems, in: batch) { _ in true }
                    push(own, to: session, envelopes: count)
                } else {
                    push(events, to: session, envelopes: events.count)
                }
            }
        }
        for (id, session) in merged {
            let (own, count) = runEvents(for: session, of: items, in: batch) { groups[$0].members[id] != nil }
            push(own, to: session, envelopes: count)
        }
        if !taps.isEmpty {
            let all = onlyRoomEvents ?? items.map { SessionEvent.envelope(batch.envelopes[$0.envelope]) }
            for tap in taps.values { push(all, to: tap, envelopes: all.count) }
        }
        for item in items where item.ack {
            if let session = item.publisher, groups[item.group].members[session.id] != nil { continue }
            guard case .deliver(_, let origin?, _) = batch.effects[item.effect] else { continue }
            respond(origin, Self.ack(for: batch.envelopes[item.envelope]))
        }
    }

    /// One room of a run: its members (as delivered), the run's items in it, and which of
    /// its members published them.
    private struct RunGroup {
        var members: [UInt64: SessionHandle]
        var positions: [Int] = []
        var publishers = SmallIDSet()
    }

    /// Session ids asked about once per member of a room: usually none or a few (a list,
    /// scanned without hashing), but a set once there are more, so that a run where many
    /// members publish stays linear.
    struct SmallIDSet {
        private var few: [UInt64] = []
        private var many: Set<UInt64>?
        static let listLimit = 8

        mutating func insert(_ id: UInt64) {
            if many != nil {
                many!.insert(id)
            } else if !few.contains(id) {
                few.append(id)
                if few.count > Self.listLimit { many = Set(few) }
            }
        }

        func contains(_ id: UInt64) -> Bool {
            if let many { return many.contains(id) }
            return !few.isEmpty && few.contains(id)
        }
    }

    /// One delivery of a run, read from its effect once (copying a whole effect goes
    /// through the runtime: it is an enum with many payloads).
    private struct RunItem {
        var effect: Int
        var envelope: Int
        /// Index of the item's room in the run's groups.
        var group: Int
        var publisher: SessionHandle?
        var ack: Bool
    }

    /// What `session` receives of `items` (in order) in the rooms where `isMember` holds:
    /// other sessions' envelopes, and acks for its own; and how many are envelopes.
    private func runEvents(for session: SessionHandle, of items: [RunItem], in batch: Batch,
                        isMember: (Int) -> Bool) -> ([SessionEvent], Int) {
        var events: [SessionEvent] = []
        events.reserveCapacity(items.count)
        var envelopes = 0
        for item in items where isMember(item.group) {
            let envelope = batch.envelopes[item.envelope]
            if item.publisher === session {
                if item.ack { events.append(.ack(Self.ack(for: envelope))) }
            } else {
                events.append(.envelope(envelope))
                envelopes += 1
            }
        }
        return (events, envelopes)
    }

    /// Delivers the committed `.deliver` effect at `index` on its own.
    private mutating func deliverOne(_ batch: Batch, _ index: Int) {
        guard case .deliver(let envelopeIndex, let origin, let ack) = batch.effects[index] else { return }
        deliver(batch.envelopes[envelopeIndex], origin: origin, ack: ack)
    }

    /// A committed envelope to its room (or both users of a direct room), and its ack.
    private mutating func deliver(_ envelope: Envelope, origin: LocalBus.Origin?, ack: Bool) {
        fanOut(envelope, except: origin?.session)
        if ack, let origin { respond(origin, Self.ack(for: envelope)) }
    }

    /// Pushes `events`, of which `envelopes` are envelopes (for the out counters).
    private mutating func push(_ events: [SessionEvent], to session: SessionHandle, envelopes: Int) {
        switch session.push(contentsOf: events) {
        case .queued: outCounts[session.via.index] += envelopes
        case .overflowed: metrics.slowConsumer()
        case .closed: break
        }
    }

    private mutating func fanOut(_ envelope: Envelope, except origin: SessionHandle?) {
        let event = SessionEvent.envelope(envelope)
        switch envelope.room.scope {
        case .direct(let a, let b):
            for user in a == b ? [a] : [a, b] {
                guard let sessions = sessionsByUser[user] else { continue }
                for session in sessions.values where session !== origin {
                    push(event, to: session)
                }
            }
        case .group:
            for tap in taps.values { push(event, to: tap) }
            guard let members = rooms[envelope.room]?.members else { return }
            for session in members.values where session !== origin {
                push(event, to: session)
            }
        case .callLog, .invalidReserved:
            guard let members = rooms[envelope.room]?.members else { return }
            for session in members.values where session !== origin {
                push(event, to: session)
            }
        }
    }

    private mutating func push(_ event: SessionEvent, to session: SessionHandle) {
        switch session.push(event) {
        case .queued: outCounts[session.via.index] += 1
        case .overflowed: metrics.slowConsumer()
        case .closed: break
        }
    }

    private func respond(_ origin: LocalBus.Origin, _ ack: Ack) {
        switch origin {
        case .session(let session): session.push(.ack(ack))
        case .waiter(let continuation): continuation.resume(returning: ack)
        case .callback(let completion): completion(.success(ack))
        }
    }

    private func fail(_ origin: LocalBus.Origin, _ error: SwitchboardError, request: BusRequest, room: RoomName?, clientID: String?) {
        switch origin {
        case .session(let session): session.push(.failed(error, request: request, room: room, clientID: clientID))
        case .waiter(let continuation): continuation.resume(throwing: error)
        case .callback(let completion): completion(.failure(error))
        }
    }

    private mutating func flushOutCounts() {
        for i in outCounts.indices where outCounts[i] > 0 {
            metrics.envelopesOut[i].increment(by: outCounts[i])
            outCounts[i] = 0
        }
    }
}

extension Via {
    /// Position in `Via.allCases`, for per-protocol counters.
    var index: Int {
        switch self {
        case .ws: 0
        case .rest: 1
        case .mqtt: 2
        case .xmpp: 3
        case .sip: 4
        case .line: 5
        case .system: 6
        }
    }
}

/// Metric handles created once, so the hot path only increments.
struct BusMetrics {
    let envelopesIn: [Counter]
    let envelopesOut: [Counter]
    let sessions: [Meter]
    let slowConsumers: Counter
    let commitLatency: Metrics.Timer
    let fanoutLatency: Metrics.Timer
    let commitBatchSize: Recorder

    init(factory: any MetricsFactory) {
        envelopesIn = Via.allCases.map { Counter(label: SwitchboardMetrics.envelopesIn, dimensions: [("protocol", $0.rawValue)], factory: factory) }
        envelopesOut = Via.allCases.map { Counter(label: SwitchboardMetrics.envelopesOut, dimensions: [("protocol", $0.rawValue)], factory: factory) }
        sessions = Via.allCases.map { Meter(label: SwitchboardMetrics.sessions, dimensions: [("protocol", $0.rawValue)], factory: factory) }
        slowConsumers = Counter(label: SwitchboardMetrics.slowConsumers, factory: factory)
        commitLatency = Metrics.Timer(label: SwitchboardMetrics.commitLatency, factory: factory)
        fanoutLatency = Metrics.Timer(label: SwitchboardMetrics.fanoutLatency, factory: factory)
        commitBatchSize = Recorder(label: SwitchboardMetrics.commitBatchSize, factory: factory)
    }

    func envelopeIn(_ via: Via) { envelopesIn[via.index].increment() }
    func sessionOpened(_ via: Via) { sessions[via.index].increment() }
    func sessionClosed(_ via: Via) { sessions[via.index].decrement() }
    func slowConsumer() { slowConsumers.increment() }
}
