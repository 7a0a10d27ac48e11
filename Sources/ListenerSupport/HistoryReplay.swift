import NIOCore
import SwitchboardCore

/// The envelopes a `join` with `since` missed, `(after, through]` of a room, read from history
/// page by page off the event loop and handed to `write` on the channel's loop, in order.
///
/// The next page is read only once the channel is writable again (its outbound bytes below
/// NIO's high-water mark), so a client far behind, or one that does not read, costs one page of
/// memory rather than the room's whole history.
public struct HistoryReplay {
    /// Envelopes per page: at most `limits.max_body_bytes` each, so 100 bound a page to ~1.6 MB.
    public static let pageSize = 100
    /// How often a replay waiting for the peer to read looks at the channel again.
    static let writabilityRecheck = TimeAmount.milliseconds(5)

    let bus: any MessageBus
    let room: RoomName
    let reader: UserName
    let through: UInt64
    let channel: any Channel
    /// True once the connection is closing: the replay stops without calling `finish` (as it
    /// does once the channel is closed).
    let isCancelled: () -> Bool
    /// A page of envelopes, in seq order.
    let write: ([Envelope]) -> Void
    /// The replay is over: every page was written, or reading one failed with this error.
    let finish: (SwitchboardError?) -> Void

    /// Starts the replay; must be called on `channel`'s event loop.
    public static func start(
        bus: any MessageBus, room: RoomName, reader: UserName, after: UInt64, through: UInt64, channel: any Channel,
        isCancelled: @escaping () -> Bool, write: @escaping ([Envelope]) -> Void,
        finish: @escaping (SwitchboardError?) -> Void
    ) {
        HistoryReplay(bus: bus, room: room, reader: reader, through: through, channel: channel,
                      isCancelled: isCancelled, write: write, finish: finish)
            .readPage(after: after)
    }

    private func readPage(after cursor: UInt64) {
        let bus = self.bus, room = self.room, reader = self.reader, through = self.through
        channel.eventLoop.makeFutureWithTask { () -> Result<[Envelope], SwitchboardError> in
            do throws(SwitchboardError) {
                return .success(try await bus.history(of: room, reader: reader, before: through + 1, after: cursor,
                                                      limit: Self.pageSize))
            } catch {
                return .failure(error)
            }
        }.assumeIsolated().whenSuccess { result in
            guard channel.isActive, !isCancelled() else { return }
            switch result {
            case .failure(let error):
                finish(error)
            case .success(let page):
                write(page)
                guard let last = page.last, last.seq < through else { return finish(nil) }
                whenWritable { readPage(after: last.seq) }
            }
        }
    }

    private func whenWritable(_ next: @escaping () -> Void) {
        guard !channel.isWritable else { return next() }
        channel.eventLoop.assumeIsolated().scheduleTask(in: Self.writabilityRecheck) {
            // A closed channel is never writable again.
            guard channel.isActive, !isCancelled() else { return }
            whenWritable(next)
        }
    }
}
