import Crypto
import DequeModule
import Foundation
import NIOCore
import SIPWire
import SwitchboardCore

/// A SIP user the gateway delivers to: a bus session (via `sip`) and, per room or direct
/// conversation, how far delivery got. Messages are sent as MESSAGE requests to every
/// registered contact, a window at a time; a 2xx from any contact delivers one. While the
/// user has no binding nothing is sent, and on the next REGISTER delivery resumes from the
/// stored seq by reading history, so missed messages arrive in order.
final class Member {
    let user: UserName
    var session: SessionHandle?
    var rooms: [RoomName: MemberRoom] = [:]
    var sendQueue = Deque<(RoomName, Envelope)>()
    var inFlight = 0
    var stalledAt: Int64?
    /// Bumped whenever queued work is thrown away, so late results of it are ignored.
    var generation = 0
    /// client_id of a MESSAGE being published → its server transaction.
    var pendingPublishes: [String: String] = [:]
    var events = Deque<SessionEvent>()

    init(user: UserName) {
        self.user = user
    }
}

struct MemberRoom {
    /// Every seq up to this one was delivered (or needed no delivery).
    var acked: UInt64
    /// The highest seq put in the queue.
    var queuedUpTo: UInt64
    var window = Deque<(seq: UInt64, done: Bool)>()
    var catchingUp = false

    init(acked: UInt64) {
        self.acked = acked
        self.queuedUpTo = acked
    }
}

struct MembershipKey: Hashable {
    var user: UserName
    var room: RoomName
}

struct DeliveryRef {
    var user: UserName
    var room: RoomName
    var seq: UInt64
    var generation: Int
    var remaining: Int
    var outcome: Outcome = .pending

    enum Outcome { case pending, delivered, refused }
}

/// The bus talks to a member through this sink; it hops to the core's loop.
final class MemberSink: SessionSink {
    let core: NIOLoopBoundCore
    let user: UserName

    init(core: NIOLoopBoundCore, user: UserName) {
        self.core = core
        self.user = user
    }

    func outboxReady() {
        let core = self.core, user = self.user
        core.loop.execute { core.value.drainMember(user) }
    }

    func closeRequested(_ reason: SwitchboardError) {
        let core = self.core, user = self.user
        core.loop.execute { core.value.memberSessionClosed(user, reason: reason) }
    }
}

typealias NIOLoopBoundCore = NIOLoopBound<SIPCore>

extension NIOLoopBound where Value == SIPCore {
    var loop: any EventLoop { eventLoop }
}

extension SIPCore {
    // MARK: Incoming MESSAGE

    /// Requests to `sip:<room>@conference.<domain>`.
    func handleConferenceRequest(_ request: SIPRequest, key: String, from peer: SIPPeer) {
        switch request.method {
        case .message:
            guard let name = request.uri.user, let room = RoomName(name), room.rawValue == name, room.scope == .group else {
                respond(response(to: request, status: 404, warning: "no such room"), server: key)
                return
            }
            acceptMessage(request, key: key, from: peer) { core, sender, body in
                core.publishToRoom(room, body: body, request: request, sender: sender, key: key)
            }
        case .options:
            var r = response(to: request, status: 200)
            r.headers.add("Allow", "MESSAGE, OPTIONS")
            respond(r, server: key)
        default:
            var r = response(to: request, status: 405, warning: "rooms take MESSAGE")
            r.headers.add("Allow", "MESSAGE, OPTIONS")
            respond(r, server: key)
        }
    }

    /// MESSAGE to `sip:<user>@<domain>`: a direct message.
    func handleDirectMessage(_ request: SIPRequest, key: String, from peer: SIPPeer) {
        guard let name = request.uri.user, let recipient = UserName(name), recipient.rawValue == name else {
            respond(response(to: request, status: 404), server: key)
            return
        }
        // Authenticate before looking the recipient up: an unauthenticated sender gets the
        // same 407 for every name, so the 404 cannot be used to list the accounts.
        acceptMessage(request, key: key, from: peer) { core, sender, body in
            // The recipient's account is nearly always cached: then no closure (and no copy
            // of the request) waits for it.
            if let stored = core.cachedCredentials(of: recipient) {
                core.publishDirect(ifAccount: stored, to: recipient, body: body, request: request, sender: sender, key: key)
            } else {
                core.withCredentials(of: recipient) { stored in
                    core.publishDirect(ifAccount: stored, to: recipient, body: body, request: request, sender: sender, key: key)
                }
            }
        }
    }

