import DequeModule
import Foundation
import ListenerSupport
import Logging
import NIOCore
import NIOSSL
import SwitchboardCore
import XMPPWire

/// One XMPP client stream (RFC 6120/6121, XEP-0045 for rooms).
///
/// Bytes go through ``XMLStreamReader``; its events are handled in order. Work
/// that must leave the event loop (account lookups, PBKDF2, history reads)
/// holds the following events until it is done, and the socket is not read
/// meanwhile. Bus events arrive through the session outbox and are drained on
/// the loop.
final class XMPPConnectionHandler: ChannelInboundHandler, OutboxDrainer {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// What every connection of a listener shares.
    struct Shared: Sendable {
        var bus: any MessageBus
        var accounts: any AccountStore
        var authenticator: PasswordAuthenticator
        var rooms: any RoomStore
        var settings: XMPPSettings
        var logger: Logger
        var wakeups: LoopWakeupTable
        var tls: NIOSSLContext
        /// Per-loop wire encodings of live groupchat messages (see ``GroupchatEncoding``).
        var groupchats: GroupchatEncodingCacheTable
    }

    private enum Phase {
        /// Waiting for `<stream:stream>` (first, or after SASL success).
        case awaitingHeader
        /// Header answered with features; expecting `<auth>` (or STARTTLS).
        case unauthenticated
        /// A SCRAM exchange is running.
        case scram(ScramServer)
        /// SASL succeeded; the client must restart the stream.
        case authenticated(UserName)
        /// The restarted stream is open: bind, then stanzas.
        case ready(UserName)
    }

    /// A groupchat or chat message waiting for the bus's ack (acks come in submission order).
    private struct PendingSend {
        var stanza: XMLElement
        var room: RoomName
        var isGroupchat: Bool
    }

    /// A room this session is in (or joining).
    private struct RoomState {
        var nick: String
        var history: HistoryRequest
        var joined = false
        /// The occupants this session was shown (occupant list, then joins and leaves).
        var announced = AnnouncedOccupants()
    }

    /// `<history maxstanzas seconds since maxchars/>` of a MUC join.
    struct HistoryRequest: Sendable {
        var maxStanzas: Int
        var sinceMillis: Int64?
    }

    private let shared: Shared
    private let reader: XMLStreamReader
    private var phase: Phase = .awaitingHeader
    private var held: Deque<XMLStreamEvent> = []
    private var busy = false
    /// MUC joins sent to the bus and not yet answered (`joined` or a failure): the stanzas
    /// after a join wait for it, so a groupchat message right behind its join finds the room
    /// joined (RFC 6120 §10.1: stanzas are handled in order).
    private var joinsInFlight = 0
    private var closing = false
    private var reading = true
    private var authFailures = 0
    private var tlsActive = false
    private var limiter: TokenBucket
    private var session: SessionHandle?
    private var jid: JID?
    private var rooms: [RoomName: RoomState] = [:]
    private var pendingSends: Deque<PendingSend> = []
    private var inbox: Deque<SessionEvent> = []
    private var context: ChannelHandlerContext?
    /// Bytes waiting for the next flush.
    private var out = ByteBuffer()
    /// Where elements are serialized before they go into `out` (reused).
    private var scratch = ""
    /// This loop's shared groupchat encodings (set in `handlerAdded`, on the loop).
    private var groupchats: GroupchatEncodingCache!
    /// The bound full JID escaped as an attribute value (set with `jid`).
    private var toAttribute = ""
    private let allocator = ByteBufferAllocator()
    private var logger: Logger

    static let maxAuthFailures = 3
    static let maxHeldEvents = 256

    private var domain: String { shared.settings.domain }
    private var mucDomain: String { "conference.\(shared.settings.domain)" }

    init(shared: Shared) {
        self.shared = shared
        self.reader = XMLStreamReader(limits: .init(maxStanzaBytes: shared.settings.maxStanzaBytes))
        self.limiter = TokenBucket(rate: shared.settings.ratePerSecond, burst: shared.settings.rateBurst)
        self.logger = shared.logger
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.out = context.channel.allocator.buffer(capacity: 256)
        self.groupchats = shared.groupchats.cache(for: context.eventLoop)
        logger[metadataKey: "peer"] = "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"
    }

