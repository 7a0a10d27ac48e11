import GRDB
import GRDBSQLite
import SwitchboardCore

/// The hot insert of ``SQLiteStore/append(_:)``, bound through SQLite's C API.
///
/// Binding through GRDB's `StatementArguments` boxes every column into a
/// `DatabaseValue` and cost about as much CPU as SQLite's own insert work; this
/// binds the eleven columns directly. All the pointer code of the store is here,
/// and it lives no longer than one `append` transaction (its statement is the
/// connection's cached one).
struct EnvelopeInsert {
    /// SQLite copies bound text before the call returns.
    private static let transient = unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)

    private let db: Database
    private let statement: Statement

    /// Takes `sql` (the 11-column envelope insert) from `db`'s statement cache: it is
    /// compiled once per connection.
    init(_ db: Database, sql: String) throws {
        self.db = db
        self.statement = try db.cachedStatement(sql: sql)
    }

    /// Inserts one row; throws the database's error (a constraint, a full disk…).
    func insert(_ envelope: Envelope, attrs: String?) throws {
        let handle = statement.sqliteStatement
        sqlite3_reset(handle)
        var code = bind(1, envelope.room.rawValue)
        code |= sqlite3_bind_int64(handle, 2, Int64(truncatingIfNeeded: envelope.seq))
        code |= bind(3, envelope.id)
        code |= sqlite3_bind_int64(handle, 4, envelope.ts)
        code |= bind(5, envelope.from.user.rawValue)
        code |= bind(6, envelope.from.display)
        code |= bind(7, envelope.from.via.rawValue)
        code |= bind(8, envelope.kind.rawValue)
        code |= bind(9, envelope.body)
        code |= bind(10, attrs)
        code |= bind(11, envelope.clientID)
        guard code == SQLITE_OK else { throw error(sqlite3_errcode(db.sqliteConnection)) }
        let step = sqlite3_step(handle)
        // Reset right away: the cached statement outlives the transaction, and one left
        // un-reset stays active until its next use.
        let failure = step == SQLITE_DONE ? nil : error(step)
        sqlite3_reset(handle)
        if let failure { throw failure }
    }

    private func bind(_ index: Int32, _ text: String?) -> Int32 {
        let handle = statement.sqliteStatement
        guard var text else { return sqlite3_bind_null(handle, index) }
        return text.withUTF8 { bytes in
            guard let base = bytes.baseAddress, bytes.count > 0 else {
                // A non-null pointer for "", so SQLite stores '' rather than NULL.
                return sqlite3_bind_text(handle, index, "", 0, Self.transient)
            }
            return base.withMemoryRebound(to: CChar.self, capacity: bytes.count) {
                sqlite3_bind_text(handle, index, $0, Int32(bytes.count), Self.transient)
            }
        }
    }

    private func error(_ code: Int32) -> DatabaseError {
        let message = sqlite3_errmsg(db.sqliteConnection).map { String(cString: $0) } ?? "SQLite error \(code)"
        return DatabaseError(resultCode: ResultCode(rawValue: code), message: message, sql: statement.sql)
    }
}