    /// A direct message to `recipient` when the account exists (`stored`), else 404.
    private func publishDirect(
        ifAccount stored: StoredCredentials?, to recipient: UserName, body: String, request: SIPRequest, sender: UserName,
        key: String
    ) {
        guard stored != nil else {
            respond(response(to: request, status: 404, warning: "no user \(recipient)"), server: key)
            return
        }
        publishDirect(to: recipient, body: body, request: request, sender: sender, key: key)
    }

    /// Checks what every MESSAGE needs (extensions, sender, authentication, a text body),
    /// then calls `body` with the sender and the text.
    private func acceptMessage(
        _ request: SIPRequest, key: String, from peer: SIPPeer, then body: (SIPCore, UserName, String) -> Void
    ) {
        guard extensionsSupported(request, key: key, header: "Require") else { return }
        guard let from = try? request.from(), let name = from.uri.user, isOurDomain(from.uri.host),
              let sender = UserName(name), sender.rawValue == name
        else {
            respond(response(to: request, status: 403, warning: "From must be sip:<user>@\(settings.domain)"), server: key)
            return
        }
        if let type = request.headers["Content-Type"], !type.lowercased().hasPrefix("text/plain") {
            var r = response(to: request, status: 415)
            r.headers.add("Accept", "text/plain")
            respond(r, server: key)
            return
        }
        guard request.body.count <= settings.maxBodyBytes else {
            respond(response(to: request, status: 413, warning: "the body limit is \(settings.maxBodyBytes) bytes"), server: key)
            return
        }
        guard let text = String(validating: request.body, as: UTF8.self), !text.isEmpty else {
            respond(response(to: request, status: 400, warning: "a MESSAGE carries a UTF-8 text body"), server: key)
            return
        }
        if isTrusted(peer, as: sender) {
            body(self, sender, text)
        } else {
            authenticate(request, key: key, header: "Proxy-Authorization", challengeStatus: 407, as: sender) { _ in
                body(self, sender, text)
            }
        }
    }

    private func clientID(for request: SIPRequest) -> String {
        let material = "\(request.callID ?? "")|\(request.headers["CSeq"] ?? "")|\((try? request.from().tag) ?? "")"
        return "sip-" + Array(SHA256.hash(data: Array(material.utf8))).prefix(12).hexadecimal
    }

    private func publishToRoom(_ room: RoomName, body: String, request: SIPRequest, sender: UserName, key: String) {
        let member = ensureMember(sender)
        guard let session = member.session else {
            respond(response(to: request, status: 503), server: key)
            return
        }
        if body.trimmingCharacters(in: .whitespacesAndNewlines) == "/leave" {
            if member.rooms.removeValue(forKey: room) != nil {
                try? bus.leave(session, room: room)
                let state = self.state
                hop({ try await state.deleteSIPMembership(user: sender, room: room) }) { _, _ in }
            }
            respond(response(to: request, status: 200), server: key)
            return
        }
        if member.rooms[room] == nil {
            do {
                try bus.join(session, room: room, since: nil)
            } catch {
                respond(response(to: request, status: Self.status(for: error), warning: error.message), server: key)
                return
            }
            member.rooms[room] = MemberRoom(acked: bus.lastSeq(of: room))
            markDirty(member.user, room)
        }
        publish(EnvelopeDraft(room: room, from: Sender(user: sender, via: .sip), body: body, clientID: clientID(for: request)),
                member: member, session: session, request: request, key: key)
    }

    private func publishDirect(to recipient: UserName, body: String, request: SIPRequest, sender: UserName, key: String) {
        let member = ensureMember(sender)
        guard let session = member.session else {
            respond(response(to: request, status: 503), server: key)
            return
        }
        let room = RoomName.direct(sender, recipient)
        if member.rooms[room] == nil {
            member.rooms[room] = MemberRoom(acked: bus.lastSeq(of: room))
            markDirty(member.user, room)
        }
        publish(EnvelopeDraft(room: room, from: Sender(user: sender, via: .sip), body: body, clientID: clientID(for: request)),
                member: member, session: session, request: request, key: key)
    }

