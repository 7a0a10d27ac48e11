import ListenerSupport
import Logging
import NIOCore
import NIOPosix
import SIPWire
import ServiceLifecycle
import Synchronization
import SwitchboardCore

/// The SIP listener (`[sip]`): UDP and TCP on one port; registrar, stateful proxy,
/// RFC 3428 MESSAGE into rooms and direct messages, call events into `calls.<user>`.
public enum SIPListener {
    public static let descriptor = ListenerDescriptor(section: "sip", via: .sip) { context in
        guard let state = context.sipState else {
            throw SwitchboardError("sip_setup", "the SIP listener needs a store for its bindings")
        }
        return SIPListenerService(context: context, state: state)
    }
}

final class SIPListenerService: ListenerService {
    private let context: ListenerContext
    private let settings: SIPSettings
    private let state: any SIPStateStore
    private let ready = Atomic<Bool>(false)
    private let stopping = Atomic<Bool>(false)
    private let tracker: ConnectionTracker

    init(context: ListenerContext, state: any SIPStateStore) {
        self.context = context
        self.settings = SIPSettings(context.configuration)
        self.state = state
        self.tracker = ConnectionTracker(limit: settings.maxConnections)
    }

    var isReady: Bool { ready.load(ordering: .relaxed) }

    static let datagramsPerRead = 16

    private func bindUDP(loop: any EventLoop, core: NIOLoopBound<SIPCore>, parser: SIPParser) async throws -> any Channel {
        try await DatagramBootstrap(group: loop)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.socketOption(.so_rcvbuf), value: 4 << 20)
            .channelOption(.socketOption(.so_sndbuf), value: 4 << 20)
            // Up to 16 datagrams per `recvmmsg`: the buffer is split evenly between them, so each
            // slot holds the largest datagram (64 KiB each, 1 MiB in all, reused while no
            // datagram of the previous read is still referenced; the handler copies them out).
            .channelOption(.datagramVectorReadMessageCount, value: Self.datagramsPerRead)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: Self.datagramsPerRead * 65_536))
            // Up to 4 such reads per wakeup, answered together (see SIPDatagramHandler).
            .channelOption(.maxMessagesPerRead, value: 4)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(SIPDatagramHandler(core: core, parser: parser))
                }
            }
            .bind(host: settings.bind, port: settings.port)
            .get()
    }

    /// NIO closes a UDP socket on any send error but a refused port (an unreachable network,
    /// a broadcast address…): SIP over UDP would then be gone for everyone. While the listener
    /// runs, such a socket is bound again on the same port (retried each second) and the core
    /// sends through the new one.
    private func rebindWhenClosed(_ udp: any Channel, loop: any EventLoop, core: NIOLoopBound<SIPCore>, parser: SIPParser) {
        udp.closeFuture.whenComplete { _ in
            guard !self.stopping.load(ordering: .relaxed) else { return }
            self.context.logger.error("sip UDP socket closed after a socket error; binding it again",
                                      metadata: ["address": "\(self.settings.bind):\(self.settings.port)"])
            Task {
                while !self.stopping.load(ordering: .relaxed) {
                    do {
                        let fresh = try await self.bindUDP(loop: loop, core: core, parser: parser)
                        try await loop.submit {
                            core.value.transport?.udp = fresh
                            self.rebindWhenClosed(fresh, loop: loop, core: core, parser: parser)
                        }.get()
                        self.context.logger.notice("sip UDP socket bound again")
                        return
                    } catch {
                        try? await Task.sleep(for: .seconds(1))
                    }
                }
            }
        }
    }

    func run() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let loop = group.next()
        let bindings = try await state.sipBindings()
        let memberships = try await state.sipMemberships()
        let settings = self.settings, context = self.context, state = self.state
        let core = try await loop.submit {
            let core = SIPCore(loop: loop, settings: settings, bus: context.bus, accounts: context.accounts,
                               state: state, logger: context.logger)
            return NIOLoopBound(core, eventLoop: loop)
        }.get()

        let parser = SIPParser(limits: settings.limits)
        let udp = try await bindUDP(loop: loop, core: core, parser: parser)
        let tracker = self.tracker
        let tcp = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    SwitchboardMetrics.connectionAccepted(.sip)
                    guard tracker.add(channel) else {
                        SwitchboardMetrics.reject(.sip, reason: .tooManyConnections)
                        channel.close(promise: nil)
                        return
                    }
                    channel.closeFuture.whenComplete { _ in tracker.remove(channel) }
                    try channel.pipeline.syncOperations.addHandler(
                        IdleStateHandler(readTimeout: .seconds(Int64(settings.maxExpires + 60))))
                    try channel.pipeline.syncOperations.addHandler(SIPStreamHandler(core: core, parser: parser))
                }
            }
            .bind(host: settings.bind, port: settings.port)
            .get()

        try await loop.submit {
            let output = SIPOutput(udp: udp)
            core.value.transport = output
            self.rebindWhenClosed(udp, loop: loop, core: core, parser: parser)
            core.value.restoreBindings(bindings)
            core.value.restoreMemberships(memberships)
            core.value.startHousekeeping()
        }.get()
        ready.store(true, ordering: .relaxed)
        context.logger.info("sip listener ready", metadata: [
            "address": "\(settings.bind):\(settings.port)", "transports": "udp,tcp", "domain": "\(settings.domain)",
            "bindings": "\(bindings.count)", "memberships": "\(memberships.count)"])

        try? await gracefulShutdown()

        ready.store(false, ordering: .relaxed)
        stopping.store(true, ordering: .relaxed)
        try? await loop.submit { core.value.flushMemberships() }.get()
        let pending = try? await loop.submit { core.value.takePendingBindingWrites() }.get()
        if let pending, !pending.isEmpty { try? await state.replaceSIPBindings(pending) }
        let current = try? await loop.submit { core.value.transport?.udp }.get()
        try? await current?.close()
        try? await tcp.close()
        for channel in tracker.all { channel.close(promise: nil) }
        context.logger.info("sip listener stopped")
    }
}