    /// The context holds this handler: keeping it past removal would keep both (and all this
    /// connection's state) alive after the connection is gone.
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        closing = true
        if let session {
            shared.bus.closeSession(session)
            self.session = nil
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        let buffer = unwrapInboundIn(data)
        do {
            var events: [XMLStreamEvent] = []
            try reader.feed(buffer.readableBytesView, into: &events)
            held.append(contentsOf: events)
        } catch {
            SwitchboardMetrics.reject(.xmpp, reason: SwitchboardError.Code(rawValue: error.condition.rawValue))
            streamError(error.condition.rawValue, text: error.text)
            return
        }
        pump()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            SwitchboardMetrics.reject(.xmpp, reason: .idleTimeout)
            streamError("connection-timeout", text: "no traffic for \(shared.settings.idleTimeoutSeconds) seconds")
        } else if event is XMPPShutdownEvent {
            streamError("system-shutdown", text: "the server is shutting down")
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("xmpp connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    // MARK: Event processing

    private func pump() {
        while !closing, !busy, joinsInFlight == 0, let event = held.popFirst() {
            handle(event)
        }
        let wantRead = held.count < Self.maxHeldEvents
        if let context, wantRead != reading, !closing {
            reading = wantRead
            context.channel.setOption(.autoRead, value: wantRead).whenFailure { _ in }
        }
        flush()
    }

    private func handle(_ event: XMLStreamEvent) {
        switch event {
        case .streamOpened(let header):
            openStream(header)
        case .streamClosed:
            closing = true
            out.writeString(XMLSerializer.streamFooter)
            flushAndClose()
        case .stanza(let stanza):
            guard limiter.take(nowNanos: NIODeadline.now().uptimeNanoseconds) else {
                SwitchboardMetrics.reject(.xmpp, reason: .flood)
                streamError("policy-violation", text: "more than \(shared.settings.ratePerSecond) stanzas per second")
                return
            }
            handleStanza(stanza)
        }
    }

    private func openStream(_ header: XMLStreamHeader) {
        guard header.defaultNamespace == NS.client else {
            streamError("invalid-namespace", text: "the content namespace must be jabber:client", sendHeader: true)
            return
        }
        if let to = header.attribute("to"), to.lowercased() != domain {
            streamError("host-unknown", text: "this server serves \(domain)", sendHeader: true)
            return
        }
        writeHeader()
        var features = Stanza.element("features", NS.streams)
        switch phase {
        case .awaitingHeader:
            phase = .unauthenticated
            if !tlsActive { features.append(Stanza.element("starttls", NS.tls)) }
            var mechanisms = Stanza.element("mechanisms", NS.sasl)
            for mechanism in ScramServer.Mechanism.allCases {
                mechanisms.append(Stanza.element("mechanism", NS.sasl, text: mechanism.rawValue))
            }
            if tlsActive || shared.settings.allowPlainWithoutTLS {
                mechanisms.append(Stanza.element("mechanism", NS.sasl, text: "PLAIN"))
            }
            features.append(mechanisms)
        case .authenticated(let user):
            phase = .ready(user)
            features.append(Stanza.element("bind", NS.bind))
            features.append(Stanza.element("session", NS.session, [], [Stanza.element("optional", NS.session)]))
        default:
            streamError("bad-format", text: "unexpected stream header")
            return
        }
        write(features)
    }

    private func writeHeader() {
        out.writeString(XMLSerializer.streamHeader(attributes: [
            // A new id for every stream, restarts included (RFC 6120 §4.7.3).
            XMLAttribute("from", domain), XMLAttribute("id", Self.randomID()), XMLAttribute("version", "1.0"),
            XMLAttribute("xml:lang", "en"),
        ]))
    }

    private func handleStanza(_ stanza: XMLElement) {
        switch phase {
        case .unauthenticated, .scram:
            handleAuthentication(stanza)
        case .ready(let user):
            handleClientStanza(stanza, user: user)
        case .awaitingHeader, .authenticated:
            streamError("not-authorized", text: "stream not negotiated")
        }
    }

    // MARK: SASL

    private func handleAuthentication(_ stanza: XMLElement) {
        guard stanza.namespace == NS.sasl else {
            if stanza.name == "starttls", stanza.namespace == NS.tls, case .unauthenticated = phase, !tlsActive {
                startTLS()
                return
            }
            streamError("not-authorized", text: "authenticate first")
            return
        }
        switch (stanza.name, phase) {
        case ("auth", .unauthenticated):
            let mechanism = stanza.attribute("mechanism") ?? ""
            let payload = decodeSASL(stanza.text)
            if mechanism == "PLAIN" {
                guard tlsActive || shared.settings.allowPlainWithoutTLS else {
                    saslFailure("encryption-required", text: "PLAIN needs TLS")
                    return
                }
                plain(payload)
            } else if let scramMechanism = ScramServer.Mechanism(rawValue: mechanism) {
                startScram(scramMechanism, payload)
            } else {
                saslFailure("invalid-mechanism", text: "offered: SCRAM-SHA-256, SCRAM-SHA-1")
            }
        case ("response", .scram(let scram)):
            finishScram(scram, decodeSASL(stanza.text))
        case ("abort", _):
            phase = .unauthenticated
            saslFailure("aborted", text: nil)
        default:
            saslFailure("malformed-request", text: "unexpected \(stanza.name)")
        }
    }

    /// RFC 6120 §5.4: `<proceed/>` in the clear, then TLS from the next byte on, then a new stream.
    private func startTLS() {
        guard let context else { return }
        write(Stanza.element("proceed", NS.tls))
        flush()
        do {
            try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: shared.tls), position: .first)
        } catch {
            streamError("internal-server-error", text: "TLS could not start")
            return
        }
        tlsActive = true
        phase = .awaitingHeader
        reader.reset()
        held.removeAll()
        logger.debug("xmpp stream switched to TLS")
    }