    private func publish(_ draft: EnvelopeDraft, member: Member, session: SessionHandle, request: SIPRequest, key: String) {
        do {
            try bus.publish(draft, from: session)
            if let id = draft.clientID { member.pendingPublishes[id] = key }
        } catch {
            respond(response(to: request, status: Self.status(for: error), warning: error.message), server: key)
        }
    }

    static func status(for error: SwitchboardError) -> Int {
        switch error.code {
        case .forbidden, .tooManyRooms: 403
        case .noSuchRoom, .invalidRoom, .noSuchUser, .invalidUser: 404
        case .bodyTooLarge: 413
        case .invalidBody, .invalidClientID, .invalidAttrs: 400
        case .rateLimited, .storageUnavailable, .shuttingDown, .sessionClosed: 503
        default: 500
        }
    }

    // MARK: Members

    @discardableResult
    func ensureMember(_ user: UserName) -> Member {
        if let member = members[user] {
            if member.session == nil { openSession(member) }
            return member
        }
        let member = Member(user: user)
        members[user] = member
        openSession(member)
        return member
    }

    private func openSession(_ member: Member) {
        let session = bus.openSession(user: member.user, display: nil, via: .sip,
                                      sink: MemberSink(core: bound, user: member.user))
        member.session = session
        for room in member.rooms.keys where room.scope == .group {
            try? bus.join(session, room: room, since: nil)
        }
    }

    func memberSessionClosed(_ user: UserName, reason: SwitchboardError) {
        guard let member = members[user] else { return }
        logger.warning("SIP member session closed by the bus; it is reopened", metadata: ["user": "\(user)", "reason": "\(reason)"])
        if let session = member.session { bus.closeSession(session) }
        member.session = nil
        reset(member)
        openSession(member)
        if isOnline(user) { resume(member) }
    }

    func isOnline(_ user: UserName) -> Bool { !(bindings[user]?.isEmpty ?? true) }

    /// A REGISTER added a contact: start (or restart) delivery from what was acknowledged.
    func memberCameOnline(_ user: UserName, wasOnline: Bool) {
        let member = ensureMember(user)
        if wasOnline && member.stalledAt == nil { return }
        resume(member)
    }

    func memberWentOffline(_ user: UserName) {
        guard let member = members[user] else { return }
        reset(member)
    }

    private func resume(_ member: Member) {
        reset(member)
        member.stalledAt = nil
        for room in member.rooms.keys { startCatchUp(member, room) }
    }

    /// Throws away queued and in-flight work; delivery restarts from `acked`.
    private func reset(_ member: Member) {
        member.generation += 1
        member.sendQueue.removeAll()
        member.inFlight = 0
        for room in Array(member.rooms.keys) {
            member.rooms[room]!.queuedUpTo = member.rooms[room]!.acked
            member.rooms[room]!.window.removeAll()
            member.rooms[room]!.catchingUp = false
        }
    }

    func drainMember(_ user: UserName) {
        guard let member = members[user], let session = member.session else { return }
        session.takeEvents(into: &member.events)
        while let event = member.events.popFirst() {
            switch event {
            case .envelope(let envelope): memberReceived(envelope, member: member)
            case .ack(let ack): memberPublished(ack, member: member)
            case .failed(let error, _, _, let clientID):
                if let clientID, let key = member.pendingPublishes.removeValue(forKey: clientID),
                   let request = serverTransactions[key]?.request {
                    respond(response(to: request, status: Self.status(for: error), warning: error.message), server: key)
                }
            case .joined, .left:
                break
            }
        }
        flushAfterQueuedTasks()
    }

    private func memberPublished(_ ack: Ack, member: Member) {
        if let clientID = ack.clientID, let key = member.pendingPublishes.removeValue(forKey: clientID),
           let request = serverTransactions[key]?.request {
            respond(response(to: request, status: 200), server: key)
        }
        guard !ack.duplicate, let queuedUpTo = member.rooms[ack.room]?.queuedUpTo, isOnline(member.user),
              member.stalledAt == nil, member.rooms[ack.room]?.catchingUp == false
        else { return }
        // Mutated in place through the dictionary: a copy would copy the window's storage.
        if ack.seq == queuedUpTo + 1 {
            member.rooms[ack.room]!.queuedUpTo = ack.seq
            member.rooms[ack.room]!.window.append((ack.seq, true))
            advance(member, ack.room)
        } else if ack.seq > queuedUpTo + 1 {
            startCatchUp(member, ack.room)
        }
    }

