import Dispatch
import Foundation
import Synchronization
import Testing
@testable import SwitchboardCore
import SwitchboardTesting

/// A history store whose next append, once asked to, waits until released; the appends
/// after it then fail (with the bus's retries). It records which thread ran each append.
final class StallingStore: HistoryStore {
    let memory = InMemoryHistoryStore()
    private let stall = Mutex(false)
    private let threads = Mutex<[String]>([])
    /// Posted when the stalled append has begun.
    let entered = DispatchSemaphore(value: 0)
    /// Post to let the stalled append finish.
    let release = DispatchSemaphore(value: 0)

    func stallNextAppend() { stall.withLock { $0 = true } }

    /// The name of the thread of every append so far, in order.
    var appendThreads: [String] { threads.withLock { $0 } }

    func append(_ envelopes: [Envelope]) throws {
        let name = Thread.kernelName
        threads.withLock { $0.append(name) }
        let stalled = stall.withLock { stall -> Bool in
            defer { stall = false }
            return stall
        }
        guard stalled else { return try memory.append(envelopes) }
        entered.signal()
        release.wait()
        try memory.append(envelopes)
        memory.failNextAppends(3)  // the next batch and the bus's two retries
    }

    func loadSequences() throws -> [RoomName: UInt64] { try memory.loadSequences() }
    func recentClientIDs(since ts: Int64) throws -> [Envelope] { try memory.recentClientIDs(since: ts) }
    func roomExists(_ room: RoomName) throws -> Bool { try memory.roomExists(room) }
    func messages(in room: RoomName, before: UInt64?, after: UInt64?, limit: Int) async throws -> [Envelope] {
        try await memory.messages(in: room, before: before, after: after, limit: limit)
    }
    func applyRetention(now: Int64, maxAgeMillis: Int64?, maxPerRoom: Int?) async throws -> Int {
        try await memory.applyRetention(now: now, maxAgeMillis: maxAgeMillis, maxPerRoom: maxPerRoom)
    }
}

@Suite struct PipelineTests {
    let hall = RoomName("hall")!

    /// Work that queued up behind a commit is committed on the committer thread while the
    /// batch before it is delivered and the one after it sequenced. When that commit fails,
    /// its whole batch fails (a repeated client_id in it included: the original was never
    /// stored), so does the batch sequenced behind it, and the next messages take the seqs
    /// right after the last committed ones.
    @Test func aFailedCommitOnTheCommitterThreadIsTakenBack() async throws {
        let store = StallingStore()
        var configuration = LocalBus.Configuration()
        configuration.maxBatch = 3
        configuration.handOverMinimum = 1
        let bus = try LocalBus(store: store, configuration: configuration)
        let sender = try await joined(bus, alice)
        let other = try await joined(bus, bob)
        for session in [sender, other] { try bus.join(session, room: hall, since: nil) }
        await bus.flush()
        _ = (sender.takeEvents(), other.takeEvents())

        store.stallNextAppend()
        try bus.publish(EnvelopeDraft(room: lobby, from: sender.sender, body: "first"), from: sender)
        #expect(store.entered.wait(timeout: .now() + 5) == .success)
        // Queued while "first" commits: a batch of three (committed on the committer
        // thread, where it fails) and one behind it.
        let queued = [
            EnvelopeDraft(room: hall, from: sender.sender, body: "lost", clientID: "c2"),
            EnvelopeDraft(room: hall, from: sender.sender, body: "lost, sent again", clientID: "c2"),
            EnvelopeDraft(room: lobby, from: sender.sender, body: "lost too"),
            EnvelopeDraft(room: lobby, from: sender.sender, body: "behind"),
        ]
        for draft in queued { try bus.publish(draft, from: sender) }
        // A slow commit: the next batch is worth handing over.
        try await Task.sleep(for: .milliseconds(20))
        store.release.signal()
        await bus.flush()

        let got = sender.takeEvents()
        #expect(acks(got).map(\.room) == [lobby])
        let failures = got.compactMap { event -> SwitchboardError.Code? in
            if case .failed(let error, .publish, _, _) = event { error.code } else { nil }
        }
        #expect(failures == Array(repeating: .storageUnavailable, count: 4))
        #expect(envelopes(other.takeEvents()).map(\.body) == ["first"])
        #expect(store.appendThreads.suffix(3) == ["swb-commit", "swb-commit", "swb-commit"])

        // The client_id was never committed: sending it again publishes.
        try bus.publish(EnvelopeDraft(room: hall, from: sender.sender, body: "kept", clientID: "c2"), from: sender)
        try bus.publish(EnvelopeDraft(room: lobby, from: sender.sender, body: "kept too"), from: sender)
        await bus.flush()
        let kept = envelopes(other.takeEvents())
        #expect(kept.map(\.body) == ["kept", "kept too"])
        #expect(kept.map(\.seq) == [bus.lastSeq(of: hall), bus.lastSeq(of: lobby)])
        #expect(acks(sender.takeEvents()).map(\.duplicate) == [false, false])
        for room in [lobby, hall] {
            let seqs = store.memory.all(room).map(\.seq)
            #expect(seqs == Array(1...UInt64(seqs.count)), "\(room) has a gap")
        }
        await bus.shutdown()
    }

    /// Two publishers flooding small batches (the committer thread busy most of the time):
    /// every envelope reaches a watcher once, in seq order, each sender's in its order.
    @Test func concurrentBatchesStayInOrderEverywhere() async throws {
        let store = InMemoryHistoryStore()
        let bus = try makeBus(store) { $0.maxBatch = 7 }
        let watcher = try await joined(bus, carol)
        let senders = [try await joined(bus, alice), try await joined(bus, bob)]
        _ = watcher.takeEvents()
        await withTaskGroup(of: Void.self) { group in
            for sender in senders {
                group.addTask {
                    for index in 0..<500 {
                        try? bus.publish(EnvelopeDraft(room: lobby, from: sender.sender, body: "\(index)"), from: sender)
                    }
                }
            }
        }
        await bus.flush()
        let seen = envelopes(await events(of: watcher, count: 1000)).filter { $0.kind == .chat }
        #expect(seen.count == 1000)
        #expect(zip(seen, seen.dropFirst()).allSatisfy { $0.seq + 1 == $1.seq })
        for sender in senders {
            let bodies = seen.filter { $0.from.user == sender.user }.map(\.body)
            #expect(bodies == (0..<500).map { "\($0)" })
        }
        let stored = store.all(lobby).map(\.seq)
        #expect(stored == Array(1...UInt64(stored.count)))
        await bus.shutdown()
    }
}
