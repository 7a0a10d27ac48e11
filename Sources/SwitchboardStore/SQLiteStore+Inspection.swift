import Foundation
import GRDB

/// Raw SQL access for the tests (`@testable import`), so they can check the schema and
/// its constraints without importing GRDB themselves. Not part of the public API.
extension SQLiteStore {
    /// Runs `sql` (one or more statements) in a write transaction.
    func executeRaw(_ sql: String) throws {
        try pool.write { db in try db.execute(sql: sql) }
    }

    /// Runs the query `sql` on the writer connection (so `PRAGMA`s report the writer's
    /// settings) and renders every value as text: integers in decimal, blobs in hex,
    /// NULL as nil.
    func queryRaw(_ sql: String) throws -> [[String?]] {
        try pool.writeWithoutTransaction { db in
            try Row.fetchAll(db, sql: sql).map { row in
                row.databaseValues.map { value -> String? in
                    switch value.storage {
                    case .null: return nil
                    case .int64(let int): return String(int)
                    case .double(let double): return String(double)
                    case .string(let string): return string
                    case .blob(let data): return data.map { String(format: "%02x", $0) }.joined()
                    }
                }
            }
        }
    }
}
