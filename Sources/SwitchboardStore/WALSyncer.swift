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
public final class WALSyncer: Sendable {
    private let walPath: String
    private let interval: Duration
    private let stopping = Mutex(false)
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

    private func loop() {
        let (seconds, attoseconds) = interval.components
        let nanos = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
        var fd: Int32 = -1
        var ticks = 0
        while !stopping.withLock({ $0 }) {
            _ = wakeup.wait(timeout: .now() + .nanoseconds(nanos))
            // Reopened about once a second: SQLite may remove and recreate the file.
            if fd < 0 || ticks % max(1, 1_000_000_000 / max(nanos, 1)) == 0 {
                if fd >= 0 { close(fd) }
                fd = open(walPath, O_RDONLY | O_CLOEXEC)
            }
            ticks &+= 1
            if fd >= 0 { _ = fdatasync(fd) }
        }
        if fd >= 0 { close(fd) }
        finished.signal()
    }

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
