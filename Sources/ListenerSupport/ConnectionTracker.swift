import NIOCore
import Synchronization

/// The open connections, so shutdown can reach each one and max_connections holds.
public final class ConnectionTracker: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])
    private let limit: Int

    public init(limit: Int) { self.limit = limit }

    /// Registers `channel`; false when the limit is reached.
    public func add(_ channel: any Channel) -> Bool {
        channels.withLock { map in
            guard map.count < limit else { return false }
            map[ObjectIdentifier(channel)] = channel
            return true
        }
    }

    public func remove(_ channel: any Channel) {
        _ = channels.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    public var all: [any Channel] { channels.withLock { Array($0.values) } }

    /// Shutdown: sends `event` down every open connection's pipeline (its handler says
    /// goodbye the protocol's way), waits up to `grace` for them to close, then closes
    /// what is left. Returns how many connections there were.
    @discardableResult
    public func closeAll(sending event: some Sendable, grace: Duration) async -> Int {
        let channels = all
        for channel in channels {
            channel.pipeline.fireUserInboundEventTriggered(event)
        }
        // Each connection is closed at the deadline on its own loop if it has not gone by then:
        // a connection that never closes by itself (a peer that does not read its goodbye)
        // cannot hold up the others or the shutdown. (A task group racing `closeFuture`
        // against a sleep would wait for `closeFuture` anyway: it cannot be cancelled.)
        let nanos = Int64(grace.components.seconds) * 1_000_000_000 + grace.components.attoseconds / 1_000_000_000
        let deadline = NIODeadline.now() + .nanoseconds(max(nanos, 0))
        let timers = channels.map { channel in
            channel.eventLoop.scheduleTask(deadline: deadline) { channel.close(promise: nil) }
        }
        for channel in channels {
            try? await channel.closeFuture.get()
        }
        for timer in timers { timer.cancel() }
        return channels.count
    }
}

