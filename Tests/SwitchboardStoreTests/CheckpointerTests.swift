import Foundation
import SwitchboardCore
import Testing
@testable import SwitchboardStore

@Suite struct CheckpointerTests {
    /// With the checkpointer on, the writer's own checkpoints are pushed out and the
    /// background connection keeps the WAL checkpointed, without losing a row.
    @Test func backgroundCheckpointsKeepTheWALBackfilled() async throws {
        try await withStore { store, _ in
            let checkpointer = try WALCheckpointer(store: store, interval: .milliseconds(20))
            #expect(try store.queryRaw("PRAGMA wal_autocheckpoint") == [["\(WALCheckpointer.writerFallbackPages)"]])
            for batch in 0..<20 {
                try store.append((1...500).map { envelope("lobby", UInt64(batch * 500 + $0)) })
            }
            try await Task.sleep(for: .milliseconds(200))
            checkpointer.stop()
            checkpointer.stop()
            // A passive checkpoint now finds nothing left to copy.
            let result = try store.queryRaw("PRAGMA wal_checkpoint(PASSIVE)")
            #expect(result.first?[1] == result.first?[2])
            #expect(try store.loadSequences()[room("lobby")] == 10_000)
            let newest = try await store.messages(in: room("lobby"), before: nil, after: nil, limit: 1)
            #expect(newest.map(\.seq) == [10_000])
        }
    }
}
