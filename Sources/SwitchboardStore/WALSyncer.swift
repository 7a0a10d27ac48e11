import Foundation
import SwitchboardCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Keeps the write-ahead log's dirty pages few by syncing it from a thread of its own,
/// and copies it back into the database file (checkpoints) from there too.
///
/// With `synchronous = NORMAL` SQLite never syncs the WAL on commit; it syncs it
/// (and the database file) inside the commit that triggers a checkpoint, on the
/// bus's writer thread. That sync then flushes everything written since the last
/// checkpoint, a few milliseconds during which every ack waits. Syncing the WAL
/// every few milliseconds from here leaves the checkpoint little to flush, and
/// running most checkpoints here (``WALCheckpoint``, passive: it never blocks the
/// writer) takes the copy and the database file's sync out of the commits as well.
/// The syncs take no SQLite lock and only add syncs, and a checkpoint is the one
/// SQLite would run, so durability is unchanged.
///
/// An unchanged WAL (same size and modification time as at the last sync) is not
/// synced again, and while it stays unchanged the thread polls less and less often
/// (up to ``maxIdleBackoff`` intervals), so an idle gateway neither flushes the
/// disk nor wakes a core hundreds of times a second. A changed one is synced once
/// `minFrames` pages were written since the last sync (every interval under load), or
/// `maxDelay` after the last sync: a trickle of messages costs a few syncs a second,
/// not one per message.
public final class WALSyncer: Sendable {
    private let walPath: String
    private let shmPath: String
    private let interval: Duration
    private let minFrames: Int
    private let maxDelay: Duration
    private let checkpointFrames: Int
    private let store: SQLiteStore
    private let checkpoints = Atomic<Int>(0)
    private let stopping = Mutex(false)
    private let syncs = Atomic<Int>(0)
    private let wakeup = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)

    /// Starts syncing `store`'s WAL, checking every `interval` (`history.wal_sync_interval_ms`).
    ///
    /// - Parameters:
    ///   - minFrames: Unsynced WAL frames (pages) that trigger a sync. Under load this is
    ///     reached within an interval, so the WAL is synced every interval; a trickle of
    ///     small commits is synced in one go instead of once per commit.
    ///   - maxDelay: A WAL written to is synced at the latest this long after the last sync,
    ///     however little was written.
    ///   - checkpointFrames: Frames not yet copied back into the database file that make
    ///     this thread run a passive checkpoint (``WALCheckpoint``); 0 leaves checkpoints
    ///     to the writer. While it runs, the writer's own automatic checkpoint waits for
    ///     ``writerCheckpointFrames`` instead of SQLite's 1,000: it is then the fallback
    ///     that lets the log start over, since a log that is written to all the time is
    ///     rarely found fully copied.
    public init(store: SQLiteStore, interval: Duration = .milliseconds(2), minFrames: Int = 16,
                maxDelay: Duration = .seconds(1), checkpointFrames: Int = 1_000) {
        self.walPath = store.path + "-wal"
        self.shmPath = store.path + "-shm"
        self.interval = interval
        self.minFrames = max(1, minFrames)
        self.maxDelay = maxDelay
        self.checkpointFrames = max(0, checkpointFrames)
        self.store = store
        if checkpointFrames > 0 {
            try? store.setWriterAutocheckpoint(frames: Self.writerCheckpointFrames)
        }
        Thread.startNamed("swb-walsync") { [self] in self.loop() }
    }

    /// How many times the base interval the thread may sleep while the WAL is unchanged
    /// or changes by less than `minFrames` between looks.
    static let maxIdleBackoff = 64

    /// The writer's `wal_autocheckpoint` while this thread checkpoints (32 MiB of 4 KiB pages).
    public static let writerCheckpointFrames = 8_192

    private func loop() {
        let (seconds, attoseconds) = interval.components
        let nanos = max(1, Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
        var fd: Int32 = -1
        var shm: Int32 = -1
        var opened = ContinuousClock.now
        var synced: WALState?
        var syncedFrame: UInt32 = 0
        var lastSync = ContinuousClock.now
        var backoff = 1
        var checkpointer: WALCheckpoint? = nil
        // After a connection could not be opened or a checkpoint failed, wait before trying
        // again (the writer's own checkpoint still bounds the log meanwhile).
        var checkpointRetry = ContinuousClock.now
        while !stopping.withLock({ $0 }) {
            _ = wakeup.wait(timeout: .now() + .nanoseconds(nanos * backoff))
            // Reopened about once a second: SQLite may remove and recreate the files.
            if fd < 0 || ContinuousClock.now - opened > .seconds(1) {
                if fd >= 0 { close(fd) }
                if shm >= 0 { close(shm) }
                fd = open(walPath, O_RDONLY | O_CLOEXEC)
                shm = open(shmPath, O_RDONLY | O_CLOEXEC)
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
            // Without a readable frame counter, every change counts as enough.
            let frames = WALIndexHeader.frames(shm: shm)
            let frame = frames?.last
            if let frame, let state, synced?.inode == state.inode {
                // The WAL restarts from frame 1 after a checkpoint.
                let written = frame >= syncedFrame ? Int(frame - syncedFrame) : Int(frame)
                if written < minFrames && ContinuousClock.now - lastSync < maxDelay {
                    // A trickle: look again later rather than every interval.
                    backoff = min(backoff * 2, Self.maxIdleBackoff)
                    continue
                }
            }
            backoff = 1
            _ = fdatasync(fd)
            syncs.add(1, ordering: .relaxed)
            synced = state
            syncedFrame = frame ?? 0
            lastSync = .now
            // Copy the log back from here once enough of it waits, rather than in a commit.
            // Close to the writer's own checkpoint, copy whatever waits: that checkpoint
            // (the one that lets the log start over) then has almost nothing left to copy.
            let nearWriterCheckpoint = Int(frames?.last ?? 0) >= Self.writerCheckpointFrames - checkpointFrames
            if checkpointFrames > 0, let frames, frames.last > frames.backfilled,
               Int(frames.last - frames.backfilled) >= (nearWriterCheckpoint ? 1 : checkpointFrames) {
                if checkpointer == nil, ContinuousClock.now >= checkpointRetry {
                    checkpointer = WALCheckpoint(path: store.path)
                    if checkpointer == nil { checkpointRetry = .now + .seconds(1) }
                }
                if let ran = checkpointer?.run() {
                    checkpoints.add(1, ordering: .relaxed)
                    if !ran {
                        checkpointer = nil
                        checkpointRetry = .now + .seconds(1)
                    }
                }
            }
        }
        checkpointer = nil
        if checkpointFrames > 0 {
            try? store.setWriterAutocheckpoint(frames: 1_000)
        }
        if fd >= 0 { close(fd) }
        if shm >= 0 { close(shm) }
        finished.signal()
    }

    /// How many times the WAL has been synced so far.
    public var syncCount: Int { syncs.load(ordering: .relaxed) }

    /// How many checkpoints this thread has run so far.
    public var checkpointCount: Int { checkpoints.load(ordering: .relaxed) }

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

/// The frame counters of SQLite's WAL index (the `-shm` file; https://www.sqlite.org/walformat.html):
/// `mxFrame` from the "WAL-Index Header Format", a native-endian u32 at offset 16, valid
/// when the `isInit` byte at offset 12 is 1; `nBackfill`, the first u32 of the "Checkpoint
/// Info" at offset 96. Read without locks: a torn read only changes when the next sync or
/// checkpoint happens, never what SQLite writes.
enum WALIndexHeader {
    /// The log's last frame and how many of its frames are copied back into the database.
    static func frames(shm: Int32) -> (last: UInt32, backfilled: UInt32)? {
        guard shm >= 0 else { return nil }
        var header = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0),
                      UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))  // the first 104 bytes
        let read = withUnsafeMutableBytes(of: &header) { pread(shm, $0.baseAddress, $0.count, 0) }
        guard read == 104 else { return nil }
        return withUnsafeBytes(of: header) { bytes in
            guard bytes[12] == 1 else { return nil }
            return (bytes.loadUnaligned(fromByteOffset: 16, as: UInt32.self),
                    bytes.loadUnaligned(fromByteOffset: 96, as: UInt32.self))
        }
    }
}
