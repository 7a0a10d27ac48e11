import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `switchboard-bench xmpp`: MUC (XEP-0045) fan-out over plain XMPP client streams.
///
/// `occupants` connections (users `<prefix>000`…, SASL PLAIN without TLS, resource binding)
/// join one room with `<history maxstanzas='0'/>`; the first `senders` of them also send
/// `groupchat` messages: paced (`rate` messages per second in all) or, with `--saturate`, as
/// fast as a window of messages not yet delivered to every occupant allows, for `seconds`.
/// Every occupant — the sender included, rooms reflect messages — receives every message, so
/// expected deliveries = sent × occupants. Each body starts with its send time
/// (CLOCK_MONOTONIC, ns); receivers live in this process, so `now - sent` is the delivery
/// latency. Receivers do not parse XML in the measured phase: they cut the byte stream at
/// `<message`…`</message>` (and `<presence`, `<iq`) and read the digits after `<body>`.
/// With `--server-pid` the CPU time of those processes (/proc/<pid>/stat utime + stime) is
/// read at the start and the end of the measured phase: server CPU per delivered stanza.
/// Works against Switchboard, Prosody and ejabberd (a room announced as new, status 201,
/// is configured as an instant room by the first occupant before the others join).
struct XMPPLoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xmpp", abstract: "XMPP MUC fan-out: delivered stanzas/s, latency, server CPU per delivered stanza.")

    @OptionGroup var connect: ConnectOptions
    @Option(help: "The server's domain (stream 'to', user JIDs).") var domain = "localhost"
    @Option(help: "The MUC service (default: conference.<domain>).") var mucDomain: String?
    @Option(help: "Room (local part of the room JID).") var room = "bench"
    @Option(help: "Occupants (connections, distinct users <prefix>000…; the senders are among them).") var occupants = 50
    @Option(help: "Occupants that also send (the first ones).") var senders = 1
    @Option(help: "Users are <prefix>000…, nick = user name.") var userPrefix = "bench"
    @Option(help: "Password of every user.") var password = ""
    @Option(help: "Resource bound by every connection.") var resource = "bench"
    @Option(help: "Messages per second from all senders together (paced mode).") var rate = 400
    @Option(help: "Seconds of sending (paced and saturation).") var seconds: Double = 5
    @Flag(help: "Send as fast as the window allows instead of pacing.") var saturate = false
    @Option(help: "--saturate: most messages sent but not yet delivered to every occupant.") var window = 32
    @Option(help: "Message body size in bytes.") var bodyBytes = 64
    @Option(help: "Keep at most about this many latency samples (receivers sample messages evenly).") var maxSamples = 4_000_000
    @Option(help: "Process ids whose CPU time is measured over the measured phase (repeatable).") var serverPid: [Int32] = []
    @Option(help: "Seconds to wait for every occupant presence to arrive after the joins.") var presenceTimeout: Double = 30
    @Option(help: "Seconds without a new presence that count as 'flushed'.") var settle: Double = 0.5
    @Option(help: "Seconds to wait for stragglers after the last send.") var drainTimeout: Double = 30

    func validate() throws {
        guard occupants >= 1, senders >= 1, senders <= occupants, rate >= 1, seconds > 0, window >= 1, bodyBytes >= 40 else {
            throw ValidationError("occupants, senders (≤ occupants), rate, seconds, window must be positive and body-bytes at least 40")
        }
    }

    func run() async throws {
        let limit = raiseOpenFileLimit()
        if occupants + 100 > limit { note("warning: \(occupants) connections but only \(limit) open files allowed") }
        try await runOnGroup { group in try await runLoad(group: group) }
    }

    private func runLoad(group: MultiThreadedEventLoopGroup) async throws -> [String: Any] {
        let service = mucDomain ?? "conference.\(domain)"
        let total = saturate ? 0 : Int((Double(rate) * seconds).rounded())
        // Deliveries a run can produce at most (saturation: a generous 1M/s), for the sampling stride.
        let bound = saturate ? 1_000_000 * seconds : Double(total) * Double(occupants)
        let stride = max(1, Int((bound / Double(maxSamples)).rounded(.up)))
        let state = LoadState()
        let counters = XMPPCounters(senders: senders)
        let settings = XMPPSettings(
            domain: domain, roomJID: "\(room)@\(service)", password: password, resource: resource,
            occupants: occupants, senders: senders, total: total, rate: rate, seconds: seconds,
            saturate: saturate, window: window, bodyBytes: bodyBytes, sampleStride: stride)
        func user(_ i: Int) -> String { String(format: "%@%03d", userPrefix, i) }
        func occupant(_ i: Int) throws -> (ClientBootstrap, EventLoopFuture<Void>) {
            let ready = group.next().makePromise(of: Void.self)
            let name = user(i)
            let bootstrap = try connect.bootstrap(group: group, index: i) { channel in
                try channel.pipeline.syncOperations.addHandler(XMPPClientHandler(
                    index: i, user: name, settings: settings, state: state, counters: counters, ready: ready))
            }
            return (bootstrap, ready.futureResult)
        }

        // The first occupant creates (and, if the server asks, configures) the room alone.
        let setupStart = monoNanos()
        var channels = try await connectInBatches(count: 1, options: connect, group: group, port: connect.port) { _ in
            try occupant(0)
        }
        if occupants > 1 {
            do {
                channels += try await connectInBatches(count: occupants - 1, options: connect, group: group, port: connect.port) { i in
                    try occupant(i + 1)
                }
            } catch {
                await closeAll(channels)
                throw error
            }
        }
        let joinSeconds = Double(monoNanos() - setupStart) / 1e9
        // Every occupant learns of every other one (in its join's occupant list or as a
        // later join): wait for those presences, then for the stream to go quiet.
        let presencesExpected = occupants * (occupants - 1)
        let presencesComplete = await waitFor(seconds: presenceTimeout) {
            counters.presences.load(ordering: .relaxed) >= presencesExpected
        }
        var lastCount = -1
        var quietSince = monoNanos()
        _ = await waitFor(seconds: presenceTimeout) {
            let now = counters.presences.load(ordering: .relaxed)
            if now != lastCount {
                lastCount = now
                quietSince = monoNanos()
            }
            return monoNanos() - quietSince >= UInt64(settle * 1e9)
        }
        let presencesSeen = counters.presences.load(ordering: .relaxed)
        let setupSeconds = Double(monoNanos() - setupStart) / 1e9
        state.resetErrors()

        let pids = serverPid
        let serverBefore = pids.map(processCPUSecondsOf)
        let cpuBefore = processCPUSeconds()
        let windowStart = monoNanos()
        for k in 0..<senders { channels[k].pipeline.fireUserInboundEventTriggered(LoadStart()) }
        let sendBudget = seconds * 3 + 30
        let sendDone = await waitFor(seconds: sendBudget) { counters.sendersDone.load(ordering: .acquiring) >= senders }
        let sentAll = state.sent.load(ordering: .relaxed)
        let expected = sentAll * occupants
        let allArrived = await waitFor(seconds: drainTimeout) { state.delivered.load(ordering: .relaxed) >= expected }
        let windowSeconds = Double(monoNanos() - windowStart) / 1e9
        let cpu = processCPUSeconds() - cpuBefore
        let serverAfter = pids.map(processCPUSecondsOf)
        let delivered = state.delivered.load(ordering: .relaxed)

        counters.closing.store(true, ordering: .relaxed)
        for channel in channels { channel.pipeline.fireUserInboundEventTriggered(XMPPClose()) }
        try? await Task.sleep(for: .milliseconds(200))
        await closeAll(channels)

        let snapshot = state.snapshot()
        let firstSend = state.firstSend.load(ordering: .relaxed)
        let lastSend = state.lastSend.load(ordering: .relaxed)
        let lastReceive = state.lastReceive.load(ordering: .relaxed)
        let sent = state.sent.load(ordering: .relaxed)
        let sendWindow = Double(lastSend &- firstSend) / 1e9
        let deliverySeconds = lastReceive > firstSend ? Double(lastReceive - firstSend) / 1e9 : 0
        var result: [String: Any] = [
            "bench": "xmpp",
            "mode": saturate ? "saturate" : "paced",
            "host": connect.host,
            "port": connect.port,
            "room": settings.roomJID,
            "occupants": occupants,
            "senders": senders,
            "rate": saturate ? 0 : rate,
            "seconds": seconds,
            "window": saturate ? window : 0,
            "body_bytes": bodyBytes,
            "join_seconds": round3(joinSeconds),
            "setup_seconds": round3(setupSeconds),
            "presences_expected": presencesExpected,
            "presences_seen": presencesSeen,
            "presences_complete": presencesComplete,
            "sent": sent,
            "sender_finished": sendDone,
            "send_rate": sendWindow > 0 ? (Double(max(0, sent - 1)) / sendWindow).rounded() : 0,
            "expected_deliveries": sent * occupants,
            "delivered": delivered,
            "all_arrived": allArrived,
            "lost": max(0, sent * occupants - delivered),
            "out_of_order": snapshot.outOfOrder,
            "delivery_seconds": round3(deliverySeconds),
            "delivered_per_s": deliverySeconds > 0 ? (Double(delivered) / deliverySeconds).rounded() : 0,
            "sample_stride": stride,
            "latency": LatencySummary(nanos: snapshot.samples).json,
            "errors": snapshot.errorCount,
            "first_errors": snapshot.firstErrors,
            "window_seconds": round3(windowSeconds),
            "client_cpu_seconds": round3(cpu),
            "client_cpu_cores": windowSeconds > 0 ? round3(cpu / windowSeconds) : 0,
            "client_rss_kib": ownRSSKiB(),
            "event_loop_threads": System.coreCount,
        ]
        if !pids.isEmpty {
            let measured = zip(serverBefore, serverAfter).compactMap { before, after -> Double? in
                guard let before, let after else { return nil }
                return after - before
            }
            if measured.count == pids.count {
                let serverCPU = measured.reduce(0, +)
                result["server_pids"] = pids.map(Int.init)
                result["server_cpu_seconds"] = round3(serverCPU)
                result["server_cpu_cores"] = windowSeconds > 0 ? round3(serverCPU / windowSeconds) : 0
                result["server_cpu_us_per_delivery"] = delivered > 0 ? round3(serverCPU * 1e6 / Double(delivered)) : 0
            } else {
                result["server_cpu_error"] = "a server process disappeared during the run"
            }
        }
        let complete = saturate ? sent > 0 : sent == total
        result["ok"] = sendDone && allArrived && snapshot.errorCount == 0 && complete && presencesComplete
        return result
    }
}

