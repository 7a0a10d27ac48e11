import GRDBSQLite

/// A connection of its own that copies the write-ahead log back into the database
/// file (a passive checkpoint), so the bus's writer does not have to.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses
/// `wal_autocheckpoint`, on the writer thread: it copies the log into the database
/// file and syncs that file, and on this machine's disk the sync of a growing file
/// takes 2–7 ms, during which every ack waits. A passive checkpoint never waits for
/// the writer nor blocks it; the writer keeps appending to the log meanwhile.
///
/// All the pointer code of the checkpointer is here.
struct WALCheckpoint: ~Copyable {
    private let db: OpaquePointer

    /// Opens `path` read-write without creating it; nil when it cannot be opened.
    init?(path: String) {
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX
        guard sqlite3_open_v2(path, &handle, flags, nil) == SQLITE_OK, let handle else {
            sqlite3_close_v2(handle)
            return nil
        }
        // It only checkpoints: never wait for a lock (a passive checkpoint does not
        // anyway) and never run an automatic checkpoint of its own.
        sqlite3_busy_timeout(handle, 0)
        sqlite3_wal_autocheckpoint(handle, 0)
        // A connection that has not read anything has not opened the WAL yet, and
        // a checkpoint on it copies nothing: read the schema version once.
        guard sqlite3_exec(handle, "PRAGMA schema_version", nil, nil, nil) == SQLITE_OK else {
            sqlite3_close_v2(handle)
            return nil
        }
        db = handle
    }

    deinit {
        sqlite3_close_v2(db)
    }

    /// Copies as much of the log as no reader still needs; false when SQLite reported
    /// an error (another checkpoint running counts as busy, not an error).
    @discardableResult
    func run() -> Bool {
        var logFrames: Int32 = 0
        var copied: Int32 = 0
        let rc = sqlite3_wal_checkpoint_v2(db, nil, SQLITE_CHECKPOINT_PASSIVE, &logFrames, &copied)
        return rc == SQLITE_OK || rc == SQLITE_BUSY
    }
}