/// Where the core's bytes go: the UDP socket, or the TCP connection a peer came in on.
final class SIPOutput: SIPWireOutput {
    /// Replaced if NIO closes the socket after a send error (see `rebindWhenClosed`).
    var udp: any Channel
    var connections: [SIPPeer: any Channel] = [:]
    private var pendingUDP = false

    init(udp: any Channel) {
        self.udp = udp
    }

    func send(_ bytes: [UInt8], to peer: SIPPeer) -> Bool {
        switch peer.transport {
        case .udp:
            // A destination the socket cannot send to would make NIO close it.
            guard Self.mayReach(peer.address, from: udp.localAddress) else { return false }
            let buffer = udp.allocator.buffer(bytes: bytes)
            udp.write(AddressedEnvelope(remoteAddress: peer.address, data: buffer), promise: nil)
            pendingUDP = true
            return true
        case .tcp:
            guard let channel = connections[peer], channel.isActive else { return false }
            channel.writeAndFlush(channel.allocator.buffer(bytes: bytes), promise: nil)
            return true
        }
    }

    /// False for destinations a datagram cannot go to from `local`: an unspecified, broadcast
    /// or multicast address, another address family, or anything but loopback from a socket
    /// bound to loopback.
    static func mayReach(_ destination: SocketAddress, from local: SocketAddress?) -> Bool {
        switch (destination, local) {
        case (.v4(let to), .v4(let from)?):
            // Read as numbers (every UDP send asks): no address text is built.
            let ip = UInt32(bigEndian: to.address.sin_addr.s_addr)
            guard ip != 0, ip != 0xFFFF_FFFF, !(0xE0...0xEF).contains(ip >> 24) else { return false }
            return UInt32(bigEndian: from.address.sin_addr.s_addr) >> 24 != 127 || ip >> 24 == 127
        case (.v6, .v6?):
            guard let ip = destination.ipAddress, let localIP = local?.ipAddress,
                  ip != "::", !ip.lowercased().hasPrefix("ff") else { return false }
            return localIP != "::1" || ip == "::1"
        default:
            return false
        }
    }

