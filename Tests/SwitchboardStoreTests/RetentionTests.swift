import Foundation
import SwitchboardCore
import Testing
@testable import SwitchboardStore

@Suite("Retention")
struct RetentionTests {
    @Test("by age: rows older than now - maxAge go, last_seq stays")
    func byAge() async throws {
        try await withStore { store, _ in
            try store.append((1...10).map { envelope("lobby", $0, ts: Int64($0) * 1_000) })
            try store.append((1...3).map { envelope("dev", $0, ts: 20_000) })
            let before = try store.loadSequences()

            // now 10,000, max age 4,500: ts < 5,500 goes, i.e. seqs 1...5.
            let deleted = try await store.applyRetention(now: 10_000, maxAgeMillis: 4_500, maxPerRoom: nil)
            #expect(deleted == 5)
            #expect(seqs(try await store.messages(in: room("lobby"), before: nil, after: nil, limit: 100)) == Array(6...10))
            #expect(seqs(try await store.messages(in: room("dev"), before: nil, after: nil, limit: 100)) == [1, 2, 3])
            #expect(try store.loadSequences() == before)

            // A row exactly at the cutoff stays.
            #expect(try await store.applyRetention(now: 11_000, maxAgeMillis: 5_000, maxPerRoom: nil) == 0)
            #expect(try await store.applyRetention(now: 11_001, maxAgeMillis: 5_000, maxPerRoom: nil) == 1)

            // Everything old: the room remains, empty, with its last_seq.
            #expect(try await store.applyRetention(now: 1_000_000, maxAgeMillis: 1, maxPerRoom: nil) == 7)
            #expect(try store.loadSequences() == before)
            #expect(try store.roomExists(room("lobby")))

            // The next append continues the sequence.
            try store.append([envelope("lobby", 11)])
            #expect(try store.loadSequences()[room("lobby")] == 11)
        }
    }

    @Test("by count: every room keeps its newest maxPerRoom rows")
    func byCount() async throws {
        try await withStore { store, _ in
            try store.append((1...30).map { envelope("lobby", $0) })
            try store.append((1...4).map { envelope("small", $0) })
            try store.append((1...12).map { envelope("dm.alice.bob", $0) })
            let before = try store.loadSequences()

            let deleted = try await store.applyRetention(now: 0, maxAgeMillis: nil, maxPerRoom: 5)
            #expect(deleted == 25 + 0 + 7)
            #expect(seqs(try await store.messages(in: room("lobby"), before: nil, after: nil, limit: 100)) == Array(26...30))
            #expect(seqs(try await store.messages(in: room("small"), before: nil, after: nil, limit: 100)) == Array(1...4))
            #expect(seqs(try await store.messages(in: room("dm.alice.bob"), before: nil, after: nil, limit: 100)) == Array(8...12))
            #expect(try store.loadSequences() == before)

            // Idempotent.
            #expect(try await store.applyRetention(now: 0, maxAgeMillis: nil, maxPerRoom: 5) == 0)
            // Zero keeps nothing, but the sequences are kept.
            #expect(try await store.applyRetention(now: 0, maxAgeMillis: nil, maxPerRoom: 0) == 14)
            #expect(try store.queryRaw("SELECT count(*) FROM envelopes") == [["0"]])
            #expect(try store.loadSequences() == before)
        }
    }

    @Test("by count after age retention left gaps at the start")
    func byCountAfterAge() async throws {
        try await withStore { store, _ in
            try store.append((1...20).map { envelope("lobby", $0, ts: Int64($0)) })
            #expect(try await store.applyRetention(now: 100, maxAgeMillis: 90, maxPerRoom: 4) == 16)
            #expect(seqs(try await store.messages(in: room("lobby"), before: nil, after: nil, limit: 100)) == Array(17...20))
        }
    }

    @Test("large backlogs are deleted in several chunks, in one call")
    func chunked() async throws {
        try await withStore { store, _ in
            let total = SQLiteStore.retentionChunk * 2 + 123
            var seq: UInt64 = 0
            for start in stride(from: 0, to: total, by: 1_000) {
                let count = min(1_000, total - start)
                try store.append((0..<count).map { _ in
                    seq += 1
                    // Alternate two rooms; each one's seqs run 1, 2, 3…
                    return envelope(seq % 2 == 0 ? "even" : "odd", (seq + 1) / 2, ts: Int64(seq))
                })
            }
            #expect(try store.queryRaw("SELECT count(*) FROM envelopes") == [["\(total)"]])
            // Age retention over more than two chunks, then count retention over the rest.
            let byAge = try await store.applyRetention(now: Int64(total) - 100, maxAgeMillis: 0, maxPerRoom: nil)
            #expect(byAge == total - 101)
            let byCount = try await store.applyRetention(now: 0, maxAgeMillis: nil, maxPerRoom: 10)
            #expect(byCount == 101 - 20)
            #expect(try store.queryRaw("SELECT count(*) FROM envelopes") == [["20"]])
        }
    }

    @Test("count retention of rooms larger than a chunk")
    func chunkedCount() async throws {
        try await withStore { store, _ in
            let perRoom = SQLiteStore.retentionChunk + 1_500
            for name in ["a", "b"] {
                for start in stride(from: 1, through: perRoom, by: 1_000) {
                    try store.append((start...min(start + 999, perRoom)).map { envelope(name, UInt64($0)) })
                }
            }
            #expect(try await store.applyRetention(now: 0, maxAgeMillis: nil, maxPerRoom: 7) == 2 * (perRoom - 7))
            #expect(seqs(try await store.messages(in: room("b"), before: nil, after: nil, limit: 100))
                    == Array(UInt64(perRoom - 6)...UInt64(perRoom)))
        }
    }

    @Test("many small rooms over the limit share chunks")
    func manyRooms() async throws {
        try await withStore { store, _ in
            var batch: [Envelope] = []
            for r in 0..<600 {
                for s in 1...12 { batch.append(envelope("room-\(r)", UInt64(s))) }
            }
            for slice in stride(from: 0, to: batch.count, by: 1_000) {
                try store.append(Array(batch[slice..<min(slice + 1_000, batch.count)]))
            }
            // 600 rooms x 10 rows over the limit = 6,000 rows: more than one chunk.
            #expect(try await store.applyRetention(now: 0, maxAgeMillis: nil, maxPerRoom: 2) == 6_000)
            #expect(try store.queryRaw("SELECT count(*), min(seq) FROM envelopes") == [["1200", "11"]])
        }
    }

    @Test("nothing set deletes nothing; negative limits are refused")
    func arguments() async throws {
        try await withStore { store, _ in
            try store.append((1...3).map { envelope("lobby", $0, ts: 1) })
            #expect(try await store.applyRetention(now: 1_000_000, maxAgeMillis: nil, maxPerRoom: nil) == 0)
            await #expect(throws: SwitchboardError.self) {
                _ = try await store.applyRetention(now: 0, maxAgeMillis: -1, maxPerRoom: nil)
            }
            await #expect(throws: SwitchboardError.self) {
                _ = try await store.applyRetention(now: 0, maxAgeMillis: nil, maxPerRoom: -1)
            }
            #expect(try await store.applyRetention(now: Int64.min, maxAgeMillis: Int64.max, maxPerRoom: nil) == 0)
        }
    }
}
