import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Keeps the write-ahead log's dirty pages few by syncing it from a thread of its own.
///
/// With `synchronous = NORMAL` SQLite never syncs the WAL on commit; it syncs it
/// (and the database file) inside the commit that triggers a checkpoint, on the
/// bus's writer thread. That sync then flushes everything written since the last
/// checkpoint, a few milliseconds during which every ack waits. Syncing the WAL
/// every few milliseconds from here leaves the checkpoint little to flush.
/// It takes no SQLite lock and only adds syncs, so durability is unchanged.
///
/// An unchanged WAL (same size and modification time as at the last sync) is not
/// synced again, and while it stays unchanged the thread polls less and less often
/// (up to ``maxIdleBackoff`` intervals), so an idle gateway neither flushes the
/// disk nor wakes a core hundreds of times a second.
public final class WALSyncer: Sendable {
    private let walPath: String
    private let interval: Duration
    private let stopping = Mutex(false)
    private let syncs = Atomic<Int>(0)
    private let wakeup = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)

    /// Starts syncing `store`'s WAL every `interval` (`history.wal_sync_interval_ms`).
    public init(store: SQLiteStore, interval: Duration = .milliseconds(2)) {
        self.walPath = store.path + "-wal"
        self.interval = interval
        let thread = Thread { [self] in self.loop() }
        thread.name = "switchboard-walsync"
        thread.start()
    }

    /// How many times the base interval the thread may sleep while the WAL is unchanged.
    static let maxIdleBackoff = 64

    private func loop() {
        let (seconds, attoseconds) = interval.components
        let nanos = max(1, Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
        var fd: Int32 = -1
        var opened = ContinuousClock.now
        var synced: WALState?
        var backoff = 1
        while !stopping.withLock({ $0 }) {
            _ = wakeup.wait(timeout: .now() + .nanoseconds(nanos * backoff))
            // Reopened about once a second: SQLite may remove and recreate the file.
            if fd < 0 || ContinuousClock.now - opened > .seconds(1) {
                if fd >= 0 { close(fd) }
                fd = open(walPath, O_RDONLY | O_CLOEXEC)
                opened = .now
            }
            guard fd >= 0 else { continue }
            // An idle gateway must not flush the disk 500 times a second: sync only
            // when the WAL was written since the last sync, and poll less while it is not.
            let state = WALState(fd: fd)
            if let state, state == synced {
                backoff = min(backoff * 2, Self.maxIdleBackoff)
                continue
            }
            backoff = 1
            _ = fdatasync(fd)
            syncs.add(1, ordering: .relaxed)
            synced = state
        }
        if fd >= 0 { close(fd) }
        finished.signal()
    }

    /// How many times the WAL has been synced so far.
    public var syncCount: Int { syncs.load(ordering: .relaxed) }

    /// Stops the thread. Idempotent.
    public func stop() {
        let first = stopping.withLock { stop -> Bool in
            defer { stop = true }
            return !stop
        }
        guard first else { return }
        wakeup.signal()
        finished.wait()
    }
}

/// What tells a written (or recreated) WAL from an unchanged one: its inode, size
/// and modification time.
struct WALState: Equatable {
    let inode: UInt64
    let size: Int
    let seconds: Int
    let nanoseconds: Int

    init?(fd: Int32) {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        inode = UInt64(st.st_ino)
        size = Int(st.st_size)
        seconds = Int(st.st_mtim.tv_sec)
        nanoseconds = Int(st.st_mtim.tv_nsec)
    }
}
