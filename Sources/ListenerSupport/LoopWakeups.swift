import NIOCore
import Synchronization

/// A connection whose session outbox an event loop drains.
public protocol OutboxDrainer: AnyObject {
    /// Called on the connection's event loop: take the session's events and write them.
    func drainOutbox()
}

/// Coalesces "your outbox has events" signals per event loop.
///
/// The bus thread fans one envelope out to many sessions; waking an event loop
/// once per session would cost one cross-thread wakeup (a syscall) each. Here a
/// signal only queues the connection, and the loop is woken once per burst to
/// drain every queued connection.
public final class LoopWakeups: Sendable {
    private let eventLoop: any EventLoop
    private let ready = Mutex<(scheduled: Bool, handlers: [NIOLoopBound<any OutboxDrainer>])>((false, []))

    public init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Queues `handler` for a drain on its loop; wakes the loop only if no drain is pending.
    public func signal(_ handler: NIOLoopBound<any OutboxDrainer>) {
        let schedule = ready.withLock { state -> Bool in
            state.handlers.append(handler)
            if state.scheduled { return false }
            state.scheduled = true
            return true
        }
        guard schedule else { return }
        eventLoop.execute { self.run() }
    }

    private func run() {
        let handlers = ready.withLock { state -> [NIOLoopBound<any OutboxDrainer>] in
            state.scheduled = false
            defer { state.handlers.removeAll(keepingCapacity: true) }
            return state.handlers
        }
        for handler in handlers { handler.value.drainOutbox() }
    }
}

/// One ``LoopWakeups`` per event loop of a group.
public final class LoopWakeupTable: Sendable {
    private let table: [ObjectIdentifier: LoopWakeups]

    public init(group: any EventLoopGroup) {
        var table: [ObjectIdentifier: LoopWakeups] = [:]
        for loop in group.makeIterator() {
            table[ObjectIdentifier(loop)] = LoopWakeups(eventLoop: loop)
        }
        self.table = table
    }

    /// The coalescer of `eventLoop` (a fresh one for a loop outside the group).
    public func wakeups(for eventLoop: any EventLoop) -> LoopWakeups {
        table[ObjectIdentifier(eventLoop)] ?? LoopWakeups(eventLoop: eventLoop)
    }
}
