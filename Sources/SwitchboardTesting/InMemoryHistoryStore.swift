import Synchronization
import SwitchboardCore

/// A ``HistoryStore`` kept in memory. Used by bus unit tests and by the
/// in-process fan-out benchmark to measure the bus without SQLite; the server
/// itself always uses `SQLiteStore`.
public final class InMemoryHistoryStore: HistoryStore {
    private struct State {
        var envelopes: [RoomName: [Envelope]] = [:]
        var lastSeq: [RoomName: UInt64] = [:]
        var failNextAppends = 0
        var appendCalls = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// Makes the next `count` appends throw, to exercise the bus's failure path.
    public func failNextAppends(_ count: Int) {
        state.withLock { $0.failNextAppends = count }
    }

    /// How many times `append` ran (one per group commit).
    public var appendCalls: Int { state.withLock { $0.appendCalls } }

    /// Everything stored in `room`, oldest first.
    public func all(_ room: RoomName) -> [Envelope] {
        state.withLock { $0.envelopes[room] ?? [] }
    }

    public func loadSequences() throws -> [RoomName: UInt64] {
        state.withLock { $0.lastSeq }
    }

    public func recentClientIDs(since ts: Int64) throws -> [Envelope] {
        state.withLock { $0.envelopes.values.flatMap { $0.filter { $0.clientID != nil && $0.ts >= ts } } }
    }

    public func append(_ envelopes: [Envelope]) throws {
        try state.withLock { state in
            state.appendCalls += 1
            if state.failNextAppends > 0 {
                state.failNextAppends -= 1
                throw SwitchboardError(.storageUnavailable, "injected failure")
            }
            for envelope in envelopes {
                state.envelopes[envelope.room, default: []].append(envelope)
                state.lastSeq[envelope.room] = max(state.lastSeq[envelope.room] ?? 0, envelope.seq)
            }
        }
    }

    /// Deletes `room` and its history, as `room delete` does in SQLite.
    public func removeRoom(_ room: RoomName) {
        state.withLock { state in
            state.envelopes[room] = nil
            state.lastSeq[room] = nil
        }
    }

    public func roomExists(_ room: RoomName) throws -> Bool {
        state.withLock { $0.lastSeq[room] != nil }
    }

    public func messages(in room: RoomName, before: UInt64?, after: UInt64?, limit: Int) async throws -> [Envelope] {
        let rows = state.withLock { state in
            (state.envelopes[room] ?? []).filter { ($0.seq < (before ?? .max)) && ($0.seq > (after ?? 0)) }
        }
        return after != nil ? Array(rows.prefix(limit)) : Array(rows.suffix(limit))
    }

    public func applyRetention(now: Int64, maxAgeMillis: Int64?, maxPerRoom: Int?) async throws -> Int {
        state.withLock { state in
            var removed = 0
            for (room, rows) in state.envelopes {
                var kept = rows
                if let maxAgeMillis { kept = kept.filter { $0.ts >= now - maxAgeMillis } }
                if let maxPerRoom, kept.count > maxPerRoom { kept = Array(kept.suffix(maxPerRoom)) }
                removed += rows.count - kept.count
                state.envelopes[room] = kept
            }
            return removed
        }
    }
}

/// A ``SessionSink`` that records what the bus did, for tests and benchmarks.
public final class RecordingSink: SessionSink {
    private let state = Mutex<(ready: Int, closed: [SwitchboardError])>((0, []))
    private let onReady: (@Sendable () -> Void)?

    /// `onReady` runs (on the bus thread) every time the outbox becomes non-empty.
    public init(onReady: (@Sendable () -> Void)? = nil) {
        self.onReady = onReady
    }

    public func outboxReady() {
        state.withLock { $0.ready += 1 }
        onReady?()
    }

    public func closeRequested(_ reason: SwitchboardError) {
        state.withLock { $0.closed.append(reason) }
    }

    /// Close requests received so far.
    public var closeReasons: [SwitchboardError] { state.withLock { $0.closed } }
    /// How often the outbox became ready.
    public var readyCount: Int { state.withLock { $0.ready } }
}
