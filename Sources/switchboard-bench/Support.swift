import Dispatch
import Foundation
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Nanoseconds of `CLOCK_MONOTONIC`: every latency in this tool is a difference of two
/// readings taken in the same process.
@inline(__always)
func monoNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Sleeps until `deadline` (monotonic nanoseconds); returns at once when it has passed.
func sleepUntil(_ deadline: UInt64) {
    let now = monoNanos()
    guard deadline > now else { return }
    let delta = deadline - now
    var request = timespec(tv_sec: Int(delta / 1_000_000_000), tv_nsec: Int(delta % 1_000_000_000))
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}

/// A thread that can be joined.
final class BenchThread: Sendable {
    private let done = DispatchSemaphore(value: 0)

    init(name: String, _ body: @escaping @Sendable () -> Void) {
        let done = self.done
        let thread = Thread {
            body()
            done.signal()
        }
        thread.name = name
        thread.stackSize = 1 << 20
        thread.start()
    }

    func join() { done.wait() }
}

/// Latency percentiles of a set of samples in nanoseconds, reported in microseconds.
struct LatencySummary {
    var count: Int
    var p50: Double
    var p90: Double
    var p99: Double
    var p999: Double
    var max: Double
    var mean: Double

    init(nanos samples: [UInt64]) {
        count = samples.count
        guard !samples.isEmpty else {
            p50 = 0; p90 = 0; p99 = 0; p999 = 0; max = 0; mean = 0
            return
        }
        let sorted = samples.sorted()
        func pct(_ q: Double) -> Double {
            // Nearest-rank percentile.
            let rank = Swift.max(1, Int((q * Double(sorted.count)).rounded(.up)))
            return Double(sorted[Swift.min(rank, sorted.count) - 1]) / 1000
        }
        p50 = pct(0.50)
        p90 = pct(0.90)
        p99 = pct(0.99)
        p999 = pct(0.999)
        max = Double(sorted[sorted.count - 1]) / 1000
        var total = 0.0
        for s in sorted { total += Double(s) }
        mean = total / Double(sorted.count) / 1000
    }

    var json: [String: Any] {
        ["count": count, "p50_us": round3(p50), "p90_us": round3(p90), "p99_us": round3(p99),
         "p999_us": round3(p999), "max_us": round3(max), "mean_us": round3(mean)]
    }
}

func round3(_ x: Double) -> Double { (x * 1000).rounded() / 1000 }

/// Runs a load generator on its own event-loop group (one thread per core), shuts the group
/// down whatever happens, and prints the result as JSON.
func runOnGroup(_ load: (MultiThreadedEventLoopGroup) async throws -> [String: Any]) async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
    do {
        let result = try await load(group)
        try? await group.shutdownGracefully()
        emitJSON(result)
    } catch {
        try? await group.shutdownGracefully()
        throw error
    }
}

/// Prints `object` as one line of JSON on stdout (the orchestrator reads it).
func emitJSON(_ object: [String: Any]) {
    do {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        FileHandle.standardOutput.write(data)
        FileHandle.standardOutput.write(Data("\n".utf8))
    } catch {
        FileHandle.standardError.write(Data("cannot encode results: \(error)\n".utf8))
    }
}

/// Progress and diagnostics go to stderr so stdout stays one JSON object.
func note(_ message: String) {
    FileHandle.standardError.write(Data("[bench] \(message)\n".utf8))
}

/// A body of exactly `bytes` printable ASCII bytes.
func makeBody(bytes: Int, prefix: String = "") -> String {
    let filler = "the quick brown fox jumps over the lazy dog 0123456789 "
    var s = prefix
    while s.utf8.count < bytes { s += filler }
    return String(s.utf8.prefix(bytes))!
}

/// A fresh temporary directory; removed by `removeTemporaryDirectory`.
func makeTemporaryDirectory(_ prefix: String) throws -> String {
    let base = ProcessInfo.processInfo.environment["SWB_BENCH_TMP"] ?? NSTemporaryDirectory()
    let path = (base as NSString).appendingPathComponent("\(prefix)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func removeTemporaryDirectory(_ path: String) {
    try? FileManager.default.removeItem(atPath: path)
}

/// How a draining thread learns that there is work.
enum WakeMode: Sendable {
    /// `outboxReady` posts a semaphore the idle thread waits on (a futex wake on the
    /// bus thread whenever the drainer sleeps).
    case signal
    /// `outboxReady` only records readiness; an idle drainer sleeps this many
    /// microseconds and looks again (no wakeup cost on the bus thread).
    case poll(microseconds: Int)
}

/// A wakeup for one waiting thread: `signal` from any thread, `wait` with a timeout.
final class Wakeup: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    let mode: WakeMode

    init(_ mode: WakeMode = .signal) { self.mode = mode }

    func signal() {
        if case .signal = mode { semaphore.signal() }
    }

    func wait(microseconds: Int) {
        switch mode {
        case .signal:
            _ = semaphore.wait(timeout: .now() + .microseconds(microseconds))
        case .poll(let interval):
            sleepUntil(monoNanos() + UInt64(min(interval, microseconds)) * 1000)
        }
    }
}

/// Indices of sessions whose outbox became ready, for one consumer thread.
final class ReadyQueue: Sendable {
    private let items = Mutex<[Int]>([])
    let wakeup: Wakeup

    init(_ mode: WakeMode) { wakeup = Wakeup(mode) }

    func push(_ index: Int) {
        let first = items.withLock { q -> Bool in
            q.append(index)
            return q.count == 1
        }
        if first { wakeup.signal() }
    }

    /// Everything queued so far (possibly nothing).
    func take(into buffer: inout [Int]) {
        buffer.removeAll(keepingCapacity: true)
        items.withLock { q in swap(&q, &buffer) }
    }
}
