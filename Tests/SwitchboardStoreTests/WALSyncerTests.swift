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

    /// Past `checkpointFrames` uncopied frames the syncer copies the log back into the
    /// database from its own connection, nothing is lost, and the writer's automatic
    /// checkpoint waits for `writerCheckpointFrames` meanwhile (SQLite's 1,000 again after stop()).
    @Test func theSyncerCheckpointsTheLogOffTheWriter() async throws {
        try await withStore { store, _ in
            let syncer = WALSyncer(store: store, interval: .milliseconds(1), minFrames: 1, checkpointFrames: 20)
            let whileRunning = try store.queryRaw("PRAGMA wal_autocheckpoint")
            #expect(whileRunning == [[String(WALSyncer.writerCheckpointFrames)]])
            func databaseBytes() -> Int {
                ((try? FileManager.default.attributesOfItem(atPath: store.path))?[.size] as? Int) ?? 0
            }
            let before = databaseBytes()
            for batch in 0..<40 {
                try store.append((1...50).map { envelope("lobby", UInt64(batch * 50 + $0)) })
            }
            try await waitUntil { syncer.checkpointCount >= 1 }
            // The writer's own checkpoint waits for 8,192 frames, far more than written here:
            // only the syncer's checkpoint can have copied the rows into the database file.
            try await waitUntil { databaseBytes() > before + 50 * 4096 }
            syncer.stop()
            let afterStop = try store.queryRaw("PRAGMA wal_autocheckpoint")
            #expect(afterStop == [["1000"]])
            #expect(try store.loadSequences()[room("lobby")] == 2_000)
            let newest = try await store.messages(in: room("lobby"), before: nil, after: nil, limit: 2)
            #expect(newest.map(\.seq) == [1_999, 2_000])
        }
    }

    /// Without checkpoints of its own it leaves the writer's automatic checkpoint alone.
    @Test func checkpointFramesZeroLeavesCheckpointsToTheWriter() async throws {
        try await withStore { store, _ in
            let syncer = WALSyncer(store: store, interval: .milliseconds(1), checkpointFrames: 0)
            defer { syncer.stop() }
            let setting = try store.queryRaw("PRAGMA wal_autocheckpoint")
            #expect(setting == [["1000"]])
        }
    }

    /// The WAL index's frame counter, read at the offset SQLite documents, follows the commits.
    @Test func theFrameCounterGrowsWithCommits() async throws {
        try await withStore { store, _ in
            try store.append([envelope("lobby", 1)])
            let shm = open(store.path + "-shm", O_RDONLY)
            #expect(shm >= 0)
            defer { close(shm) }
            let first = try #require(WALIndexHeader.frames(shm: shm)?.last)
            #expect(first > 0)
            try store.append((2...200).map { envelope("lobby", UInt64($0)) })
            let second = try #require(WALIndexHeader.frames(shm: shm)?.last)
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
