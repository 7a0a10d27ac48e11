import Foundation
import Synchronization
import SwitchboardCore

/// A ``HistoryStore`` that forwards to another one and measures every group commit
/// (`append`): how many, how large, how long. Only the bus's writer thread appends.
final class InstrumentedStore: HistoryStore {
    let base: any HistoryStore
    private let appends = Atomic<Int>(0)
    private let appended = Atomic<Int>(0)
    private let nanos = Atomic<UInt64>(0)
    private let durations = Mutex<[UInt64]>([])
    private let keepDurations: Bool

    init(_ base: any HistoryStore, keepDurations: Bool = false) {
        self.base = base
        self.keepDurations = keepDurations
    }

    /// Group commits so far.
    var commitCount: Int { appends.load(ordering: .relaxed) }
    /// Envelopes committed so far.
    var envelopeCount: Int { appended.load(ordering: .relaxed) }
    /// Time spent inside `append`, in seconds.
    var commitSeconds: Double { Double(nanos.load(ordering: .relaxed)) / 1e9 }
    /// Each commit's duration in nanoseconds (when `keepDurations`).
    var commitDurations: [UInt64] { durations.withLock { $0 } }

    func reset() {
        appends.store(0, ordering: .relaxed)
        appended.store(0, ordering: .relaxed)
        nanos.store(0, ordering: .relaxed)
        durations.withLock { $0.removeAll() }
    }

    func loadSequences() throws -> [RoomName: UInt64] { try base.loadSequences() }

    func recentClientIDs(since ts: Int64) throws -> [Envelope] { try base.recentClientIDs(since: ts) }

    func append(_ envelopes: [Envelope]) throws {
        let start = monoNanos()
        try base.append(envelopes)
        let elapsed = monoNanos() - start
        appends.wrappingAdd(1, ordering: .relaxed)
        appended.wrappingAdd(envelopes.count, ordering: .relaxed)
        nanos.wrappingAdd(elapsed, ordering: .relaxed)
        if keepDurations { durations.withLock { $0.append(elapsed) } }
    }

    func roomExists(_ room: RoomName) throws -> Bool { try base.roomExists(room) }

    func messages(in room: RoomName, before: UInt64?, after: UInt64?, limit: Int) async throws -> [Envelope] {
        try await base.messages(in: room, before: before, after: after, limit: limit)
    }

    func applyRetention(now: Int64, maxAgeMillis: Int64?, maxPerRoom: Int?) async throws -> Int {
        try await base.applyRetention(now: now, maxAgeMillis: maxAgeMillis, maxPerRoom: maxPerRoom)
    }
}

/// CPU time (user + system) of this process so far, in seconds.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
        + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
}
