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
}

