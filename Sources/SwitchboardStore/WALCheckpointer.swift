import Foundation
import GRDB
import Logging
import Synchronization

/// Runs the WAL checkpoints of a ``SQLiteStore`` on a thread of its own.
///
/// By default SQLite checkpoints inside the commit that crosses
/// `wal_autocheckpoint` pages, and with `synchronous = NORMAL` a checkpoint
/// fsyncs the WAL and the database file: the bus's writer thread would stall
/// for milliseconds every few thousand envelopes. Here a separate connection
/// (the one exception to "one pool per file") runs PASSIVE checkpoints, which
/// never block the writer, and the writer's own automatic checkpoint is pushed
/// far out so it only triggers if this thread falls far behind.
public final class WALCheckpointer: Sendable {
    /// The writer's fallback `wal_autocheckpoint` (pages) while this runs.
    public static let writerFallbackPages = 20_000

    private let queue: DatabaseQueue
    private let interval: Duration
    private let logger: Logger
    private let stopping = Mutex(false)
    private let wakeup = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)

    /// Opens the checkpoint connection to `store`'s file and starts the thread.
    public init(store: SQLiteStore, interval: Duration = .milliseconds(250), logger: Logger = Logger(label: "switchboard.store")) throws {
        var configuration = Configuration()
        configuration.label = "switchboard.checkpointer"
        configuration.busyMode = .timeout(Double(SQLiteStore.busyTimeoutMillis) / 1000)
        self.queue = try DatabaseQueue(path: store.path, configuration: configuration)
        self.interval = interval
        self.logger = logger
        try store.pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA wal_autocheckpoint = \(Self.writerFallbackPages)")
        }
        let thread = Thread { [self] in self.loop() }
        thread.name = "switchboard-checkpointer"
        thread.start()
    }

    private func loop() {
        let nanos = Int(interval.components.seconds) * 1_000_000_000 + Int(interval.components.attoseconds / 1_000_000_000)
        while !stopping.withLock({ $0 }) {
            _ = wakeup.wait(timeout: .now() + .nanoseconds(nanos))
            checkpoint()
        }
        finished.signal()
    }

    private func checkpoint() {
        do {
            try queue.writeWithoutTransaction { db in
                _ = try db.checkpoint(.passive)
            }
        } catch {
            logger.warning("WAL checkpoint failed", metadata: ["error": "\(error)"])
        }
    }

    /// Runs a last checkpoint and stops the thread. Idempotent.
    public func stop() {
        let first = stopping.withLock { stop -> Bool in
            if stop { return false }
            stop = true
            return true
        }
        guard first else { return }
        wakeup.signal()
        finished.wait()
    }
}
