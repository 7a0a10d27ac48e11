import DequeModule
import Dispatch
import Foundation
import Logging
import Metrics
import Synchronization

/// The in-process ``MessageBus``.
///
/// All state changes go through one writer thread that takes whatever work has
/// queued up as a batch and runs it in three steps:
///
/// 1. *Sequence*: in submission order, check access and dedup, assign each
///    room's next `seq`, decide join/leave envelopes, record the effects.
/// 2. *Commit*: append the batch's envelopes to history in one transaction
///    (group commit). Nothing has been delivered yet.
/// 3. *Deliver*: apply the effects in order: fan-out, acks, membership changes.
///
/// So nobody sees an envelope that history lacks, seqs have no gaps (a failed
/// commit rolls the counters back) and every session sees a room in seq order.
public final class LocalBus: MessageBus {
    /// Tuning and limits of the bus.
    public struct Configuration: Sendable {
        /// Envelope size limits.
        public var limits = EnvelopeLimits()
        /// Events a session may have queued before it counts as a slow consumer.
        public var sessionQueueCapacity = 4096
        /// Most rooms one session may be in.
        public var maxRoomsPerSession = 100
        /// How long a `client_id` is remembered per user and room.
        public var dedupWindowMillis: Int64 = 600_000
        /// Most remembered `client_id`s per room.
        public var dedupMaxPerRoom = 10_000
        /// Most operations taken into one batch (one transaction).
        public var maxBatch = 4096
        /// Whether joining or publishing to an unknown room creates it.
        public var autoCreateRooms = true
        /// Where metrics go (the global `MetricsSystem` unless a test injects one).
        public var metricsFactory: any MetricsFactory = MetricsSystem.factory
        /// Milliseconds since the epoch; injected for tests.
        public var clock: @Sendable () -> Int64 = WallClock.millis

        public init() {}
    }

    enum Origin: Sendable {
        case session(SessionHandle)
        case waiter(CheckedContinuation<Ack, any Error>)
        case callback(@Sendable (Result<Ack, SwitchboardError>) -> Void)

        var session: SessionHandle? {
            if case .session(let s) = self { return s }
            return nil
        }
    }

    enum Op: Sendable {
        case open(SessionHandle)
        case openTap(SessionHandle)
        case close(SessionHandle)
        case publish(EnvelopeDraft, Origin)
        case join(SessionHandle, RoomName, since: UInt64?)
        case leave(SessionHandle, RoomName)
        case typing(SessionHandle, RoomName)
        case forget(RoomName)
        case barrier(CheckedContinuation<Void, Never>)
    }

    private struct Inbox {
        var ops: Deque<Op> = []
        var stopping = false
    }

