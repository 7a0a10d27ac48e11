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
}