    private func memberReceived(_ envelope: Envelope, member: Member) {
        let roomName = envelope.room
        if member.rooms[roomName] == nil {
            guard case .direct = roomName.scope else { return }
            member.rooms[roomName] = MemberRoom(acked: envelope.seq - 1)
            markDirty(member.user, roomName)
        }
        guard isOnline(member.user), member.stalledAt == nil, member.rooms[roomName]?.catchingUp == false,
              let queuedUpTo = member.rooms[roomName]?.queuedUpTo, envelope.seq > queuedUpTo
        else { return }
        if envelope.seq == queuedUpTo + 1 {
            enqueue(envelope, member: member)
        } else {
            startCatchUp(member, roomName)
        }
    }

    private func enqueue(_ envelope: Envelope, member: Member) {
        let roomName = envelope.room
        guard member.rooms[roomName] != nil else { return }
        let deliverable = envelope.kind == .chat && !(envelope.from.user == member.user && envelope.from.via == .sip)
        member.rooms[roomName]!.queuedUpTo = envelope.seq
        member.rooms[roomName]!.window.append((envelope.seq, !deliverable))
        if deliverable { member.sendQueue.append((roomName, envelope)) }
        advance(member, roomName)
        pump(member)
    }

    private func advance(_ member: Member, _ roomName: RoomName) {
        guard member.rooms[roomName] != nil else { return }
        var moved = false
        while let first = member.rooms[roomName]!.window.first, first.done {
            member.rooms[roomName]!.acked = first.seq
            member.rooms[roomName]!.window.removeFirst()
            moved = true
        }
        if moved { markDirty(member.user, roomName) }
    }

    private func startCatchUp(_ member: Member, _ roomName: RoomName) {
        guard let after = member.rooms[roomName]?.queuedUpTo, member.rooms[roomName]?.catchingUp == false else { return }
        member.rooms[roomName]!.catchingUp = true
        let generation = member.generation, user = member.user, bus = self.bus
        hop({ try await bus.history(of: roomName, reader: user, before: nil, after: after, limit: 200) }) { core, result in
            guard let member = core.members[user], member.generation == generation, member.rooms[roomName] != nil else { return }
            member.rooms[roomName]!.catchingUp = false
            let envelopes = (try? result.get()) ?? []
            for envelope in envelopes where envelope.seq > member.rooms[roomName]!.queuedUpTo {
                core.enqueue(envelope, member: member)
            }
            if !envelopes.isEmpty, core.bus.lastSeq(of: roomName) > member.rooms[roomName]!.queuedUpTo {
                core.startCatchUp(member, roomName)
            }
            core.output?.flush()
        }
    }

    private func pump(_ member: Member) {
        while member.inFlight < settings.deliveryWindow, let (room, envelope) = member.sendQueue.popFirst() {
            guard let contacts = bindings[member.user], !contacts.isEmpty else {
                member.sendQueue.prepend((room, envelope))
                return
            }
            member.inFlight += 1
            let id = nextID()
            deliveries[id] = DeliveryRef(user: member.user, room: room, seq: envelope.seq, generation: member.generation,
                                         remaining: contacts.count)
            for binding in contacts {
                let branch = newBranch()
                let request = makeMessage(envelope, to: member.user, contact: binding.contact.uri,
                                          over: binding.source.transport, branch: branch)
                startClient(request, to: binding.source, key: Self.clientKey(branch: branch, method: .message)) { core, response in
                    core.deliveryAnswered(id, response)
                }
            }
        }
    }