/// utime + stime of process `pid` (all its threads) in seconds, from /proc/<pid>/stat.
func processCPUSecondsOf(_ pid: Int32) -> Double? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let paren = text.lastIndex(of: ")")
    else { return nil }
    // After "pid (comm)": state is field 3; utime and stime are fields 14 and 15.
    let fields = text[text.index(after: paren)...].split(separator: " ", omittingEmptySubsequences: true)
    guard fields.count > 12, let utime = Double(fields[11]), let stime = Double(fields[12]) else { return nil }
    return (utime + stime) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// Sent down every occupant's pipeline at the end: close the stream politely.
struct XMPPClose: Sendable {}

/// What every occupant of a run shares (immutable).
struct XMPPSettings: Sendable {
    var domain: String
    var roomJID: String
    var password: String
    var resource: String
    var occupants: Int
    var senders: Int
    /// Paced: messages from all senders together (0 in saturation).
    var total: Int
    var rate: Int
    var seconds: Double
    var saturate: Bool
    var window: Int
    var bodyBytes: Int
    var sampleStride: Int
}

/// Counters of an XMPP run on top of `LoadState`.
final class XMPPCounters: Sendable {
    /// Presences received from the room (not the self-presence), during setup and after.
    let presences = Atomic<Int>(0)
    let sendersDone = Atomic<Int>(0)
    /// Set before the benchmark closes its own connections.
    let closing = Atomic<Bool>(false)
    let senders: Int

