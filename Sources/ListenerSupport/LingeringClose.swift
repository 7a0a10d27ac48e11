import NIOCore

extension ChannelHandlerContext {
    /// How long a connection that is being closed keeps draining what its peer still sends.
    public static let defaultCloseLinger = TimeAmount.seconds(3)

    /// Writes and flushes `data` (a goodbye: an error, a stream footer), then closes the
    /// connection so that the peer reads every byte of it.
    ///
    /// Closing a socket while input is unread makes the kernel answer with a reset, and a reset
    /// throws away whatever the peer had not read yet — the goodbye explaining the close among
    /// it, so a client still sending (a flood, a huge stanza) would only see "connection reset".
    /// Instead the output side is shut (a FIN after the goodbye; close_notify under TLS), input
    /// keeps being read, and the socket closes once the peer closes its side or at the latest
    /// `linger` from now — also when the peer does not read and the goodbye never drains.
    /// The handler must drop what it reads from here on, and close the channel when it sees
    /// `ChannelEvent.inputClosed` if the channel allows remote half-closure.
    public func writeAndCloseLingering(_ data: NIOAny, linger: TimeAmount = defaultCloseLinger) {
        let timer = eventLoop.assumeIsolated().scheduleTask(in: linger) { self.close(promise: nil) }
        channel.closeFuture.whenComplete { _ in timer.cancel() }
        channel.setOption(.autoRead, value: true).whenFailure { _ in }
        writeAndFlush(data).assumeIsolated().whenComplete { result in
            guard case .success = result else { return self.close(promise: nil) }
            self.close(mode: .output).assumeIsolated().whenFailure { _ in self.close(promise: nil) }
        }
    }
}