    /// The MESSAGE that carries `envelope` to a member's contact.
    func makeMessage(_ envelope: Envelope, to user: UserName, contact: SIPURI, over transport: SIPPeer.Transport,
                     branch: String) -> SIPRequest {
        var headers = SIPHeaders()
        headers.reserveCapacity(10)
        headers.add("Via", "SIP/2.0/\(transport.rawValue.uppercased()) \(hostPort);branch=\(branch);rport")
        headers.add("Max-Forwards", "70")
        let display = "\(envelope.from.display ?? envelope.from.user.rawValue) (\(envelope.from.via.rawValue))"
        let fromURI: SIPURI
        if case .direct = envelope.room.scope {
            fromURI = SIPURI(user: envelope.from.user.rawValue, host: settings.domain)
        } else {
            fromURI = SIPURI(user: envelope.room.rawValue, host: settings.conferenceDomain)
        }
        headers.add("From", SIPAddress(displayName: display, uri: fromURI, parameters: [SIPParameter("tag", newTag())]).description)
        headers.add("To", SIPAddress(uri: SIPURI(user: user.rawValue, host: settings.domain)).description)
        headers.add("Call-ID", "\(nextID())@\(settings.advertiseHost)")
        headers.add("CSeq", "1 MESSAGE")
        headers.add("Content-Type", "text/plain;charset=UTF-8")
        headers.add("X-Switchboard-Room", envelope.room.rawValue)
        headers.add("X-Switchboard-Seq", "\(envelope.seq)")
        return SIPRequest(method: .message, uri: contact, headers: headers, body: Array(envelope.body.utf8))
    }

    private func deliveryAnswered(_ id: String, _ response: SIPResponse) {
        guard !response.isProvisional, var ref = deliveries[id] else { return }
        ref.remaining -= 1
        if response.isSuccess {
            ref.outcome = .delivered
        } else if ref.outcome == .pending, ![408, 480, 503].contains(response.status) {
            // A final refusal (4xx, 5xx, 6xx other than "try later"): skip the message, or one
            // phone that refuses it would hold up everything after it.
            ref.outcome = .refused
        }
        guard ref.outcome == .delivered || ref.remaining == 0 else {
            deliveries[id] = ref
            return
        }
        deliveries[id] = nil
        guard let member = members[ref.user], member.generation == ref.generation else { return }
        member.inFlight -= 1
        switch ref.outcome {
        case .delivered, .refused:
            if ref.outcome == .refused {
                logger.info("a SIP contact refused a message; skipped", metadata: [
                    "user": "\(ref.user)", "room": "\(ref.room)", "seq": "\(ref.seq)", "status": "\(response.status)"])
            }
            if let index = member.rooms[ref.room]?.window.firstIndex(where: { $0.seq == ref.seq }) {
                member.rooms[ref.room]!.window[index].done = true
                advance(member, ref.room)
            }
            pump(member)
        case .pending:
            // No contact took it: stop here and start again from `acked` later.
            logger.info("SIP contacts unreachable; delivery paused", metadata: ["user": "\(ref.user)", "status": "\(response.status)"])
            reset(member)
            member.stalledAt = clock()
        }
    }

    /// Retries stalled members every 30 s while they have contacts.
    func retryStalledMembers(now: Int64) {
        for member in members.values {
            if let at = member.stalledAt, now - at > 30_000, isOnline(member.user) { resume(member) }
        }
    }

    // MARK: Persistence

    func markDirty(_ user: UserName, _ room: RoomName) {
        dirtyMemberships.insert(MembershipKey(user: user, room: room))
        guard !membershipFlushScheduled else { return }
        membershipFlushScheduled = true
        let bound = self.bound
        loop.scheduleTask(in: .milliseconds(200)) { bound.value.flushMemberships() }
    }

    func flushMemberships() {
        membershipFlushScheduled = false
        let records = dirtyMemberships.compactMap { key -> SIPMembershipRecord? in
            guard let room = members[key.user]?.rooms[key.room] else { return nil }
            return SIPMembershipRecord(user: key.user, room: key.room, deliveredSeq: room.acked)
        }
        dirtyMemberships.removeAll()
        let state = self.state
        hop({ try await state.saveSIPMemberships(records) }) { core, result in
            if case .failure(let error) = result {
                core.logger.error("cannot store SIP memberships", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Loads stored memberships at start (before the sockets open).
    func restoreMemberships(_ records: [SIPMembershipRecord]) {
        for record in records {
            let member = members[record.user] ?? Member(user: record.user)
            members[record.user] = member
            member.rooms[record.room] = MemberRoom(acked: record.deliveredSeq)
        }
        for user in Set(bindings.keys).union(members.keys) {
            let member = ensureMember(user)
            if isOnline(user) { resume(member) }
        }
    }
}