    init(senders: Int) { self.senders = senders }
}

/// Byte patterns the scanner looks for.
enum XMPPBytes {
    static let message: [UInt8] = Array("message".utf8)
    static let presence: [UInt8] = Array("presence".utf8)
    static let endMessage: [UInt8] = Array("</message>".utf8)
    static let endPresence: [UInt8] = Array("</presence>".utf8)
    static let body: [UInt8] = Array("<body".utf8)
    static let streamStream: [UInt8] = Array("stream:stream".utf8)
    static let xmlDeclEnd: [UInt8] = Array("?>".utf8)

    @inline(__always)
    static func equal(_ raw: UnsafeRawBufferPointer, _ at: Int, _ count: Int, _ name: [UInt8]) -> Bool {
        guard count == name.count else { return false }
        for k in 0..<count where raw[at + k] != name[k] { return false }
        return true
    }

    /// The first `byte` in raw[from..<raw.count], or nil.
    @inline(__always)
    static func index(of byte: UInt8, in raw: UnsafeRawBufferPointer, from: Int) -> Int? {
        guard from < raw.count, let base = raw.baseAddress,
              let hit = memchr(base + from, Int32(byte), raw.count - from)
        else { return nil }
        return base.distance(to: UnsafeRawPointer(hit))
    }

