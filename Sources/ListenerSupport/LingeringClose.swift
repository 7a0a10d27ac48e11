import NIOCore

extension ChannelHandlerContext {
    /// How long a connection that is being closed keeps draining what its peer still sends.
    public static let defaultCloseLinger = TimeAmount.seconds(3)

    /// Writes and flushes `data` (a goodbye: an error, a stream footer), then closes the
    /// connection so that the peer reads every byte of it (see ``closeLingering(linger:)``).
    public func writeAndCloseLingering(_ data: NIOAny, linger: TimeAmount = defaultCloseLinger) {
        writeAndFlush(data, promise: nil)
        closeLingering(linger: linger)
    }

    /// Closes the connection once what was written has gone out, without a reset.
    ///
    /// Closing a socket while input is unread makes the kernel answer with a reset, and a reset
    /// throws away whatever the peer had not read yet — the goodbye explaining the close among
    /// it, so a client still sending (a flood, a huge stanza) would only see "connection reset".
    /// Instead the output side is shut once pending writes are out (a FIN; close_notify under
    /// TLS), input keeps being read, and the socket closes once the peer closes its side or at
    /// the latest `linger` from now — also when the peer does not read and the writes never
    /// drain. The handler must drop what it reads from here on, and close the channel when it
    /// sees `ChannelEvent.inputClosed` if the channel allows remote half-closure.
    public func closeLingering(linger: TimeAmount = defaultCloseLinger) {
        let timer = eventLoop.assumeIsolated().scheduleTask(in: linger) { self.close(promise: nil) }
        channel.closeFuture.whenComplete { _ in timer.cancel() }
        channel.setOption(.autoRead, value: true).whenFailure { _ in }
        close(mode: .output).assumeIsolated().whenFailure { _ in self.close(promise: nil) }
    }
}
