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
///
/// One writer thread owns the bus's state: it sequences and delivers. Under load,
/// when a large batch is sequenced while the one before it awaits delivery, a
/// second thread commits it while the writer delivers the previous batch and
/// sequences the next (the commit, most of a batch's time, overlaps the rest).
/// Small batches, and any batch at a trickle, are committed by the writer itself:
/// no hand-over between threads on the way.
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
        /// Batches with at least this many envelopes are committed on the committer thread
        /// when there is a batch to deliver meanwhile and commits cost more than deliveries
        /// lately; smaller ones commit on the writer (handing them over would cost two
        /// thread wakeups, about what their commit takes).
        public var handOverMinimum = 32
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
    private let committer: CommitThread
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
        self.committer = CommitThread(store: store, metrics: engine.metrics, logger: logger)
        Thread.startNamed("swb-bus") { [self] in self.runLoop() }
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
        // Each batch goes sequenced → (in commit) → committed → delivered, in order, with
        // at most one batch in each stage. While the committer thread commits a batch, the
        // one before it is delivered and the next one sequenced.
        var sequenced: (batch: Batch, takenBack: Bool)?
        var inCommit: Batch?
        var committed: (batch: Batch, ok: Bool)?
        var costs = StageCosts()
        func deliverCommitted() {
            guard let (batch, ok) = committed else { return }
            committed = nil
            deliver(batch, ok: ok, costs: &costs)
        }
        while true {
            if sequenced == nil {
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
                if !ops.isEmpty {
                    let now = configuration.clock()
                    sequenced = (state.withLock { $0.sequence(ops, now: now, store: store, logger: logger) }, false)
                } else if inCommit == nil {
                    if committed != nil {
                        deliverCommitted()
                    } else if stopping {
                        committer.stop()
                        finish()
                        return
                    } else {
                        wakeup.wait()
                    }
                    continue
                }
            }

            if let (batch, takenBack) = sequenced, inCommit == nil {
                sequenced = nil
                if takenBack || batch.envelopes.isEmpty {
                    deliverCommitted()
                    deliver(batch, ok: !takenBack, costs: &costs)
                } else if committed != nil, batch.envelopes.count >= configuration.handOverMinimum,
                          costs.commitPerEnvelope >= costs.deliveryPerEnvelope {
                    committer.start(batch.envelopes)
                    inCommit = batch
                    deliverCommitted()
                } else {
                    deliverCommitted()
                    let (ok, nanos) = committer.commit(batch.envelopes)
                    costs.record(commit: nanos, envelopes: batch.envelopes.count)
                    if !ok { state.withLock { $0.rollBack([batch]) } }
                    committed = (batch, ok)
                }
                continue
            }

            // The committer has a batch, and either the next one is sequenced or no work
            // is waiting: wait for the commit.
            guard let batch = inCommit else { continue }
            inCommit = nil
            let (ok, nanos) = committer.result()
            costs.record(commit: nanos, envelopes: batch.envelopes.count)
            if !ok {
                // The batch sequenced behind it holds the seqs after its envelopes: it
                // is taken back with it and fails too.
                var takenBack = [batch]
                if let behind = sequenced?.batch {
                    takenBack.append(behind)
                    sequenced?.takenBack = true
                }
                state.withLock { $0.rollBack(takenBack) }
            }
            committed = (batch, ok)
        }
    }

    private func deliver(_ batch: Batch, ok: Bool, costs: inout StageCosts) {
        var batch = batch
        let start = DispatchTime.now().uptimeNanoseconds
        state.withLock { $0.deliver(&batch, committed: ok) }
        let nanos = DispatchTime.now().uptimeNanoseconds - start
        metrics.fanoutLatency.recordNanoseconds(Int64(nanos))
        costs.record(delivery: nanos, envelopes: batch.envelopes.count)
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
}

/// What committing and delivering an envelope cost lately (nanoseconds, smoothed over
/// recent batches). Overlapping the two on two threads pays for the thread wakeups it
/// costs only when the commit is at least as expensive as the delivery (SQLite under
/// a flood); when delivery dominates (large rooms) the writer commits itself.
struct StageCosts {
    private(set) var commitPerEnvelope = 0.0
    private(set) var deliveryPerEnvelope = 0.0

    mutating func record(commit nanos: UInt64, envelopes: Int) {
        Self.smooth(&commitPerEnvelope, nanos, envelopes)
    }

    mutating func record(delivery nanos: UInt64, envelopes: Int) {
        Self.smooth(&deliveryPerEnvelope, nanos, envelopes)
    }

    private static func smooth(_ average: inout Double, _ nanos: UInt64, _ envelopes: Int) {
        guard envelopes > 0 else { return }
        average += (Double(nanos) / Double(envelopes) - average) / 4
    }
}

/// The thread that commits a batch to history while the bus's writer thread delivers
/// the batch before it; ``commit(_:)`` commits on the caller's thread instead.
final class CommitThread: Sendable {
    private struct Slot {
        var envelopes: [Envelope]?
        var outcome: (ok: Bool, nanos: UInt64) = (false, 0)
        var stopping = false
    }

    private let store: any HistoryStore
    private let metrics: BusMetrics
    private let logger: Logger
    private let slot = Mutex(Slot())
    private let work = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)

    init(store: any HistoryStore, metrics: BusMetrics, logger: Logger) {
        self.store = store
        self.metrics = metrics
        self.logger = logger
        Thread.startNamed("swb-commit") { [self] in self.run() }
    }

    /// Starts committing `envelopes` on the committer thread; ``result()`` waits for it.
    func start(_ envelopes: [Envelope]) {
        slot.withLock { $0.envelopes = envelopes }
        work.signal()
    }

    /// Whether the batch given to ``start(_:)`` was committed, and how long that took
    /// (waits until it is done).
    func result() -> (ok: Bool, nanos: UInt64) {
        done.wait()
        return slot.withLock { $0.outcome }
    }

    /// Lets the thread end (once nothing is being committed).
    func stop() {
        slot.withLock { $0.stopping = true }
        work.signal()
    }

    private func run() {
        while true {
            work.wait()
            let (envelopes, stopping) = slot.withLock { slot in
                defer { slot.envelopes = nil }
                return (slot.envelopes, slot.stopping)
            }
            guard let envelopes else {
                if stopping { return }
                continue
            }
            let outcome = commit(envelopes)
            slot.withLock { $0.outcome = outcome }
            done.signal()
        }
    }

    /// Appends `envelopes` in one transaction, retrying twice; not ok when all three
    /// failed. Also says how long it took.
    func commit(_ envelopes: [Envelope]) -> (ok: Bool, nanos: UInt64) {
        let start = DispatchTime.now().uptimeNanoseconds
        let ok = append(envelopes)
        let nanos = DispatchTime.now().uptimeNanoseconds - start
        metrics.commitLatency.recordNanoseconds(Int64(nanos))
        metrics.commitBatchSize.record(envelopes.count)
        return (ok, nanos)
    }

    private func append(_ envelopes: [Envelope]) -> Bool {
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
