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
        let deadline = ContinuousClock.now + grace
        for channel in channels {
            let remaining = deadline - ContinuousClock.now
            if remaining > .zero {
                _ = try? await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await channel.closeFuture.get() }
                    group.addTask { try await Task.sleep(for: remaining) }
                    try await group.next()
                    group.cancelAll()
                }
            }
            try? await channel.close()
        }
        return channels.count
    }
}

