import DequeModule
import ArgumentParser
import Foundation
import Synchronization
import SwitchboardCore
import SwitchboardStore

/// `switchboard-bench fanout`: in-process bus fan-out, no network.
///
/// `rooms × subscribers` sessions each join one room; `publishers` sessions join every
/// room and flood it (round robin over the rooms) keeping at most `window` publishes
/// unacknowledged. `consumers` threads drain the subscribers' outboxes as `outboxReady`
/// tells them to, and count envelopes. The run ends when every subscriber has received
/// every envelope of its room and every publisher every ack.
struct FanoutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout", abstract: "In-process LocalBus fan-out: deliveries per second, no network.")

    @Option(help: "History store under the bus.") var store: StoreKind = .memory
    @Option(help: "Rooms.") var rooms = 1
    @Option(help: "Subscribers per room.") var subscribers = 1000
    @Option(help: "Envelopes published in total (over all rooms).") var messages = 10_000
    @Option(help: "Publishing sessions (each joins every room, one thread each).") var publishers = 1
    @Option(help: "Consumer threads draining the subscribers.") var consumers = 1
    @Option(help: "Most unacknowledged publishes per publisher.") var window = 8192
    @Option(help: "Body size in bytes.") var bodyBytes = 64
    @Option(help: "Bus max_batch (envelopes per group commit).") var maxBatch = 4096
    @Option(help: "Give up after this many seconds.") var timeout: Double = 120
    @Option(help: "Idle consumers/publishers: poll every N microseconds (0: sleep on a semaphore that outboxReady posts).")
    var pollMicroseconds = 50

    func validate() throws {
        guard rooms >= 1, subscribers >= 1, messages >= 1, publishers >= 1, consumers >= 1, window >= 1 else {
            throw ValidationError("every count must be at least 1")
        }
    }

    func run() async throws {
        let benchStore = try BenchStore(kind: store)
        defer { benchStore.dispose() }
        let result = try await runFanout(store: benchStore)
        emitJSON(result)
    }

    private func runFanout(store benchStore: BenchStore) async throws -> [String: Any] {
        let roomNames = try (0..<rooms).map { try roomName(String(format: "fan-%04d", $0)) }
        let perSubscriberMax = messages  // a subscriber can never see more chat envelopes than this
        let configuration = benchBusConfiguration(
            sessionQueue: max(perSubscriberMax + rooms * (subscribers + publishers) + 1024, 4096),
            maxRooms: rooms + 8, maxBatch: maxBatch)
        let bus = try LocalBus(store: benchStore.instrumented, configuration: configuration)

        // Subscribers: session i is in room i / subscribers, drained by consumer i % consumers.
        let wakeMode: WakeMode = pollMicroseconds > 0 ? .poll(microseconds: pollMicroseconds) : .signal
        let queues = (0..<consumers).map { _ in ReadyQueue(wakeMode) }
        var subscriberSessions: [SessionHandle] = []
        var subscriberSinks: [BenchSink] = []
        let total = rooms * subscribers
        subscriberSessions.reserveCapacity(total)
        for i in 0..<total {
            let sink = BenchSink(.queue(queues[i % consumers], i))
            let session = bus.openSession(user: try userName(String(format: "sub%06d", i)), display: nil, via: .line, sink: sink)
            subscriberSessions.append(session)
            subscriberSinks.append(sink)
        }
        // Publishers: each joins every room.
        var publisherSessions: [SessionHandle] = []
        var publisherSinks: [BenchSink] = []
        var publisherWakeups: [Wakeup] = []
        for p in 0..<publishers {
            let wakeup = Wakeup(wakeMode)
            let sink = BenchSink(.wakeup(wakeup))
            let session = bus.openSession(user: try userName(String(format: "pub%03d", p)), display: nil, via: .line, sink: sink)
            publisherSessions.append(session)
            publisherSinks.append(sink)
            publisherWakeups.append(wakeup)
            for room in roomNames { try bus.join(session, room: room, since: nil) }
        }
        for (i, session) in subscriberSessions.enumerated() {
            try bus.join(session, room: roomNames[i / subscribers], since: nil)
        }
        await bus.flush()

        // Consumer threads: drain ready subscribers, count chat envelopes, check seq order.
        let subscribersFinal = subscriberSessions
        let counters = FanoutCounters()
        let expected = messages * subscribers
        var consumerThreads: [BenchThread] = []
        for c in 0..<consumers {
            let queue = queues[c]
            consumerThreads.append(BenchThread(name: "consumer-\(c)") {
                var ready: [Int] = []
                ready.reserveCapacity(1024)
                var lastSeq = [UInt64](repeating: 0, count: subscribersFinal.count)
                var violations = 0
                while true {
                    queue.take(into: &ready)
                    if ready.isEmpty {
                        if counters.stop.load(ordering: .acquiring) { break }
                        queue.wakeup.wait(microseconds: 2000)
                        continue
                    }
                    var chat = 0
                    var events = Deque<SessionEvent>()
                    for index in ready {
                        events.removeAll(keepingCapacity: true)
                        subscribersFinal[index].takeEvents(into: &events)
                        var last = lastSeq[index]
                        for event in events {
                            if case .envelope(let envelope) = event {
                                if envelope.seq <= last { violations += 1 }
                                last = envelope.seq
                                if envelope.kind == .chat { chat += 1 }
                            }
                        }
                        lastSeq[index] = last
                    }
                    if chat > 0 {
                        let (before, after) = counters.delivered.wrappingAdd(chat, ordering: .relaxed)
                        if before < expected, after >= expected { counters.deliveredAt.store(monoNanos(), ordering: .relaxed) }
                    }
                }
                counters.orderViolations.wrappingAdd(violations, ordering: .relaxed)
            })
        }

        // Let the join traffic drain before measuring.
        let settled = await waitFor(seconds: 60) { subscribersFinal.allSatisfy { $0.queuedCount == 0 } }
        guard settled else { throw ValidationError("join traffic did not drain within 60 s") }
        for session in publisherSessions { _ = session.takeEvents() }
        benchStore.instrumented.reset()

        // Publisher threads: flood with a window of unacknowledged publishes.
        let body = makeBody(bytes: bodyBytes, prefix: "fanout ")
        let start = Wakeup()
        let busRef = bus
        let window = self.window
        let deadline = monoNanos() + UInt64(timeout * 1e9) + 60_000_000_000
        var publisherThreads: [BenchThread] = []
        for p in 0..<publishers {
            let share = messages / publishers + (p < messages % publishers ? 1 : 0)
            let session = publisherSessions[p]
            let wakeup = publisherWakeups[p]
            let drafts = roomNames.map { EnvelopeDraft(room: $0, from: session.sender, body: body) }
            let offset = p * rooms / publishers
            publisherThreads.append(BenchThread(name: "publisher-\(p)") {
                while !counters.started.load(ordering: .acquiring) { start.wait(microseconds: 1000) }
                let tally = publishWindowed(
                    bus: busRef, session: session, share: share, window: window, deadline: deadline, wakeup: wakeup
                ) { drafts[($0 + offset) % drafts.count] }
                counters.acks.wrappingAdd(tally.acked - tally.failed, ordering: .relaxed)
                counters.failures.wrappingAdd(tally.failed, ordering: .relaxed)
                counters.publisherDeliveries.wrappingAdd(tally.seen, ordering: .relaxed)
                counters.ackedAt.atomicMax(monoNanos())
            })
        }

        let cpuBefore = processCPUSeconds()
        let t0 = monoNanos()
        counters.started.store(true, ordering: .releasing)
        for _ in 0..<publishers { start.signal() }
        for thread in publisherThreads { thread.join() }
        let complete = await waitFor(seconds: timeout) { counters.delivered.load(ordering: .relaxed) >= expected }
        let tEnd = max(counters.deliveredAt.load(ordering: .relaxed), counters.ackedAt.load(ordering: .relaxed), complete ? 0 : monoNanos())
        let cpu = processCPUSeconds() - cpuBefore
        let commits = benchStore.instrumented.commitCount
        let committed = benchStore.instrumented.envelopeCount
        let commitSeconds = benchStore.instrumented.commitSeconds

        // Publishers also receive each other's envelopes; give them a moment, then drain.
        await bus.flush()
        var publisherDeliveries = counters.publisherDeliveries.load(ordering: .relaxed)
        for session in publisherSessions {
            for event in session.takeEvents() {
                if case .envelope(let envelope) = event, envelope.kind == .chat { publisherDeliveries += 1 }
            }
        }
        counters.stop.store(true, ordering: .releasing)
        for queue in queues { queue.wakeup.signal() }
        for thread in consumerThreads { thread.join() }

        let slow = subscriberSinks.reduce(0) { $0 + $1.slowConsumer.load(ordering: .relaxed) }
            + publisherSinks.reduce(0) { $0 + $1.slowConsumer.load(ordering: .relaxed) }
        await bus.shutdown()

        let seconds = Double(tEnd - t0) / 1e9
        let delivered = counters.delivered.load(ordering: .relaxed)
        let acks = counters.acks.load(ordering: .relaxed)
        let expectedPublisher = messages * (publishers - 1)
        let ok = complete && delivered == expected && acks == messages && slow == 0
            && counters.failures.load(ordering: .relaxed) == 0 && counters.orderViolations.load(ordering: .relaxed) == 0
            && publisherDeliveries == expectedPublisher
        return [
            "bench": "fanout",
            "store": store.rawValue,
            "store_description": benchStore.description,
            "rooms": rooms,
            "subscribers_per_room": subscribers,
            "publishers": publishers,
            "consumers": consumers,
            "window": window,
            "wake": pollMicroseconds > 0 ? "poll \(pollMicroseconds) us" : "semaphore",
            "body_bytes": bodyBytes,
            "messages": messages,
            "expected_deliveries": expected,
            "delivered": delivered,
            "publisher_deliveries": publisherDeliveries,
            "expected_publisher_deliveries": expectedPublisher,
            "acks": acks,
            "failures": counters.failures.load(ordering: .relaxed),
            "slow_consumer_drops": slow,
            "order_violations": counters.orderViolations.load(ordering: .relaxed),
            "complete": complete,
            "ok": ok,
            "seconds": round3(seconds),
            "deliveries_per_s": seconds > 0 ? (Double(delivered) / seconds).rounded() : 0,
            "all_deliveries_per_s": seconds > 0 ? (Double(delivered + publisherDeliveries) / seconds).rounded() : 0,
            "publishes_per_s": seconds > 0 ? (Double(acks) / seconds).rounded() : 0,
            "commits": commits,
            "committed_envelopes": committed,
            "mean_batch": commits > 0 ? round3(Double(committed) / Double(commits)) : 0,
            "commit_seconds": round3(commitSeconds),
            "cpu_seconds": round3(cpu),
            "cpu_cores_busy": seconds > 0 ? round3(cpu / seconds) : 0,
        ]
    }
}

/// Shared counters of one fan-out run.
final class FanoutCounters: Sendable {
    let delivered = Atomic<Int>(0)
    let deliveredAt = Atomic<UInt64>(0)
    let ackedAt = Atomic<UInt64>(0)
    let acks = Atomic<Int>(0)
    let failures = Atomic<Int>(0)
    let publisherDeliveries = Atomic<Int>(0)
    let orderViolations = Atomic<Int>(0)
    let stop = Atomic<Bool>(false)
    let started = Atomic<Bool>(false)
}

extension Atomic where Value == UInt64 {
    /// Raises the value to `candidate` if it is larger.
    func atomicMax(_ candidate: UInt64) {
        var current = load(ordering: .relaxed)
        while candidate > current {
            let (exchanged, original) = compareExchange(expected: current, desired: candidate, ordering: .relaxed)
            if exchanged { return }
            current = original
        }
    }
}