    private func decodeSASL(_ text: String) -> String? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed == "=" || trimmed.isEmpty { return "" }
        return Data(base64Encoded: trimmed).flatMap { String(data: $0, encoding: .utf8) }
    }

    private func plain(_ payload: String?) {
        let parts = payload?.split(separator: "\0", omittingEmptySubsequences: false) ?? []
        guard parts.count == 3 else {
            saslFailure("malformed-request", text: "PLAIN is authzid NUL user NUL password")
            return
        }
        let (authzid, user, password) = (String(parts[0]), String(parts[1]), String(parts[2]))
        let authenticator = shared.authenticator
        runAsync({ await authenticator.authenticate(user: user, password: password) }) { handler, user in
            guard let user else {
                handler.saslFailure("not-authorized", text: "invalid user or password")
                return
            }
            // RFC 4616: an authorization identity other than the user's own is refused (as with
            // SCRAM): nobody may act as somebody else.
            guard authzid.isEmpty || authzid == user.rawValue || authzid == "\(user.rawValue)@\(handler.domain)" else {
                handler.saslFailure("invalid-authzid", text: "authorization identity must be the user")
                return
            }
            handler.saslSuccess(user, additional: nil)
        }
    }

    private func startScram(_ mechanism: ScramServer.Mechanism, _ payload: String?) {
        var scram = ScramServer(mechanism: mechanism)
        let name: String
        do {
            name = try scram.start(clientFirst: payload ?? "")
        } catch {
            saslFailure(error.condition, text: error.text)
            return
        }
        let accounts = shared.accounts
        runAsync({ () -> StoredCredentials? in
            guard let user = UserName(name), user.rawValue == name.lowercased() else { return nil }
            return try? await accounts.credentials(for: user)
        }) { handler, credentials in
            let challenge = scram.challenge(for: credentials)
            handler.phase = .scram(scram)
            handler.write(Stanza.element("challenge", NS.sasl, text: Data(challenge.utf8).base64EncodedString()))
        }
    }

    private func finishScram(_ scram: ScramServer, _ payload: String?) {
        do {
            let (user, serverFinal) = try scram.finish(clientFinal: payload ?? "")
            saslSuccess(user, additional: serverFinal)
        } catch {
            phase = .unauthenticated
            saslFailure(error.condition, text: error.condition == "not-authorized" ? "invalid user or password" : error.text)
        }
    }

    private func saslSuccess(_ user: UserName, additional: String?) {
        write(Stanza.element("success", NS.sasl, text: additional.map { Data($0.utf8).base64EncodedString() }))
        phase = .authenticated(user)
        logger[metadataKey: "user"] = "\(user)"
        logger.info("xmpp stream authenticated")
        // The client restarts the stream on a fresh parser (RFC 6120 §6.4.6).
        reader.reset()
    }

    private func saslFailure(_ condition: String, text: String?) {
        if case .scram = phase { phase = .unauthenticated }
        var failure = Stanza.element("failure", NS.sasl, [], [Stanza.element(condition, NS.sasl)])
        if let text { failure.append(Stanza.element("text", NS.sasl, text: text)) }
        write(failure)
        guard condition == "not-authorized" else { return }
        authFailures += 1
        SwitchboardMetrics.reject(.xmpp, reason: .authFailed)
        if authFailures >= Self.maxAuthFailures {
            streamError("policy-violation", text: "too many failed authentication attempts")
        }
    }

    // MARK: Stanzas of an authenticated stream

    private func handleClientStanza(_ stanza: XMLElement, user: UserName) {
        guard stanza.namespace == NS.client else {
            streamError("unsupported-stanza-type", text: "<\(stanza.name)> in \(stanza.namespace ?? "no namespace")")
            return
        }
        switch stanza.name {
        case "iq": handleIQ(stanza, user: user)
        case "presence": handlePresence(stanza)
        case "message": handleMessage(stanza)
        default: streamError("unsupported-stanza-type", text: "<\(stanza.name)>")
        }
    }

    private func handleIQ(_ iq: XMLElement, user: UserName) {
        let type = iq.attribute("type") ?? ""
        // RFC 6120 §8.2.3: a get or set carries exactly one payload.
        guard let payload = iq.elements.first, iq.elements.count == 1, ["get", "set"].contains(type),
              iq.attribute("id") != nil
        else {
            if type == "result" || type == "error" { return }
            write(Stanza.error(replyingTo: iq, type: "modify", condition: "bad-request"))
            return
        }
        if jid == nil {
            guard payload.name == "bind", payload.namespace == NS.bind, type == "set" else {
                write(Stanza.error(replyingTo: iq, type: "auth", condition: "not-authorized", text: "bind a resource first"))
                return
            }
            bind(iq, payload: payload, user: user)
            return
        }
        let to = iq.attribute("to").flatMap(JID.init)
        if iq.attribute("to") != nil, to == nil {
            write(Stanza.error(replyingTo: iq, type: "modify", condition: "jid-malformed"))
            return
        }
        // Answered here: iqs to the server, the MUC service, or the user's own account. Others
        // are not routed (there is no server-to-server, and users get no iqs from each other).
        let toServer = to.map { $0.local == nil && $0.resource == nil && ($0.domain == domain || $0.domain == mucDomain) } ?? true
        let toOwnAccount = to.map { $0.local == user.rawValue && $0.domain == domain && $0.resource == nil } ?? false
        guard toServer || toOwnAccount || payload.namespace == NS.discoInfo || payload.namespace == NS.discoItems else {
            let foreign = to.map { $0.domain != domain && $0.domain != mucDomain } ?? false
            write(Stanza.error(replyingTo: iq, type: "cancel", condition: foreign ? "remote-server-not-found" : "service-unavailable",
                               from: to?.description ?? domain))
            return
        }
        switch (payload.name, payload.namespace, type) {
        case ("session", NS.session, "set"), ("ping", NS.ping, "get"):
            writeResult(iq)
        case ("query", NS.roster, "get"):
            // RFC 6121 §2.1.3: a roster is read by its owner only.
            guard to == nil || toOwnAccount else {
                write(Stanza.error(replyingTo: iq, type: "auth", condition: "forbidden", from: to?.description ?? domain))
                return
            }
            writeResult(iq, [Stanza.element("query", NS.roster)])
        case ("query", NS.discoInfo, "get"):
            discoInfo(iq, to: to)
        case ("query", NS.discoItems, "get"):
            discoItems(iq, to: to)
        default:
            write(Stanza.error(replyingTo: iq, type: "cancel", condition: "service-unavailable", from: to?.description ?? domain))
        }
    }

    private func writeResult(_ iq: XMLElement, _ children: [XMLElement] = []) {
        var attributes: [(String, String)] = [("type", "result"), ("id", iq.attribute("id") ?? "")]
        if let to = iq.attribute("to") { attributes.append(("from", to)) }
        if let jid { attributes.append(("to", jid.description)) }
        write(Stanza.element("iq", NS.client, attributes, children))
    }

    private func bind(_ iq: XMLElement, payload: XMLElement, user: UserName) {
        var resource = payload.child(named: "resource", namespace: NS.bind)?.text ?? ""
        if resource.isEmpty || resource.utf8.count > 1023 || resource.contains("/") {
            resource = "switchboard-\(Self.randomID().prefix(8))"
        }
        let full = JID(local: user.rawValue, domain: domain, resource: resource)
        jid = full
        toAttribute = XMLSerializer.escapeAttributeValue(full.description)
        guard let context else { return }
        let sink = XMPPSessionSink(eventLoop: context.eventLoop, handler: NIOLoopBound(self, eventLoop: context.eventLoop),
                                   drainer: NIOLoopBound(self, eventLoop: context.eventLoop),
                                   wakeups: shared.wakeups.wakeups(for: context.eventLoop))
        session = shared.bus.openSession(user: user, display: nil, via: .xmpp, sink: sink)
        writeResult(iq, [Stanza.element("bind", NS.bind, [], [Stanza.element("jid", NS.bind, text: full.description)])])
    }

    private func discoInfo(_ iq: XMLElement, to: JID?) {
        var query = Stanza.element("query", NS.discoInfo)
        let target = to ?? JID(local: nil, domain: domain)
        if target.local == nil && target.domain == domain {
            query.append(Stanza.element("identity", NS.discoInfo, [("category", "server"), ("type", "im"), ("name", "Switchboard")]))
            for feature in [NS.discoInfo, NS.discoItems, NS.ping, NS.roster] {
                query.append(Stanza.element("feature", NS.discoInfo, [("var", feature)]))
            }
        } else if target.local == nil && target.domain == mucDomain {
            query.append(Stanza.element("identity", NS.discoInfo, [("category", "conference"), ("type", "text"),
                                                                    ("name", "Switchboard rooms")]))
            for feature in [NS.discoInfo, NS.discoItems, NS.muc] {
                query.append(Stanza.element("feature", NS.discoInfo, [("var", feature)]))
            }
        } else if let local = target.local, target.domain == mucDomain, let room = RoomName(local), case .group = room.scope {
            // A room that does not exist (yet) is item-not-found (XEP-0045 §6.4); joining creates it.
            let rooms = shared.rooms
            runAsync({ (try? await rooms.roomInfo(room)) ?? nil }) { handler, info in
                guard info != nil else {
                    handler.write(Stanza.error(replyingTo: iq, type: "cancel", condition: "item-not-found",
                                               from: target.description))
                    return
                }
                query.append(Stanza.element("identity", NS.discoInfo, [("category", "conference"), ("type", "text"),
                                                                        ("name", room.rawValue)]))
                for feature in [NS.muc, "muc_public", "muc_open", "muc_persistent", "muc_nonanonymous", NS.sid] {
                    query.append(Stanza.element("feature", NS.discoInfo, [("var", feature)]))
                }
                handler.writeResult(iq, [query])
            }
            return
        } else {
            write(Stanza.error(replyingTo: iq, type: "cancel", condition: "item-not-found", from: target.description))
            return
        }
        writeResult(iq, [query])
    }

    private func discoItems(_ iq: XMLElement, to: JID?) {
        let target = to ?? JID(local: nil, domain: domain)
        if target.local == nil && target.domain == domain {
            let item = Stanza.element("item", NS.discoItems, [("jid", mucDomain), ("name", "Rooms")])
            writeResult(iq, [Stanza.element("query", NS.discoItems, [], [item])])
        } else if target.local == nil && target.domain == mucDomain {
            let rooms = shared.rooms
            let mucDomain = self.mucDomain
            runAsync({ (try? await rooms.listRooms()) ?? [] }) { handler, list in
                let items = list.map { Stanza.element("item", NS.discoItems, [("jid", "\($0.name)@\(mucDomain)"), ("name", $0.name.rawValue)]) }
                handler.writeResult(iq, [Stanza.element("query", NS.discoItems, [], items)])
            }
        } else if target.domain == mucDomain {
            writeResult(iq, [Stanza.element("query", NS.discoItems)])
        } else {
            write(Stanza.error(replyingTo: iq, type: "cancel", condition: "item-not-found", from: target.description))
        }
    }

    // MARK: Presence and MUC

    private func handlePresence(_ presence: XMLElement) {
        guard let session, let jid else {
            write(Stanza.error(replyingTo: presence, type: "auth", condition: "not-authorized"))
            return
        }
        let type = presence.attribute("type")
        guard let toText = presence.attribute("to") else {
            // Broadcast presence: no roster, so only the user's own resource hears it.
            if type == nil || type == "unavailable" {
                var echo = presence
                echo.setAttribute("from", jid.description)
                echo.setAttribute("to", jid.description)
                write(echo)
            }
            if type == "unavailable" { leaveAllRooms() }
            return
        }
        guard let to = JID(toText) else {
            // A room JID with an empty nick lands here too (`room@conference.<domain>/`).
            write(Stanza.error(replyingTo: presence, type: "modify", condition: "jid-malformed"))
            return
        }
        guard to.domain == domain || to.domain == mucDomain else {
            // No server-to-server: presence for another server (a MUC join there) goes nowhere.
            write(Stanza.error(replyingTo: presence, type: "cancel", condition: "remote-server-not-found"))
            return
        }
        guard to.domain == mucDomain, let local = to.local else {
            if type == nil || type == "unavailable" { return }  // directed presence to users: not routed
            write(Stanza.error(replyingTo: presence, type: "cancel", condition: "service-unavailable"))
            return
        }
        guard let room = RoomName(local), room.rawValue == local.lowercased(), case .group = room.scope else {
            write(Stanza.error(replyingTo: presence, type: "modify", condition: "jid-malformed", text: "not a room name"))
            return
        }
        if type == "unavailable" {
            guard rooms[room] != nil else { return }
            do { try shared.bus.leave(session, room: room) } catch { rooms[room] = nil }
            return
        }
        guard type == nil else { return }
        guard let nick = to.resource, !nick.isEmpty else {
            write(Stanza.error(replyingTo: presence, type: "modify", condition: "jid-malformed", text: "join needs a nickname"))
            return
        }
        if let existing = rooms[room], existing.joined { return }  // presence update in a room: nothing to do
        // Nicks are user names; a nick naming another participant is taken.
        let occupants = shared.bus.occupants(of: room)
        if nick.lowercased() != session.user.rawValue, occupants.contains(where: { $0.user.rawValue == nick.lowercased() }) {
            write(Stanza.error(replyingTo: presence, type: "cancel", condition: "conflict", text: "nickname in use",
                               from: toText))
            return
        }
        let history = Self.historyRequest(presence.child(named: "x", namespace: NS.muc)?.child(named: "history", namespace: NS.muc))
        rooms[room] = RoomState(nick: nick, history: history)
        do {
            try shared.bus.join(session, room: room, since: nil)
            joinsInFlight += 1
        } catch {
            rooms[room] = nil
            write(Stanza.error(replyingTo: presence, type: "cancel", condition: error.code == .forbidden ? "forbidden" : "not-allowed",
                               text: error.message, from: toText))
        }
    }

    static func historyRequest(_ element: XMLElement?) -> HistoryRequest {
        var request = HistoryRequest(maxStanzas: 20, sinceMillis: nil)
        guard let element else { return request }
        if let text = element.attribute("maxstanzas"), let value = Int(text) { request.maxStanzas = max(0, min(value, 500)) }
        if element.attribute("maxchars") == "0" { request.maxStanzas = 0 }
        if let text = element.attribute("seconds"), let seconds = Int64(text) {
            request.sinceMillis = WallClock.millis() - max(0, seconds) * 1000
        }
        if let text = element.attribute("since"), let since = Stanza.parseTimestamp(text) {
            request.sinceMillis = max(request.sinceMillis ?? since, since)
        }
        return request
    }

    private func leaveAllRooms() {
        guard let session else { return }
        for room in rooms.keys { try? shared.bus.leave(session, room: room) }
    }

    private func mucJID(_ room: RoomName, nick: String? = nil) -> String {
        Self.mucJID(room, nick: nick, mucDomain: mucDomain)
    }

    static func mucJID(_ room: RoomName, nick: String? = nil, mucDomain: String) -> String {
        nick.map { "\(room)@\(mucDomain)/\($0)" } ?? "\(room)@\(mucDomain)"
    }

    // MARK: Messages

    private func handleMessage(_ message: XMLElement) {
        guard let session else { return }
        let type = message.attribute("type") ?? "normal"
        guard let toText = message.attribute("to"), let to = JID(toText) else {
            write(Stanza.error(replyingTo: message, type: "modify", condition: "jid-malformed"))
            return
        }
        let subject = message.child(named: "subject", namespace: NS.client)?.text
        guard let body = message.child(named: "body", namespace: NS.client)?.text ?? subject else { return }  // chat states, receipts: not bridged
        let clientID = Self.clientID(message)
        do throws(SwitchboardError) {
            if to.domain == mucDomain, let local = to.local {
                guard type == "groupchat", let room = RoomName(local), rooms[room]?.joined == true else {
                    write(Stanza.error(replyingTo: message, type: "modify", condition: "not-acceptable", text: "join the room first"))
                    return
                }
                // A subject change is a `system` envelope with attrs.subject (XEP-0045 §8.1).
                let isSubject = subject != nil && message.child(named: "body", namespace: NS.client) == nil
                let draft = EnvelopeDraft(room: room, from: session.sender, kind: isSubject ? .system : .chat, body: body,
                                          attrs: isSubject ? [Self.subjectAttr: body] : [:], clientID: clientID)
                try shared.bus.publish(draft, from: session)
                pendingSends.append(PendingSend(stanza: message, room: room, isGroupchat: true))
            } else if to.domain == domain, let local = to.local {
                // RFC 6121 §8.5.2.1.1 and §8.5.2.2.1: a groupchat message to a user's JID is
                // never delivered, whether or not the user is online; the sender gets an error.
                guard type != "groupchat" else {
                    write(Stanza.error(replyingTo: message, type: "cancel", condition: "service-unavailable",
                                       text: "groupchat messages go to a room at \(mucDomain)"))
                    return
                }
                guard let peer = UserName(local) else {
                    write(Stanza.error(replyingTo: message, type: "cancel", condition: "item-not-found"))
                    return
                }
                let accounts = shared.accounts
                let draft = EnvelopeDraft(room: .direct(session.user, peer), from: session.sender, body: body, clientID: clientID)
                runAsync({ (try? await accounts.credentials(for: peer)) != nil }) { handler, exists in
                    guard exists else {
                        handler.write(Stanza.error(replyingTo: message, type: "cancel", condition: "item-not-found", text: "no such user"))
                        return
                    }
                    do throws(SwitchboardError) {
                        try handler.shared.bus.publish(draft, from: session)
                        handler.pendingSends.append(PendingSend(stanza: message, room: draft.room, isGroupchat: false))
                    } catch {
                        handler.write(Stanza.error(replyingTo: message, type: "modify", condition: "not-acceptable", text: error.message))
                    }
                }
            } else {
                write(Stanza.error(replyingTo: message, type: "cancel", condition: "remote-server-not-found"))
            }
        } catch {
            SwitchboardMetrics.reject(.xmpp, reason: error.code)
            write(Stanza.error(replyingTo: message, type: "modify", condition: "not-acceptable", text: error.message))
        }
    }

    /// XEP-0359 origin-id, else the stanza id: the envelope's client_id (dedup of resends).
    static func clientID(_ message: XMLElement) -> String? {
        let candidate = message.child(named: "origin-id", namespace: NS.sid)?.attribute("id") ?? message.attribute("id")
        guard let candidate, (1...EnvelopeLimits.maxClientIDBytes).contains(candidate.utf8.count),
              candidate.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
        else { return nil }
        return candidate
    }

    // MARK: Bus events

    func drainOutbox() {
        guard let session, !closing, !busy else { return }
        guard let context, context.channel.isWritable else { return }
        session.takeEvents(into: &inbox)
        while let event = inbox.popFirst() {
            handleBusEvent(event)
            if busy {
                // A join's history is being read: the rest waits, in order.
                pendingEvents.append(contentsOf: inbox)
                inbox.removeAll(keepingCapacity: true)
                break
            }
        }
        // Stanzas that waited for a join's answer go on now.
        if !busy, joinsInFlight == 0, !held.isEmpty { pump() }
        flush()
    }

    /// Bus events that arrived while a join's history was read.
    private var pendingEvents: Deque<SessionEvent> = []

    private func handleBusEvent(_ event: SessionEvent) {
        guard let jid else { return }
        switch event {
        case .envelope(let envelope):
            deliver(envelope, to: jid)
        case .ack(let ack):
            guard let pending = pendingSends.popFirst(), pending.isGroupchat, let state = rooms[pending.room] else { return }
            // XEP-0045 §7.2.2: the room reflects the message to its sender, with the stanza-id.
            var echo = Stanza.element("message", NS.client, [("type", "groupchat"), ("from", mucJID(pending.room, nick: state.nick)),
                                                             ("to", jid.description)])
            if let id = pending.stanza.attribute("id") { echo.setAttribute("id", id) }
            if let subject = pending.stanza.child(named: "subject", namespace: NS.client),
               pending.stanza.child(named: "body", namespace: NS.client) == nil {
                echo.append(subject)
            } else {
                echo.append(Stanza.element("body", NS.client, text: pending.stanza.child(named: "body", namespace: NS.client)?.text ?? ""))
            }
            echo.append(Stanza.element("stanza-id", NS.sid, [("id", ack.id), ("by", mucJID(pending.room))]))
            if let origin = pending.stanza.child(named: "origin-id", namespace: NS.sid) { echo.append(origin) }
            write(echo)
        case .failed(let error, let request, let room, _):
            switch request {
            case .publish:
                if let pending = pendingSends.popFirst() {
                    write(Stanza.error(replyingTo: pending.stanza, type: "modify", condition: "not-acceptable", text: error.message))
                }
            case .join:
                joinsInFlight = max(0, joinsInFlight - 1)
                if let room, let state = rooms.removeValue(forKey: room) {
                    var stub = Stanza.element("presence", NS.client, [("from", jid.description), ("to", mucJID(room, nick: state.nick))])
                    stub.children = []
                    write(Stanza.error(replyingTo: stub, type: "cancel", condition: error.code == .noSuchRoom ? "item-not-found" : "not-allowed",
                                       text: error.message))
                }
            case .leave, .typing:
                break
            }
        case .joined(let room, let seq, _):
            joinsInFlight = max(0, joinsInFlight - 1)
            joined(room, seq: seq, to: jid)
        case .left(let room):
            guard let state = rooms.removeValue(forKey: room) else { return }
            write(Stanza.element("presence", NS.client, [("type", "unavailable"), ("from", mucJID(room, nick: state.nick)),
                                                         ("to", jid.description)],
                                 [mucUserX(status: [110])]))
        }
    }

    private func mucUserX(status: [Int], role: String = "participant") -> XMLElement {
        var x = Stanza.element("x", NS.mucUser, [], [Stanza.element("item", NS.mucUser, [("affiliation", "member"), ("role", role)])])
        for code in status { x.append(Stanza.element("status", NS.mucUser, [("code", "\(code)")])) }
        return x
    }

    private func nick(for sender: Sender, in room: RoomName) -> String {
        if sender.user == session?.user, sender.via == .xmpp, let state = rooms[room] { return state.nick }
        return sender.user.rawValue
    }

    private func deliver(_ envelope: Envelope, to jid: JID) {
        switch envelope.room.scope {
        case .group:
            // No copy of the room's state is held: `announced` is updated in place below.
            guard rooms[envelope.room]?.joined == true else { return }
            if Self.isGroupchatMessage(envelope) {
                // The hot path: the message is serialized once per loop, only `to` differs.
                let encoding = groupchats.encoded(envelope, allocator: allocator)
                out.writeImmutableBuffer(encoding.head)
                out.writeString(toAttribute)
                out.writeImmutableBuffer(encoding.tail)
                return
            }
            let from = mucJID(envelope.room, nick: nick(for: envelope.from, in: envelope.room))
            switch envelope.kind {
            case .join:
                // Once per occupant: it may have been in the occupant list already.
                guard rooms[envelope.room]?.announced.joined(envelope.from) == true else { return }
                write(Stanza.element("presence", NS.client, [("from", from), ("to", jid.description)], [mucUserX(status: [])]))
            case .leave:
                guard rooms[envelope.room]?.announced.left(envelope.from) == true else { return }
                write(Stanza.element("presence", NS.client, [("type", "unavailable"), ("from", from), ("to", jid.description)],
                                     [mucUserX(status: [], role: "none")]))
            case .typing:
                write(Stanza.element("message", NS.client, [("type", "groupchat"), ("from", from), ("to", jid.description)],
                                     [Stanza.element("composing", NS.chatStates)]))
            default:
                // A subject change (the other messages took the hot path above).
                write(subjectMessage(envelope.attrs[Self.subjectAttr] ?? "", from: from, to: jid))
            }
        case .direct:
            guard envelope.from.user != session?.user, envelope.kind != .typing else { return }
            let body = envelope.kind == .chat ? envelope.body : "[\(envelope.kind.rawValue)] \(envelope.body)"
            write(Stanza.element("message", NS.client, [("type", "chat"), ("id", envelope.id),
                                                        ("from", "\(envelope.from.user)@\(domain)"), ("to", jid.description)],
                                 [Stanza.element("body", NS.client, text: body),
                                  Stanza.element("stanza-id", NS.sid, [("id", envelope.id), ("by", jid.bare.description)])]))
        case .callLog, .invalidReserved:
            return
        }
    }

    /// Whether a room envelope reaches occupants as a `<message type='groupchat'>` with a body
    /// (not a presence, chat state or subject change).
    static func isGroupchatMessage(_ envelope: Envelope) -> Bool {
        switch envelope.kind {
        case .join, .leave, .typing: false
        case .system: envelope.attrs[subjectAttr] == nil
        default: true
        }
    }

    /// A room's message as `<message type='groupchat'>` (live, or history with `<delay>`).
    ///
    /// The nick is the sender's user name: an occupant's nick in a room it joined is its user
    /// name (see `joined`), so the element is the same for every recipient but for `to`.
    static func groupchatElement(_ envelope: Envelope, to: String, mucDomain: String, delayed: Bool) -> XMLElement {
        let body = envelope.kind == .chat ? envelope.body : "[\(envelope.kind.rawValue)] \(envelope.body)"
        let room = mucJID(envelope.room, mucDomain: mucDomain)
        var message = Stanza.element("message", NS.client, [("type", "groupchat"), ("id", envelope.clientID ?? envelope.id),
                                                            ("from", mucJID(envelope.room, nick: envelope.from.user.rawValue,
                                                                            mucDomain: mucDomain)),
                                                            ("to", to)],
                                     [Stanza.element("body", NS.client, text: body),
                                      Stanza.element("stanza-id", NS.sid, [("id", envelope.id), ("by", room)])])
        if delayed { message.append(Stanza.delay(envelope.ts, from: room)) }
        return message
    }

    /// XEP-0045 §7.2: occupants' presences, self-presence (110), history, subject.
    private func joined(_ room: RoomName, seq: UInt64, to jid: JID) {
        guard var state = rooms[room], let session else { return }
        if state.joined { return }
        // The nick is the user name (status 210 when the client asked for another).
        let requested = state.nick
        state.nick = session.user.rawValue
        state.joined = true
        // Occupants whose join envelope is still on its way are listed here once, not again then.
        let occupants = shared.bus.occupants(of: room).filter { !($0.user == session.user && $0.via == .xmpp) }
        for occupant in state.announced.list(occupants) {
            write(Stanza.element("presence", NS.client, [("from", mucJID(room, nick: occupant.user.rawValue)), ("to", jid.description)],
                                 [mucUserX(status: [])]))
        }
        rooms[room] = state
        var status = [100, 110]
        if requested != state.nick { status.append(210) }
        write(Stanza.element("presence", NS.client, [("from", mucJID(room, nick: state.nick)), ("to", jid.description)],
                             [mucUserX(status: status)]))
        let request = state.history
        guard seq > 0 else {
            write(subjectMessage("", from: mucJID(room), to: jid))
            return
        }
        let bus = shared.bus
        let user = session.user
        runAsync({ () -> ([Envelope], Envelope?) in
            await Self.historyMessages(bus: bus, room: room, reader: user, through: seq, request: request)
        }) { handler, found in
            let (envelopes, subject) = found
            for envelope in envelopes {
                handler.write(Self.groupchatElement(envelope, to: jid.description, mucDomain: handler.mucDomain, delayed: true))
            }
            // The subject ends the join (XEP-0045 §7.2.15): the last one set, or empty.
            let from = subject.map { handler.mucJID(room, nick: handler.nick(for: $0.from, in: room)) } ?? handler.mucJID(room)
            handler.write(handler.subjectMessage(subject?.attrs[Self.subjectAttr] ?? "", from: from, to: jid))
        }
    }

    static let subjectAttr = "subject"

    private func subjectMessage(_ subject: String, from: String, to jid: JID) -> XMLElement {
        Stanza.element("message", NS.client, [("type", "groupchat"), ("from", from), ("to", jid.description)],
                       [Stanza.element("subject", NS.client, text: subject.isEmpty ? nil : subject)])
    }

    /// The newest `maxStanzas` messages (not joins, leaves nor subject changes) up to `seq`,
    /// newer than `since`, oldest first, and the latest subject change: read back page by
    /// page, at most a few thousand envelopes.
    static func historyMessages(bus: any MessageBus, room: RoomName, reader: UserName, through seq: UInt64,
                                request: HistoryRequest) async -> ([Envelope], Envelope?) {
        var found: [Envelope] = []
        var subject: Envelope?
        var messagesDone = request.maxStanzas == 0
        var before = seq + 1
        var scanned = 0
        // Messages are looked for in the last 5,000 envelopes, a subject in at least the last 1,000.
        while before > 1, scanned < 5000, !(messagesDone && (subject != nil || scanned >= 1000)) {
            guard let page = try? await bus.history(of: room, reader: reader, before: before, after: nil, limit: 500),
                  let first = page.first
            else { break }
            scanned += page.count
            for envelope in page.reversed() {
                if envelope.kind == .system, envelope.attrs[subjectAttr] != nil {
                    if subject == nil { subject = envelope }
                    continue
                }
                guard !messagesDone, envelope.kind != .join, envelope.kind != .leave else { continue }
                if let since = request.sinceMillis, envelope.ts < since {
                    messagesDone = true
                    continue
                }
                found.append(envelope)
                if found.count == request.maxStanzas { messagesDone = true }
            }
            before = first.seq
        }
        return (found.reversed(), subject)
    }

    func busRequestedClose(_ reason: SwitchboardError) {
        if reason.code == .slowConsumer { logger.warning("xmpp session dropped as a slow consumer") }
        streamError(reason.code == .shuttingDown ? "system-shutdown" : "policy-violation", text: reason.message)
    }

    // MARK: Asynchronous work

    private func runAsync<T: Sendable>(_ work: @escaping @Sendable () async -> T, then: @escaping (XMPPConnectionHandler, T) -> Void) {
        guard let context else { return }
        busy = true
        context.eventLoop.makeFutureWithTask { await work() }.assumeIsolated().whenSuccess { [self] result in
            busy = false
            guard !closing else { return }
            then(self, result)
            // Bus events that waited behind this work, then stanzas, then the outbox.
            while !busy, let event = pendingEvents.popFirst() { handleBusEvent(event) }
            pump()
            if !busy { drainOutbox() }
        }
    }

    /// A random identifier (stream ids, generated resources).
    static func randomID() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<16).map { _ in String(UInt8.random(in: 0...15, using: &generator), radix: 16) }.joined()
    }

    // MARK: Output

    private func write(_ element: XMLElement) {
        scratch.removeAll(keepingCapacity: true)
        XMLSerializer.clientStream.serialize(element, into: &scratch)
        out.writeString(scratch)
    }

    private func flush() {
        guard let context, out.readableBytes > 0 else { return }
        let buffer = out
        out = context.channel.allocator.buffer(capacity: 256)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    /// Sends a stream error and closes the stream (RFC 6120 §4.9).
    private func streamError(_ condition: String, text: String?, sendHeader: Bool = false) {
        guard !closing else { return }
        if sendHeader || phaseNeedsHeader { writeHeader() }
        closing = true
        held.removeAll()
        logger.info("xmpp stream error", metadata: ["condition": "\(condition)"])
        write(Stanza.streamError(condition, text: text))
        flushAndClose(trailer: "</stream:stream>")
    }

    /// True before any header was sent on this stream.
    private var phaseNeedsHeader: Bool {
        if case .awaitingHeader = phase { return true }
        return false
    }

    /// Sends what is pending plus `trailer`, then closes the stream so that the peer reads all
    /// of it (RFC 6120 §4.4: the peer may still be sending; its input is read and dropped).
    private func flushAndClose(trailer: String = "") {
        guard let context else { return }
        out.writeString(trailer)
        let buffer = out
        out = context.channel.allocator.buffer(capacity: 0)
        context.writeAndCloseLingering(wrapOutboundOut(buffer))
    }
}

@available(*, unavailable)
extension XMPPConnectionHandler: Sendable {}

/// Sent down each pipeline when the server shuts down.
struct XMPPShutdownEvent: Sendable {}

/// Connects an XMPP session's outbox to its event loop.
final class XMPPSessionSink: SessionSink {
    private let eventLoop: any EventLoop
    private let handler: NIOLoopBound<XMPPConnectionHandler>
    private let drainer: NIOLoopBound<any OutboxDrainer>
    private let wakeups: LoopWakeups

    init(eventLoop: any EventLoop, handler: NIOLoopBound<XMPPConnectionHandler>, drainer: NIOLoopBound<any OutboxDrainer>,
         wakeups: LoopWakeups) {
        self.eventLoop = eventLoop
        self.handler = handler
        self.drainer = drainer
        self.wakeups = wakeups
    }

    func outboxReady() { wakeups.signal(drainer) }

    func closeRequested(_ reason: SwitchboardError) {
        eventLoop.execute { self.handler.value.busRequestedClose(reason) }
    }
}
