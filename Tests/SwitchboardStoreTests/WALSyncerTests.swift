import Foundation
import SwitchboardCore
import Testing
@testable import SwitchboardStore

@Suite struct WALSyncerTests {
    /// The syncer runs beside the writer without taking SQLite locks: commits go on,
    /// every row is there, and stop() is prompt and idempotent.
    @Test func syncingBesideTheWriterLosesNothing() async throws {
        try await withStore { store, _ in
            let syncer = WALSyncer(store: store, interval: .milliseconds(1))
            for batch in 0..<50 {
                try store.append((1...200).map { envelope("lobby", UInt64(batch * 200 + $0)) })
            }
            let started = ContinuousClock.now
            syncer.stop()
            syncer.stop()
            #expect(ContinuousClock.now - started < .seconds(1))
            #expect(try store.loadSequences()[room("lobby")] == 10_000)
            let newest = try await store.messages(in: room("lobby"), before: nil, after: nil, limit: 3)
            #expect(newest.map(\.seq) == [9_998, 9_999, 10_000])
        }
    }

    /// An idle gateway does not flush the disk every interval: the WAL is synced
    /// after it is written, and not again until it is written again.
    @Test func anUnchangedWALIsNotSyncedAgain() async throws {
        try await withStore { store, _ in
            try store.append([envelope("lobby", 1)])
            let syncer = WALSyncer(store: store, interval: .milliseconds(1), minFrames: 1)
            defer { syncer.stop() }
            try await waitUntil { syncer.syncCount >= 1 }
            let afterFirstWrite = syncer.syncCount
            try await Task.sleep(for: .milliseconds(200))
            #expect(syncer.syncCount == afterFirstWrite, "200 idle intervals, no write: no sync")

            try store.append([envelope("lobby", 2)])
            try await waitUntil { syncer.syncCount > afterFirstWrite }
        }
    }

    /// A trickle of small commits is not synced commit by commit: a few frames wait for
    /// more (or for `maxDelay`, a minute here).
    @Test func aSmallWriteWaitsForMoreFrames() async throws {
        try await withStore { store, _ in
            try store.append([envelope("lobby", 1)])
            let syncer = WALSyncer(store: store, interval: .milliseconds(1), minFrames: 10_000, maxDelay: .seconds(60))
            defer { syncer.stop() }
            try await waitUntil { syncer.syncCount >= 1 }  // the first change is synced at once

            try store.append([envelope("lobby", 2)])
            try await Task.sleep(for: .milliseconds(200))
            #expect(syncer.syncCount == 1, "a few frames, well within maxDelay: not synced yet")
        }
    }

    /// However little was written, it is synced at most `maxDelay` after the last sync.
    @Test func aSmallWriteIsSyncedWithinTheMaximumDelay() async throws {
        try await withStore { store, _ in
            try store.append([envelope("lobby", 1)])
            let syncer = WALSyncer(store: store, interval: .milliseconds(1), minFrames: 10_000, maxDelay: .milliseconds(300))
            defer { syncer.stop() }
            try await waitUntil { syncer.syncCount >= 1 }
            try store.append([envelope("lobby", 2)])
            try await waitUntil { syncer.syncCount >= 2 }
        }
    }

    /// The WAL index's frame counter, read at the offset SQLite documents, follows the commits.
    @Test func theFrameCounterGrowsWithCommits() async throws {
        try await withStore { store, _ in
            try store.append([envelope("lobby", 1)])
            let shm = open(store.path + "-shm", O_RDONLY)
            #expect(shm >= 0)
            defer { close(shm) }
            let first = try #require(WALIndexHeader.lastFrame(shm: shm))
            #expect(first > 0)
            try store.append((2...200).map { envelope("lobby", UInt64($0)) })
            let second = try #require(WALIndexHeader.lastFrame(shm: shm))
            #expect(second > first)
        }
    }

    private func waitUntil(_ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(5)
        while !condition() {
            #expect(ContinuousClock.now < deadline, "condition not reached within 5 s")
            if ContinuousClock.now >= deadline { return }
            try await Task.sleep(for: .milliseconds(2))
        }
    }
}