    func flush() {
        if pendingUDP {
            pendingUDP = false
            udp.flush()
        }
    }
}

extension SIPCore {
    var transport: SIPOutput? {
        get { output as? SIPOutput }
        set { output = newValue }
    }
}

/// One datagram, one message (RFC 3261 §18.3).
final class SIPDatagramHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let core: NIOLoopBound<SIPCore>
    let parser: SIPParser

    init(core: NIOLoopBound<SIPCore>, parser: SIPParser) {
        self.core = core
        self.parser = parser
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let bytes = Array(envelope.data.readableBytesView)
        let peer = SIPPeer(transport: .udp, address: envelope.remoteAddress)
        // RFC 5626 keepalives (CRLF) need no answer over UDP.
        guard bytes.contains(where: { $0 != 13 && $0 != 10 }) else { return }
        do {
            // The core lives on this channel's loop: its replies are flushed per read burst.
            core.value.receive(try parser.parse(datagram: bytes), from: peer, flush: false)
        } catch {
            core.value.receiveInvalid(error, looksLikeRequest: SIPCore.looksLikeRequest(bytes), from: peer)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        core.value.output?.flush()
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ICMP errors and the like: UDP keeps serving.
    }
}

@available(*, unavailable)
extension SIPDatagramHandler: Sendable {}

/// A TCP connection: messages framed by Content-Length, handed to the core on its loop.
final class SIPStreamHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let core: NIOLoopBound<SIPCore>
    var framer: SIPStreamFramer
    var peer: SIPPeer?
    /// A framing error ended the stream; the connection is closing.
    var failed = false

    init(core: NIOLoopBound<SIPCore>, parser: SIPParser) {
        self.core = core
        self.framer = SIPStreamFramer(parser: parser)
    }

    func channelActive(context: ChannelHandlerContext) {
        guard let address = context.remoteAddress else {
            context.close(promise: nil)
            return
        }
        let peer = SIPPeer(transport: .tcp, address: address)
        self.peer = peer
        let channel = context.channel, core = self.core
        core.eventLoop.execute { core.value.transport?.connections[peer] = channel }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let peer {
            let core = self.core
            let channel = context.channel
            core.eventLoop.execute {
                if core.value.transport?.connections[peer] === channel { core.value.transport?.connections[peer] = nil }
            }
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }      // closing after a framing error: drained, not parsed
        let buffer = unwrapInboundIn(data)
        framer.append(buffer.readableBytesView)
        guard let peer else { return }
        var messages: [SIPMessage] = []
        do {
            while let message = try framer.next() { messages.append(message) }
            pong(context, framer.takePings())
        } catch {
            let core = self.core, parsed = messages
            core.eventLoop.execute {
                for message in parsed { core.value.receive(message, from: peer) }
                core.value.receiveInvalid(error, looksLikeRequest: true, from: peer)
            }
            // The stream cannot be resynchronised after a framing error. The core's answer
            // (400, 413…) is written from its loop; then the output side closes and what the
            // peer still sends is drained, so no reset discards that answer.
            failed = true
            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(50)) { context.closeLingering() }
            return
        }
        guard !messages.isEmpty else { return }
        let core = self.core, parsed = messages
        core.eventLoop.execute {
            for message in parsed { core.value.receive(message, from: peer) }
        }
    }

    /// Answers keepalive pings, one CRLF each (RFC 5626 §3.5.1), at most `maxPongs` per read.
    private func pong(_ context: ChannelHandlerContext, _ pings: Int) {
        guard pings > 0 else { return }
        let crlfs = String(repeating: "\r\n", count: min(pings, Self.maxPongs))
        context.channel.writeAndFlush(context.channel.allocator.buffer(string: crlfs), promise: nil)
    }

    static let maxPongs = 16

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension SIPStreamHandler: Sendable {}