    static func find(_ needle: [UInt8], in raw: UnsafeRawBufferPointer, from: Int, to: Int? = nil) -> Int? {
        let end = to ?? raw.count
        guard from < end else { return nil }
        return WSWire.find(needle, in: UnsafeRawBufferPointer(rebasing: raw[from..<end])).map { $0 + from }
    }
}

/// One occupant: stream, SASL PLAIN, bind, MUC join; then receive (and, for a sender, send) and measure.
final class XMPPClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Phase { case features, auth, boundFeatures, bind, joining, configuring, ready, closed }

    private let index: Int
    private let user: String
    private let settings: XMPPSettings
    private let state: LoadState
    private let counters: XMPPCounters
    private let ready: EventLoopPromise<Void>
    private var phase = Phase.features
    private var buffer: ByteBuffer?
    private var context: ChannelHandlerContext?
    private let nickJID: String

    // Receiver.
    private var samples: [UInt64] = []
    private var lastIndex: [Int]
    private var outOfOrder = 0
    private var presences = 0

    // Sender.
    private let senderID: Int?
    private var task: RepeatedTask?
    private var start: UInt64 = 0
    private var sentCount = 0
    private var quota = 0
    private var intervalNanos: UInt64 = 0
    private var filler = ""
    private var prefix = ""

    init(index: Int, user: String, settings: XMPPSettings, state: LoadState, counters: XMPPCounters,
         ready: EventLoopPromise<Void>) {
        self.index = index
        self.user = user
        self.settings = settings
        self.state = state
        self.counters = counters
        self.ready = ready
        self.nickJID = "\(settings.roomJID)/\(user)"
        self.lastIndex = Array(repeating: -1, count: settings.senders)
        self.senderID = index < settings.senders ? index : nil
        if let senderID {
            // "<20-digit nanos> <8-digit index> <3-digit sender> " is 34 bytes; the filler brings the body to size.
            filler = makeBody(bytes: settings.bodyBytes - 34)
            prefix = "<message to='\(settings.roomJID)' type='groupchat' id='m\(senderID)."
            if !settings.saturate {
                // The senders share the total and the rate.
                quota = settings.total / settings.senders + (senderID < settings.total % settings.senders ? 1 : 0)
                intervalNanos = UInt64(1e9 * Double(settings.senders) / Double(settings.rate))
            }
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelActive(context: ChannelHandlerContext) {
        send(streamHeader(), context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if phase != .ready && phase != .closed {
            ready.fail(LoadError("\(user): connection closed during login/join"))
        } else if phase == .ready && !counters.closing.load(ordering: .relaxed) {
            state.error("\(user): the server closed the stream")
        }
        phase = .closed
        stopSending()
        if !samples.isEmpty || outOfOrder > 0 {
            state.hand(samples: samples, ackSamples: [], outOfOrder: outOfOrder)
        }
        samples = []
        buffer = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !counters.closing.load(ordering: .relaxed) { state.error("\(user): \(error)") }
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is LoadStart, senderID != nil, phase == .ready {
            startSending(context: context)
        } else if event is XMPPClose {
            stopSending()
            if phase == .ready { send("</stream:stream>", context: context) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    // MARK: Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = monoNanos()
        var incoming = unwrapInboundIn(data)
        if buffer == nil || buffer!.readableBytes == 0 {
            buffer = incoming
        } else {
            buffer!.writeBuffer(&incoming)
        }
        var delivered = 0
        var ownDelivered = false
        var setupElements: [(String, String)] = []
        let consumed = buffer!.withUnsafeReadableBytes { raw -> Int in
            var offset = 0
            while let lt = XMPPBytes.index(of: UInt8(ascii: "<"), in: raw, from: offset) {
                guard lt + 1 < raw.count else { return lt }
                let c = raw[lt + 1]
                if c == UInt8(ascii: "?") {
                    // <?xml …?>
                    guard let end = XMPPBytes.find(XMPPBytes.xmlDeclEnd, in: raw, from: lt) else { return lt }
                    offset = end + 2
                    continue
                }
                // The element name runs to a space, '>' or '/'.
                var nameEnd = lt + 1
                while nameEnd < raw.count {
                    let b = raw[nameEnd]
                    if b == UInt8(ascii: " ") || b == UInt8(ascii: ">") || b == UInt8(ascii: "/") || b == UInt8(ascii: "\n")
                        || b == UInt8(ascii: "\t") || b == UInt8(ascii: "\r") { break }
                    nameEnd += 1
                }
                if c == UInt8(ascii: "/") {
                    // A closing tag at the top level: </stream:stream>.
                    guard let gt = XMPPBytes.index(of: UInt8(ascii: ">"), in: raw, from: lt) else { return lt }
                    if phase == .ready && !counters.closing.load(ordering: .relaxed) {
                        state.error("\(user): the server closed the stream")
                    }
                    offset = gt + 1
                    continue
                }
                guard nameEnd < raw.count, let gt = XMPPBytes.index(of: UInt8(ascii: ">"), in: raw, from: nameEnd) else { return lt }
                let nameLength = nameEnd - (lt + 1)
                if XMPPBytes.equal(raw, lt + 1, nameLength, XMPPBytes.streamStream) {
                    // The stream header has no end tag of its own.
                    offset = gt + 1
                    continue
                }
                let isMessage = XMPPBytes.equal(raw, lt + 1, nameLength, XMPPBytes.message)
                let isPresence = !isMessage && XMPPBytes.equal(raw, lt + 1, nameLength, XMPPBytes.presence)
                var end: Int
                if raw[gt - 1] == UInt8(ascii: "/") {
                    end = gt + 1
                } else {
                    let closing: [UInt8]
                    if isMessage {
                        closing = XMPPBytes.endMessage
                    } else if isPresence {
                        closing = XMPPBytes.endPresence
                    } else {
                        closing = Array("</".utf8) + Array(UnsafeRawBufferPointer(rebasing: raw[(lt + 1)..<nameEnd])) + [UInt8(ascii: ">")]
                    }
                    guard let at = XMPPBytes.find(closing, in: raw, from: gt + 1) else { return lt }
                    end = at + closing.count
                }
                if phase == .ready {
                    if isMessage {
                        switch received(raw, from: gt + 1, to: end, now: now) {
                        case 1: delivered += 1
                        case 2:
                            delivered += 1
                            ownDelivered = true
                        default: break
                        }
                    } else if isPresence {
                        presences += 1
                    } else {
                        setupElements.append((String(decoding: UnsafeRawBufferPointer(rebasing: raw[(lt + 1)..<nameEnd]), as: UTF8.self),
                                              String(decoding: UnsafeRawBufferPointer(rebasing: raw[lt..<end]), as: UTF8.self)))
                    }
                } else {
                    setupElements.append((String(decoding: UnsafeRawBufferPointer(rebasing: raw[(lt + 1)..<nameEnd]), as: UTF8.self),
                                          String(decoding: UnsafeRawBufferPointer(rebasing: raw[lt..<end]), as: UTF8.self)))
                }
                offset = end
            }
            return raw.count  // only whitespace (keepalives) after the last element
        }
        buffer!.moveReaderIndex(forwardBy: consumed)
        if buffer!.readableBytes == 0 { buffer = nil }
        if delivered > 0 {
            state.delivered.wrappingAdd(delivered, ordering: .relaxed)
            state.lastReceive.atomicMax(now)
        }
        if presences > 0 {
            counters.presences.wrappingAdd(presences, ordering: .relaxed)
            presences = 0
        }
        for (name, text) in setupElements where phase != .closed {
            handleElement(name: name, text: text, context: context)
        }
        if ownDelivered, settings.saturate { pump() }
    }

    /// A message in the measured phase: 0 when it is not a measured delivery, 1 when it is,
    /// 2 when it is this sender's own message reflected by the room.
    private func received(_ raw: UnsafeRawBufferPointer, from: Int, to end: Int, now: UInt64) -> Int {
        guard let bodyAt = XMPPBytes.find(XMPPBytes.body, in: raw, from: from, to: end),
              let gt = XMPPBytes.index(of: UInt8(ascii: ">"), in: raw, from: bodyAt), gt < end
        else {
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: raw[from..<end]), as: UTF8.self)
            if text.contains("<error") { state.error("\(user): \(text.prefix(300))") }
            return 0
        }
        let body = UnsafeRawBufferPointer(rebasing: raw[(gt + 1)..<end])
        var i = 0
        guard let sentAt = LoadClientHandler.number(body, &i) else { return 0 }
        i += 1
        guard let messageIndex = LoadClientHandler.number(body, &i) else { return 0 }
        i += 1
        guard let sender = LoadClientHandler.number(body, &i), Int(sender) < lastIndex.count else { return 0 }
        let m = Int(messageIndex), s = Int(sender)
        if (m &+ index) % settings.sampleStride == 0 { samples.append(now &- sentAt) }
        if m != lastIndex[s] + 1 { outOfOrder += 1 }
        lastIndex[s] = m
        return s == senderID ? 2 : 1
    }

    // MARK: Setup

    private func streamHeader() -> String {
        "<?xml version='1.0'?><stream:stream to='\(settings.domain)' xmlns='jabber:client' "
            + "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    }

    private func fail(_ text: String, context: ChannelHandlerContext) {
        if phase == .ready {
            state.error("\(user): \(text.prefix(300))")
            return
        }
        ready.fail(LoadError("\(user): \(text.prefix(400))"))
        phase = .closed
        context.close(promise: nil)
    }

    /// A setup-phase element (not in the hot path: plain string matching).
    private func handleElement(name: String, text: String, context: ChannelHandlerContext) {
        if name == "stream:error" {
            fail("stream error: \(text)", context: context)
            return
        }
        switch phase {
        case .features:
            guard name == "stream:features" else { return }
            guard text.contains("PLAIN") else {
                fail("the server does not offer SASL PLAIN: \(text)", context: context)
                return
            }
            let credentials = Data(([0] + Array(user.utf8) + [0] + Array(settings.password.utf8)))
            phase = .auth
            send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>\(credentials.base64EncodedString())</auth>",
                 context: context)
        case .auth:
            if name == "success" {
                phase = .boundFeatures
                send(streamHeader(), context: context)
            } else if name == "failure" {
                fail("SASL PLAIN failed: \(text)", context: context)
            }
        case .boundFeatures:
            guard name == "stream:features" else { return }
            phase = .bind
            send("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>\(settings.resource)</resource></bind></iq>",
                 context: context)
        case .bind:
            guard name == "iq", Self.attribute(text, "id") == "bind1" else { return }
            guard Self.attribute(text, "type") == "result" else {
                fail("bind failed: \(text)", context: context)
                return
            }
            phase = .joining
            send("<presence to='\(nickJID)' id='join1'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>",
                 context: context)
        case .joining:
            guard name == "presence" else { return }
            if Self.attribute(text, "type") == "error" {
                fail("join failed: \(text)", context: context)
                return
            }
            guard Self.hasStatus(text, 110) else {
                counters.presences.wrappingAdd(1, ordering: .relaxed)  // another occupant
                return
            }
            if Self.hasStatus(text, 201) {
                // A new room (XEP-0045 §10.1.2): accept the default configuration (an instant room).
                phase = .configuring
                send("<iq type='set' id='cfg1' to='\(settings.roomJID)'><query xmlns='http://jabber.org/protocol/muc#owner'>"
                     + "<x xmlns='jabber:x:data' type='submit'/></query></iq>", context: context)
            } else {
                phase = .ready
                ready.succeed(())
            }
        case .configuring:
            if name == "presence" {
                if !Self.hasStatus(text, 110) { counters.presences.wrappingAdd(1, ordering: .relaxed) }
                return
            }
            guard name == "iq", Self.attribute(text, "id") == "cfg1" else { return }
            guard Self.attribute(text, "type") == "result" else {
                fail("room configuration failed: \(text)", context: context)
                return
            }
            phase = .ready
            ready.succeed(())
        case .ready:
            if name == "presence" {
                // Read in the same chunk as the self-presence (the scanner still ran in the join phase).
                counters.presences.wrappingAdd(1, ordering: .relaxed)
            } else if name == "iq", let type = Self.attribute(text, "type"), type == "get" || type == "set" {
                // Answer pings (and anything else) so the server does not wait on us.
                var reply = "<iq type='\(type == "get" && text.contains("urn:xmpp:ping") ? "result" : "error")'"
                if let id = Self.attribute(text, "id") { reply += " id='\(id)'" }
                if let from = Self.attribute(text, "from") { reply += " to='\(from)'" }
                reply += type == "get" && text.contains("urn:xmpp:ping") ? "/>"
                    : "><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
                send(reply, context: context)
            }
        case .closed:
            break
        }
    }

    /// The value of attribute `name` in the start tag of `element` (either quote), or nil.
    static func attribute(_ element: String, _ name: String) -> String? {
        let head = element.prefix { $0 != ">" }
        for quote in ["'", "\""] {
            if let range = head.range(of: " \(name)=\(quote)") {
                let rest = head[range.upperBound...]
                if let end = rest.firstIndex(of: Character(quote)) { return String(rest[..<end]) }
            }
        }
        return nil
    }

    static func hasStatus(_ element: String, _ code: Int) -> Bool {
        element.contains("code='\(code)'") || element.contains("code=\"\(code)\"")
    }

    // MARK: Sending

    private func send(_ text: String, context: ChannelHandlerContext) {
        var out = context.channel.allocator.buffer(capacity: text.utf8.count)
        out.writeString(text)
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }

    private func startSending(context: ChannelHandlerContext) {
        start = monoNanos()
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        if settings.saturate {
            // Reflections of our own messages drive the window; a timer re-checks it (other senders' deliveries).
            task = context.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .microseconds(200)) { _ in
                bound.value.pump()
            }
        } else {
            task = context.eventLoop.scheduleRepeatedTask(
                initialDelay: .zero, delay: .nanoseconds(Int64(max(intervalNanos, 200_000)))
            ) { _ in
                bound.value.tick()
            }
        }
    }

    /// Paced: sends what is due by now.
    private func tick() {
        guard phase == .ready, let context, task != nil else { return }
        let due = min(quota, Int((monoNanos() - start) / max(intervalNanos, 1)) + 1)
        guard sentCount < due else { return }
        while sentCount < due { sendOne(context: context) }
        context.flush()
        if sentCount >= quota { finish() }
    }

    /// Saturation: sends while fewer than `window` messages (all senders) are not yet delivered
    /// to every occupant, until `seconds` have passed.
    private func pump() {
        guard phase == .ready, let context, task != nil else { return }
        if monoNanos() - start >= UInt64(settings.seconds * 1e9) {
            finish()
            return
        }
        var wrote = false
        let occupants = max(1, settings.occupants)
        while state.sent.load(ordering: .relaxed) - state.delivered.load(ordering: .relaxed) / occupants < settings.window {
            sendOne(context: context)
            wrote = true
        }
        if wrote { context.flush() }
    }

    private func sendOne(context: ChannelHandlerContext) {
        let at = monoNanos()
        let stanza = prefix + "\(sentCount)'><body>" + LoadClientHandler.digits(at, width: 20) + " "
            + LoadClientHandler.digits(UInt64(sentCount), width: 8) + " " + LoadClientHandler.digits(UInt64(senderID ?? 0), width: 3)
            + " " + filler + "</body></message>"
        var out = context.channel.allocator.buffer(capacity: stanza.utf8.count)
        out.writeString(stanza)
        context.write(wrapOutboundOut(out), promise: nil)
        state.sent.wrappingAdd(1, ordering: .relaxed)
        if sentCount == 0 { _ = state.firstSend.compareExchange(expected: 0, desired: at, ordering: .relaxed) }
        state.lastSend.atomicMax(at)
        sentCount += 1
    }

    private func finish() {
        guard task != nil else { return }
        stopSending()
        counters.sendersDone.wrappingAdd(1, ordering: .releasing)
    }

    private func stopSending() {
        task?.cancel()
        task = nil
    }
}
