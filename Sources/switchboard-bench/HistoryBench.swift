import ArgumentParser
import Foundation
import Synchronization
import SwitchboardCore
import SwitchboardStore

/// `switchboard-bench history`: group commit into SQLite.
///
/// * `raw`: `SQLiteStore.append` called directly with batches of `batch-size`.
/// * `flood`: `publishers` sessions (one room each) flood the bus, a window of
///   unacknowledged publishes each; time until every ack arrived.
/// * `paced`: one session publishes at `rate` envelopes/s for `seconds`; latency from
///   the `publish` call to the ack seen by the session's consumer thread.
struct HistoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history", abstract: "History group commit through the bus into SQLite, and ack latency.")

    enum Mode: String, ExpressibleByArgument, CaseIterable { case raw, flood, paced }

    @Argument(help: "raw | flood | paced") var mode: Mode
    @Option(help: "History store (flood and paced).") var store: StoreKind = .sqlite
    @Option(help: "SQLite synchronous level: normal | full.") var synchronous = "normal"
    @Option(help: "raw: batches to append.") var batches = 300
    @Option(help: "raw: envelopes per batch.") var batchSize = 1000
    @Option(help: "flood: publishing sessions, each in its own room.") var publishers = 4
    @Option(help: "flood: envelopes in total.") var messages = 1_000_000
    @Option(help: "flood: most unacknowledged publishes per publisher.") var window = 8192
    @Flag(name: .customLong("client-ids"), help: "flood: give every publish a unique client_id (exercises the bus's dedup window).")
    var clientIDs = false
    @Option(help: "paced: envelopes per second.") var rate = 10_000
    @Option(help: "paced: duration in seconds.") var seconds: Double = 5
    @Option(help: "Body size in bytes.") var bodyBytes = 64
    @Option(help: "Bus max_batch (envelopes per group commit).") var maxBatch = 4096
    @Option(help: "Give up after this many seconds.") var timeout: Double = 120

    func run() async throws {
        guard let level = SQLiteStore.Synchronous(rawValue: synchronous) else {
            throw ValidationError("--synchronous must be normal or full")
        }
        let benchStore = try BenchStore(kind: mode == .raw ? .sqlite : store, synchronous: level, keepDurations: mode != .flood)
        defer { benchStore.dispose() }
        var result: [String: Any]
        switch mode {
        case .raw: result = try raw(benchStore)
        case .flood: result = try await flood(benchStore)
        case .paced: result = try await paced(benchStore)
        }
        result["bench"] = "history-\(mode.rawValue)"
        result["store"] = benchStore.kind.rawValue
        result["store_description"] = benchStore.description
        result["synchronous"] = synchronous
        result["body_bytes"] = bodyBytes
        emitJSON(result)
    }

    // MARK: raw

    private func raw(_ benchStore: BenchStore) throws -> [String: Any] {
        guard let sqlite = benchStore.sqlite else { throw ValidationError("raw needs SQLite") }
        let room = try roomName("raw")
        let sender = Sender(user: try userName("alice"), display: nil, via: .line)
        let body = makeBody(bytes: bodyBytes, prefix: "raw ")
        var ids = ULIDGenerator()
        let baseTs = Int64(Date().timeIntervalSince1970 * 1000)
        var seq: UInt64 = 0
        var all: [[Envelope]] = []
        all.reserveCapacity(batches)
        for _ in 0..<batches {
            var batch: [Envelope] = []
            batch.reserveCapacity(batchSize)
            for _ in 0..<batchSize {
                seq += 1
                let ts = baseTs + Int64(seq / 1000)
                batch.append(Envelope(id: ids.next(millis: ts), room: room, seq: seq, ts: ts, from: sender, kind: .chat, body: body))
            }
            all.append(batch)
        }
        var durations: [UInt64] = []
        durations.reserveCapacity(batches)
        let cpuBefore = processCPUSeconds()
        let t0 = monoNanos()
        for batch in all {
            let start = monoNanos()
            try sqlite.append(batch)
            durations.append(monoNanos() - start)
        }
        let elapsed = Double(monoNanos() - t0) / 1e9
        let cpu = processCPUSeconds() - cpuBefore
        let count = batches * batchSize
        return [
            "batches": batches,
            "batch_size": batchSize,
            "envelopes": count,
            "seconds": round3(elapsed),
            "envelopes_per_s": (Double(count) / elapsed).rounded(),
            "batch_latency": LatencySummary(nanos: durations).json,
            "cpu_seconds": round3(cpu),
            "ok": true,
        ]
    }

    // MARK: flood

    private func flood(_ benchStore: BenchStore) async throws -> [String: Any] {
        let configuration = benchBusConfiguration(sessionQueue: messages + 4096, maxRooms: 8, maxBatch: maxBatch)
        let bus = try LocalBus(store: benchStore.instrumented, configuration: configuration)
        var sessions: [SessionHandle] = []
        var wakeups: [Wakeup] = []
        var rooms: [RoomName] = []
        for p in 0..<publishers {
            let wakeup = Wakeup()
            let session = bus.openSession(user: try userName(String(format: "flood%03d", p)), display: nil, via: .line, sink: BenchSink(.wakeup(wakeup)))
            let room = try roomName(String(format: "flood-%03d", p))
            try bus.join(session, room: room, since: nil)
            sessions.append(session)
            wakeups.append(wakeup)
            rooms.append(room)
        }
        await bus.flush()
        for session in sessions { _ = session.takeEvents() }
        benchStore.instrumented.reset()

        let body = makeBody(bytes: bodyBytes, prefix: "flood ")
        let counters = FanoutCounters()
        let gate = Wakeup()
        let window = self.window
        let withClientIDs = clientIDs
        let busRef = bus
        let deadline = monoNanos() + UInt64(timeout * 1e9)
        var threads: [BenchThread] = []
        for p in 0..<publishers {
            let share = messages / publishers + (p < messages % publishers ? 1 : 0)
            let session = sessions[p]
            let wakeup = wakeups[p]
            let draft = EnvelopeDraft(room: rooms[p], from: session.sender, body: body)
            threads.append(BenchThread(name: "flood-\(p)") {
                while !counters.started.load(ordering: .acquiring) { gate.wait(microseconds: 1000) }
                let tally = publishWindowed(
                    bus: busRef, session: session, share: share, window: window, deadline: deadline, wakeup: wakeup
                ) { sent in
                    var next = draft
                    if withClientIDs { next.clientID = "c\(p)-\(sent)" }
                    return next
                }
                counters.acks.wrappingAdd(tally.acked - tally.failed, ordering: .relaxed)
                counters.failures.wrappingAdd(tally.failed, ordering: .relaxed)
                counters.ackedAt.atomicMax(monoNanos())
            })
        }
        let cpuBefore = processCPUSeconds()
        let t0 = monoNanos()
        counters.started.store(true, ordering: .releasing)
        for _ in 0..<publishers { gate.signal() }
        for thread in threads { thread.join() }
        let elapsed = Double(counters.ackedAt.load(ordering: .relaxed) - t0) / 1e9
        let cpu = processCPUSeconds() - cpuBefore
        let commits = benchStore.instrumented.commitCount
        let committed = benchStore.instrumented.envelopeCount
        let commitSeconds = benchStore.instrumented.commitSeconds
        await bus.shutdown()
        let acks = counters.acks.load(ordering: .relaxed)
        return [
            "publishers": publishers,
            "messages": messages,
            "window": window,
            "client_ids": clientIDs,
            "acks": acks,
            "failures": counters.failures.load(ordering: .relaxed),
            "seconds": round3(elapsed),
            "envelopes_per_s": (Double(acks) / elapsed).rounded(),
            "commits": commits,
            "committed_envelopes": committed,
            "mean_batch": commits > 0 ? round3(Double(committed) / Double(commits)) : 0,
            "commit_seconds": round3(commitSeconds),
            "commit_share": round3(commitSeconds / elapsed),
            "cpu_seconds": round3(cpu),
            "cpu_cores_busy": round3(cpu / elapsed),
            "ok": acks == messages,
        ]
    }

    // MARK: paced

    private func paced(_ benchStore: BenchStore) async throws -> [String: Any] {
        let total = Int(Double(rate) * seconds)
        guard total > 0 else { throw ValidationError("nothing to send") }
        let configuration = benchBusConfiguration(sessionQueue: total + 4096, maxRooms: 8, maxBatch: maxBatch)
        let bus = try LocalBus(store: benchStore.instrumented, configuration: configuration)
        let wakeup = Wakeup()
        let session = bus.openSession(user: try userName("paced"), display: nil, via: .line, sink: BenchSink(.wakeup(wakeup)))
        let room = try roomName("paced")
        try bus.join(session, room: room, since: nil)
        await bus.flush()
        _ = session.takeEvents()
        benchStore.instrumented.reset()

        let sendTimes = TimestampBuffer(count: total)
        let latencies = TimestampBuffer(count: total)
        let counters = FanoutCounters()
        let consumer = BenchThread(name: "ack-consumer") {
            var acked = 0
            while acked < total, !counters.stop.load(ordering: .relaxed) {
                let events = session.takeEvents()
                if events.isEmpty {
                    wakeup.wait(microseconds: 5000)
                    continue
                }
                let now = monoNanos()
                for event in events {
                    switch event {
                    case .ack, .failed:
                        if case .failed = event { counters.failures.wrappingAdd(1, ordering: .relaxed) }
                        latencies[acked] = now - sendTimes[acked]
                        acked += 1
                    default: break
                    }
                }
            }
            counters.acks.store(acked, ordering: .relaxed)
        }

        let draft = EnvelopeDraft(room: room, from: session.sender, body: makeBody(bytes: bodyBytes, prefix: "paced "))
        let interval = UInt64(1e9 / Double(rate))
        let cpuBefore = processCPUSeconds()
        let t0 = monoNanos()
        var sent = 0
        var publishErrors = 0
        while sent < total {
            let now = monoNanos()
            let due = min(total, Int((now - t0) / interval) + 1)
            while sent < due {
                sendTimes[sent] = monoNanos()
                do { try bus.publish(draft, from: session) } catch {
                    publishErrors += 1
                    break
                }
                sent += 1
            }
            if publishErrors > 0 { break }
            if sent < total { sleepUntil(t0 + UInt64(sent) * interval) }
        }
        let sendSeconds = Double(monoNanos() - t0) / 1e9
        let finished = await waitFor(seconds: timeout) { counters.acks.load(ordering: .relaxed) >= sent || publishErrors > 0 }
        if !finished || publishErrors > 0 {
            counters.stop.store(true, ordering: .relaxed)
            wakeup.signal()
        }
        consumer.join()
        let cpu = processCPUSeconds() - cpuBefore
        let acked = counters.acks.load(ordering: .relaxed)
        let summary = LatencySummary(nanos: latencies.prefix(acked))
        let commitSummary = LatencySummary(nanos: benchStore.instrumented.commitDurations)
        let commits = benchStore.instrumented.commitCount
        let committed = benchStore.instrumented.envelopeCount
        await bus.shutdown()
        return [
            "rate": rate,
            "seconds": round3(seconds),
            "sent": sent,
            "acks": acked,
            "failures": counters.failures.load(ordering: .relaxed) + publishErrors,
            "achieved_rate": (Double(sent) / sendSeconds).rounded(),
            "ack_latency": summary.json,
            "commit_latency": commitSummary.json,
            "commits": commits,
            "mean_batch": commits > 0 ? round3(Double(committed) / Double(commits)) : 0,
            "cpu_seconds": round3(cpu),
            "ok": acked == total && publishErrors == 0,
        ]
    }
}

/// A fixed array of UInt64 shared between a writer and a reader thread whose accesses
/// are ordered by other synchronization (here: the bus's locks between publish and ack).
final class TimestampBuffer: @unchecked Sendable {
    private let pointer: UnsafeMutableBufferPointer<UInt64>

    init(count: Int) {
        pointer = .allocate(capacity: count)
        pointer.initialize(repeating: 0)
    }

    deinit { pointer.deallocate() }

    subscript(index: Int) -> UInt64 {
        get { pointer[index] }
        set { pointer[index] = newValue }
    }

    func prefix(_ n: Int) -> [UInt64] { Array(pointer.prefix(n)) }
}