    private let configuration: Configuration
    private let store: any HistoryStore
    private let logger: Logger
    private let inbox = Mutex(Inbox())
    private let wakeup = DispatchSemaphore(value: 0)
    private let state: Mutex<BusEngine>
    private let nextSessionID = Atomic<UInt64>(1)
    private let metrics: BusMetrics
    private let finished = Mutex<(done: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    /// Loads sequence counters and the dedup window from `store` and starts the writer thread.
    public init(store: any HistoryStore, configuration: Configuration = .init(), logger: Logger = Logger(label: "switchboard.bus")) throws {
        self.configuration = configuration
        self.store = store
        self.logger = logger
        var engine = BusEngine(configuration: configuration, sequences: try store.loadSequences())
        let now = configuration.clock()
        for envelope in try store.recentClientIDs(since: now - configuration.dedupWindowMillis) {
            engine.dedup.remember(envelope, now: envelope.ts)
        }
        self.metrics = engine.metrics
        self.state = Mutex(engine)
        let thread = Thread { [self] in self.runLoop() }
        thread.name = "switchboard-bus"
        thread.start()
    }

    // MARK: MessageBus

    public func openSession(user: UserName, display: String?, via: Via, sink: any SessionSink) -> SessionHandle {
        let id = nextSessionID.wrappingAdd(1, ordering: .relaxed).oldValue
        let session = SessionHandle(
            id: id, user: user, display: display, via: via, capacity: configuration.sessionQueueCapacity, sink: sink)
        if !submit(.open(session)) {
            if session.markClosed() { sink.closeRequested(SwitchboardError(.shuttingDown, "the server is shutting down")) }
        }
        return session
    }

    public func openTap(name: UserName, via: Via, sink: any SessionSink) -> SessionHandle {
        let id = nextSessionID.wrappingAdd(1, ordering: .relaxed).oldValue
        let session = SessionHandle(
            id: id, user: name, display: nil, via: via, capacity: configuration.sessionQueueCapacity, sink: sink)
        if !submit(.openTap(session)) {
            if session.markClosed() { sink.closeRequested(SwitchboardError(.shuttingDown, "the server is shutting down")) }
        }
        return session
    }

    public func closeSession(_ session: SessionHandle) {
        _ = submit(.close(session))
    }

    public func publish(_ draft: EnvelopeDraft, from session: SessionHandle) throws(SwitchboardError) {
        try checkPublish(draft, user: session.user, privileged: false)
        guard submit(.publish(draft, .session(session))) else { throw Self.shuttingDown }
    }

    public func publish(_ draft: EnvelopeDraft, privileged: Bool) async throws(SwitchboardError) -> Ack {
        try checkPublish(draft, user: draft.from.user, privileged: privileged)
        do {
            return try await withCheckedThrowingContinuation { continuation in
                if !submit(.publish(draft, .waiter(continuation))) {
                    continuation.resume(throwing: Self.shuttingDown)
                }
            }
        } catch let error as SwitchboardError {
            throw error
        } catch {
            throw SwitchboardError(.storageUnavailable, "\(error)")
        }
    }

    public func submit(_ draft: EnvelopeDraft, privileged: Bool,
                       completion: @escaping @Sendable (Result<Ack, SwitchboardError>) -> Void) {
        do throws(SwitchboardError) {
            try checkPublish(draft, user: draft.from.user, privileged: privileged)
        } catch {
            completion(.failure(error))
            return
        }
        if !submit(.publish(draft, .callback(completion))) {
            completion(.failure(Self.shuttingDown))
        }
    }

    public func join(_ session: SessionHandle, room: RoomName, since: UInt64?) throws(SwitchboardError) {
        if case .direct = room.scope {
            throw SwitchboardError(.directRoom, "direct conversations need no join; their messages reach every session of both users")
        }
        try AccessRules.canRead(room, user: session.user)
        guard submit(.join(session, room, since: since)) else { throw Self.shuttingDown }
    }

    public func leave(_ session: SessionHandle, room: RoomName) throws(SwitchboardError) {
        guard submit(.leave(session, room)) else { throw Self.shuttingDown }
    }

    public func typing(_ session: SessionHandle, room: RoomName) throws(SwitchboardError) {
        try AccessRules.canWrite(room, user: session.user, privileged: false)
        guard submit(.typing(session, room)) else { throw Self.shuttingDown }
    }

    public func roomDeleted(_ room: RoomName) {
        _ = submit(.forget(room))
    }

    public func occupants(of room: RoomName) -> [Occupant] {
        state.withLock { $0.occupants(of: room) }
    }

    public func lastSeq(of room: RoomName) -> UInt64 {
        state.withLock { $0.committed[room] ?? 0 }
    }

    public func history(
        of room: RoomName, reader: UserName, before: UInt64?, after: UInt64?, limit: Int
    ) async throws(SwitchboardError) -> [Envelope] {
        try AccessRules.canRead(room, user: reader)
        do {
            return try await store.messages(in: room, before: before, after: after, limit: max(1, min(limit, 1000)))
        } catch {
            throw SwitchboardError(.storageUnavailable, "history is unavailable: \(error)")
        }
    }

    public func flush() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            if !submit(.barrier(continuation)) { continuation.resume() }
        }
    }

    public func shutdown() async {
        let first = inbox.withLock { box -> Bool in
            if box.stopping { return false }
            box.stopping = true
            return true
        }
        if first { wakeup.signal() }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = finished.withLock { f -> Bool in
                if f.done { return true }
                f.waiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    // MARK: Submission

    private static let shuttingDown = SwitchboardError(.shuttingDown, "the server is shutting down")

    private func checkPublish(_ draft: EnvelopeDraft, user: UserName, privileged: Bool) throws(SwitchboardError) {
        try draft.validate(configuration.limits)
        try AccessRules.canWrite(draft.room, user: user, privileged: privileged)
        if draft.kind == .join || draft.kind == .leave {
            throw SwitchboardError(.invalidKind, "join and leave envelopes come from joining and leaving")
        }
    }

    /// Queues `op`; false once the bus is stopping.
    private func submit(_ op: Op) -> Bool {
        let signal = inbox.withLock { box -> Bool? in
            if box.stopping { return nil }
            box.ops.append(op)
            return box.ops.count == 1
        }
        guard let signal else { return false }
        if signal { wakeup.signal() }
        return true
    }

    // MARK: Writer thread

    private func runLoop() {
        while true {
            wakeup.wait()
            while true {
                // Keep the lock short: publishers on the event loops contend for it.
                // Usually the whole queue is one batch and is swapped out in O(1).
                var ops = Deque<Op>()
                let stopping = inbox.withLock { box -> Bool in
                    if box.ops.count <= configuration.maxBatch {
                        swap(&ops, &box.ops)
                    } else {
                        ops = Deque(box.ops.prefix(configuration.maxBatch))
                        box.ops.removeFirst(configuration.maxBatch)
                    }
                    return box.stopping
                }
                if ops.isEmpty {
                    if stopping {
                        finish()
                        return
                    }
                    break
                }
                process(ops)
            }
        }
    }

    private func finish() {
        // Sessions still open get a goodbye through their sinks.
        let sessions = state.withLock { $0.allSessions() }
        for session in sessions where session.markClosed() {
            session.sink.closeRequested(Self.shuttingDown)
        }
        let waiters = finished.withLock { f -> [CheckedContinuation<Void, Never>] in
            f.done = true
            defer { f.waiters = [] }
            return f.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    private func process(_ ops: Deque<Op>) {
        let now = configuration.clock()
        var batch = state.withLock { $0.sequence(ops, now: now, store: store, logger: logger) }

        var committed = true
        if !batch.envelopes.isEmpty {
            let start = DispatchTime.now().uptimeNanoseconds
            committed = commitWithRetry(batch.envelopes)
            metrics.commitLatency.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - start))
            metrics.commitBatchSize.record(batch.envelopes.count)
        }
        let start = DispatchTime.now().uptimeNanoseconds
        state.withLock { $0.deliver(&batch, committed: committed) }
        metrics.fanoutLatency.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - start))
    }

    private func commitWithRetry(_ envelopes: [Envelope]) -> Bool {
        var delay: UInt32 = 5_000
        for attempt in 1...3 {
            do {
                try store.append(envelopes)
                return true
            } catch {
                logger.error("history commit failed", metadata: [
                    "attempt": "\(attempt)", "envelopes": "\(envelopes.count)", "error": "\(error)",
                ])
                if attempt < 3 { usleep(delay); delay *= 10 }
            }
        }
        return false
    }
}

extension LocalBus.Configuration {
    /// The bus settings of a validated configuration (`[limits]`, `[rooms]`, `[history]`).
    public init(_ config: SwitchboardConfiguration) {
        self.init()
        limits = EnvelopeLimits(maxBodyBytes: config.int("limits", "max_body_bytes"))
        sessionQueueCapacity = config.int("limits", "session_queue")
        maxRoomsPerSession = config.int("limits", "max_rooms_per_session")
        dedupWindowMillis = Int64(config.int("limits", "dedup_window_seconds")) * 1000
        maxBatch = config.int("history", "max_batch")
        autoCreateRooms = config.bool("rooms", "auto_create")
    }
}

/// Server time as envelopes carry it: milliseconds since the epoch.
public enum WallClock {
    @Sendable public static func millis() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}
