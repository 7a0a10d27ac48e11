import ArgumentParser
import Foundation
import Synchronization
import SwitchboardCore
import SwitchboardStore
import SwitchboardTesting

/// Which history store sits under the bus.
enum StoreKind: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// `InMemoryHistoryStore`: isolates the bus from SQLite.
    case memory
    /// A real `SQLiteStore` (WAL, `synchronous = NORMAL` unless told otherwise) in a temp dir.
    case sqlite
}

/// A history store for one benchmark run, with its temp dir.
struct BenchStore {
    let kind: StoreKind
    let instrumented: InstrumentedStore
    let sqlite: SQLiteStore?
    /// Syncs the WAL off the writer thread, as `switchboard serve` does.
    let walSyncer: WALSyncer?
    let directory: String?

    init(kind: StoreKind, synchronous: SQLiteStore.Synchronous = .normal, keepDurations: Bool = false) throws {
        self.kind = kind
        switch kind {
        case .memory:
            sqlite = nil
            walSyncer = nil
            directory = nil
            instrumented = InstrumentedStore(InMemoryHistoryStore(), keepDurations: keepDurations)
        case .sqlite:
            let dir = try makeTemporaryDirectory("swb-bench-store")
            let store = try SQLiteStore(path: (dir as NSString).appendingPathComponent("bench.sqlite"), synchronous: synchronous)
            sqlite = store
            walSyncer = ProcessInfo.processInfo.environment["SWB_NO_WALSYNC"] == nil ? WALSyncer(store: store) : nil
            directory = dir
            instrumented = InstrumentedStore(store, keepDurations: keepDurations)
        }
    }

    /// Closes the database and deletes the temp dir.
    func dispose() {
        walSyncer?.stop()
        if let sqlite { try? sqlite.close() }
        if let directory { removeTemporaryDirectory(directory) }
    }

    var description: String {
        switch kind {
        case .memory: return "InMemoryHistoryStore"
        case .sqlite: return "SQLiteStore (WAL, synchronous=normal, \(directory ?? "?"))"
        }
    }
}

/// Counts what the bus told a benchmark session; `outboxReady` wakes whoever drains it.
final class BenchSink: SessionSink {
    enum Target: Sendable {
        /// Push the session's index on a consumer's ready queue.
        case queue(ReadyQueue, Int)
        /// Wake the one thread that owns this session.
        case wakeup(Wakeup)
    }

    let target: Target
    let slowConsumer = Atomic<Int>(0)
    let otherCloses = Atomic<Int>(0)

    init(_ target: Target) { self.target = target }

    func outboxReady() {
        switch target {
        case .queue(let queue, let index): queue.push(index)
        case .wakeup(let wakeup): wakeup.signal()
        }
    }

    func closeRequested(_ reason: SwitchboardError) {
        if reason.code == .slowConsumer {
            slowConsumer.wrappingAdd(1, ordering: .relaxed)
        } else {
            otherCloses.wrappingAdd(1, ordering: .relaxed)
        }
    }
}

/// Bus settings for benchmarks: queues deep enough that nobody is dropped.
func benchBusConfiguration(sessionQueue: Int, maxRooms: Int, maxBatch: Int) -> LocalBus.Configuration {
    var configuration = LocalBus.Configuration()
    configuration.sessionQueueCapacity = sessionQueue
    configuration.maxRoomsPerSession = maxRooms
    configuration.maxBatch = maxBatch
    configuration.autoCreateRooms = true
    return configuration
}

func roomName(_ s: String) throws -> RoomName {
    guard let name = RoomName(s) else { throw ValidationError("bad room name \(s)") }
    return name
}

func userName(_ s: String) throws -> UserName {
    guard let name = UserName(s) else { throw ValidationError("bad user name \(s)") }
    return name
}

/// Waits (polling) until `condition` holds or `seconds` pass; true when it held.
func waitFor(seconds: Double, _ condition: () -> Bool) async -> Bool {
    let deadline = monoNanos() + UInt64(seconds * 1e9)
    while !condition() {
        if monoNanos() > deadline { return false }
        try? await Task.sleep(for: .milliseconds(1))
    }
    return true
}

/// What one windowed publisher saw.
struct PublisherTally {
    var acked = 0
    var failed = 0
    /// Chat envelopes delivered back to the publisher's own session.
    var seen = 0
}

/// Publishes `share` drafts from `session`, keeping at most `window` unacknowledged,
/// draining acks as they come; gives up at `deadline` (monotonic ns) if stuck.
func publishWindowed(
    bus: LocalBus, session: SessionHandle, share: Int, window: Int, deadline: UInt64, wakeup: Wakeup,
    draft: (Int) -> EnvelopeDraft
) -> PublisherTally {
    var tally = PublisherTally()
    var sent = 0
    while tally.acked < share {
        while sent < share, sent - tally.acked < window {
            do {
                try bus.publish(draft(sent), from: session)
            } catch {
                tally.failed += 1
                tally.acked += 1
            }
            sent += 1
        }
        let events = session.takeEvents()
        if events.isEmpty {
            if monoNanos() > deadline { break }  // stuck: report what was acked
            wakeup.wait(microseconds: 2000)
            continue
        }
        for event in events {
            switch event {
            case .ack: tally.acked += 1
            case .failed: tally.failed += 1; tally.acked += 1
            case .envelope(let envelope) where envelope.kind == .chat: tally.seen += 1
            default: break
            }
        }
    }
    return tally
}
