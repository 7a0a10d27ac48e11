import NIOCore
import SIPWire
import SwitchboardCore

/// A request being forwarded statefully: one server transaction, one client branch per target.
final class ProxyContext {
    let serverKey: String
    let request: SIPRequest
    var branches: [ProxyBranch] = []
    var best: SIPResponse?
    var finalSent = false
    var cancelled = false
    let call: CallKey?

    init(serverKey: String, request: SIPRequest, call: CallKey?) {
        self.serverKey = serverKey
        self.request = request
        self.call = call
    }

    var allBranchesDone: Bool { branches.allSatisfy { $0.final != nil } }
}

struct ProxyBranch {
    var clientKey: String
    var request: SIPRequest
    var peer: SIPPeer
    var provisional = false
    var final: Int?
}

struct CallKey: Hashable {
    var callID: String
    var caller: UserName
    var callee: UserName
}

/// A call the proxy saw start, for the `call` envelopes in `calls.<user>`.
struct CallRecord {
    var key: CallKey
    var startedAt: Int64
    var ringing = false
    var answeredAt: Int64?
}

/// The stateful proxy (RFC 3261 §16): INVITE forking to every binding, Record-Route,
/// CANCEL, in-dialog requests by loose routing, and call events into the bus.
extension SIPCore {
    /// INVITE, OPTIONS, INFO, … to `sip:<user>@<domain>`.
    func proxyToUser(_ request: SIPRequest, key: String, from peer: SIPPeer) {
        guard let name = request.uri.user, let callee = UserName(name), callee.rawValue == name else {
            respond(response(to: request, status: 404), server: key)
            return
        }
        if let maxForwards = try? request.maxForwards(), maxForwards == 0 {
            respond(response(to: request, status: 483), server: key)
            return
        }
        if request.headers.values("Via").contains(where: { ($0.contains(hostPort) || $0.contains("\(settings.bind):\(settings.port)")) && $0.contains("z9hG4bK-sb") }) {
            respond(response(to: request, status: 482), server: key)
            return
        }
        if request.method == .invite, serverTransactions[key]?.transaction.lastResponse == nil {
            // 100 Trying at once, so the caller stops retransmitting (RFC 3261 §16.2); once
            // only, as an INVITE handled again after its caller's credentials were loaded
            // comes back here.
            respond(response(to: request, status: 100), server: key)
        }
        guard let caller = (try? request.from()).flatMap({ from in
            from.uri.user.flatMap { UserName($0) }.flatMap { isOurDomain(from.uri.host) ? $0 : nil }
        }) else {
            respond(response(to: request, status: 403, warning: "From must be sip:<user>@\(settings.domain)"), server: key)
            return
        }
        let inDialog = (try? request.to().tag) != nil
        let proceed = { (core: SIPCore) in
            core.withCredentials(of: callee) { stored in
                guard stored != nil else {
                    core.respond(core.response(to: request, status: 404, warning: "no user \(callee)"), server: key)
                    return
                }
                let targets = (core.bindings[callee] ?? []).filter { $0.expiresAt > core.clock() }
                guard !targets.isEmpty else {
                    if request.method == .invite {
                        core.emitCall(CallKey(callID: request.callID ?? "", caller: caller, callee: callee),
                                      state: "failed", extra: ["status": "480"], body: "\(callee) is not reachable")
                    }
                    core.respond(core.response(to: request, status: 480, warning: "\(callee) has no registered contact"), server: key)
                    return
                }
                let call = request.method == .invite && !inDialog
                    ? CallKey(callID: request.callID ?? "", caller: caller, callee: callee) : nil
                core.fork(request, key: key, to: targets.map { ($0.contact.uri, $0.source) }, recordRoute: request.method == .invite,
                          call: call)
            }
        }
        // A To tag does not exempt a request addressed to a user (real in-dialog requests are
        // loose-routed to a contact): only the registered source or a digest answer does.
        if isTrusted(peer, as: caller) {
            proceed(self)
        } else {
            authenticate(request, key: key, header: "Proxy-Authorization", challengeStatus: 407, as: caller) { _ in proceed(self) }
        }
    }

    /// Forwards a copy of `request` to each target, each in its own client transaction.
    func fork(_ request: SIPRequest, key: String, to targets: [(SIPURI?, SIPPeer)], recordRoute: Bool, call: CallKey?) {
        let context = ProxyContext(serverKey: key, request: request, call: call)
        proxyContexts[key] = context
        if let call {
            calls[call.callID] = CallRecord(key: call, startedAt: clock())
        }
        for (uri, peer) in targets {
            var forwarded = request
            if let uri { forwarded.uri = uri }
            let branch = newBranch()
            forwarded.headers.prepend("Via", "SIP/2.0/\(peer.transport.rawValue.uppercased()) \(hostPort);branch=\(branch)")
            let maxForwards = ((try? request.maxForwards()) ?? nil) ?? 70
            forwarded.headers.set("Max-Forwards", "\(max(0, maxForwards - 1))")
            if recordRoute {
                forwarded.headers.prepend("Record-Route", "<sip:\(hostPort);transport=\(peer.transport.rawValue);lr>")
            }
            let clientKey = Self.clientKey(branch: branch, method: request.method)
            context.branches.append(ProxyBranch(clientKey: clientKey, request: forwarded, peer: peer))
            startClient(forwarded, to: peer, key: clientKey) { core, response in
                core.branchResponded(key, clientKey: clientKey, response)
            }
        }
    }

    private func branchResponded(_ key: String, clientKey: String, _ response: SIPResponse) {
        guard let context = proxyContexts[key], let index = context.branches.firstIndex(where: { $0.clientKey == clientKey }) else {
            return
        }
        var relayed = response
        relayed.headers.removeFirstValue("Via")
        if response.isProvisional {
            guard response.status > 100, !context.finalSent else { return }
            context.branches[index].provisional = true
            if let call = context.call, var record = calls[call.callID], !record.ringing, (180...183).contains(response.status) {
                record.ringing = true
                calls[call.callID] = record
                emitCall(call, state: "ringing", extra: [:], body: "\(call.caller) is calling \(call.callee)")
            }
            respond(relayed, server: key)
            return
        }
        context.branches[index].final = response.status
        if response.status == 408, context.branches[index].provisional, context.request.method == .invite {
            // Timer C: stop the ringing branch.
            cancel(context.branches[index])
        }
        if relayed.status == 503 {
            // RFC 3261 §16.7 step 6: a proxy does not pass 503 on.
            relayed.status = 500
            relayed.reason = SIPResponse.defaultReason(500)
        }
        if response.isSuccess {
            // Every 2xx goes to the caller; the other branches are cancelled.
            respond(relayed, server: key)
            if !context.finalSent {
                context.finalSent = true
                if let call = context.call, var record = calls[call.callID], record.answeredAt == nil {
                    record.answeredAt = clock()
                    calls[call.callID] = record
                    emitCall(call, state: "answered", extra: [:], body: "\(call.callee) answered \(call.caller)")
                }
                cancelPendingBranches(context)
            }
            return
        }
        if context.best == nil || Self.preference(response.status) < Self.preference(context.best!.status) {
            context.best = relayed
        }
        if context.allBranchesDone && !context.finalSent {
            context.finalSent = true
            let best = context.best ?? relayed
            if let call = context.call {
                calls[call.callID] = nil
                emitCall(call, state: "failed", extra: ["status": "\(best.status)"],
                         body: "call from \(call.caller) to \(call.callee) failed: \(best.status) \(best.reason)")
            }
            respond(best, server: key)
        }
    }

    /// RFC 3261 §16.7: prefer 6xx, then the lowest class; 503 becomes the least preferred.
    static func preference(_ status: Int) -> Int {
        switch status {
        case 600...699: 0
        case 503: 900
        default: status
        }
    }

    private func cancelPendingBranches(_ context: ProxyContext) {
        for branch in context.branches where branch.final == nil && branch.request.method == .invite {
            cancel(branch)
        }
    }

    private func cancel(_ branch: ProxyBranch) {
        do {
            var headers = SIPHeaders()
            if let via = branch.request.headers.values("Via").first { headers.add("Via", via) }
            headers.add("Max-Forwards", "70")
            for name in ["From", "To", "Call-ID"] {
                if let value = branch.request.headers[name] { headers.add(name, value) }
            }
            let number = (try? branch.request.cseq().number) ?? 1
            headers.add("CSeq", "\(number) CANCEL")
            for route in branch.request.headers.all("Route") { headers.add("Route", route) }
            let cancel = SIPRequest(method: .cancel, uri: branch.request.uri, headers: headers)
            startClient(cancel, to: branch.peer) { _, _ in }
        }
    }

    /// CANCEL (RFC 3261 §16.10): 200 to the CANCEL, then CANCEL every pending branch.
    func handleCancel(_ request: SIPRequest, via: SIPVia, from peer: SIPPeer) {
        let inviteKey = Self.serverKey(branch: via.branch, via: via, method: .invite, callID: request.callID ?? "",
                                       cseq: (try? request.cseq().number) ?? 0)
        guard let context = proxyContexts[inviteKey], serverTransactions[inviteKey]?.transaction.isPending == true else {
            sendStateless(response(to: request, status: 481), to: peer)
            return
        }
        sendStateless(response(to: request, status: 200), to: peer)
        context.cancelled = true
        cancelPendingBranches(context)
    }

    /// Timer H/B fired for a proxied INVITE's server side: nothing more to do than forget it.
    func proxyTimedOut(server key: String) {
        proxyContexts[key] = nil
    }

    /// A 2xx retransmission whose client transaction ended: pass it on by its next Via.
    func forwardStrayResponse(_ response: SIPResponse) {
        var relayed = response
        guard let top = try? response.topVia(), top.host == settings.advertiseHost || top.host == settings.bind else { return }
        relayed.headers.removeFirstValue("Via")
        guard let next = try? relayed.topVia(), let peer = peerFor(via: next) else { return }
        output?.send(relayed.serialize(), to: peer)
    }

    private func peerFor(via: SIPVia) -> SIPPeer? {
        let host = via.parameters[parameter: "received"] ?? via.host
        let port = via.parameters[parameter: "rport"].flatMap { Int($0) } ?? via.port ?? 5060
        guard let address = try? SocketAddress(ipAddress: host, port: port) else { return nil }
        return SIPPeer(transport: via.transport == "TCP" ? .tcp : .udp, address: address)
    }

    /// Requests inside a dialog we record-routed (ACK for 2xx, BYE, re-INVITE, INFO, …):
    /// pop our Route, forward to the next Route or the Request-URI.
    func forwardInDialog(_ request: SIPRequest, from peer: SIPPeer, stateless: Bool, serverKey: String? = nil) {
        var forwarded = request
        var routes = (try? request.routes()) ?? []
        if let top = routes.first, isOurRoute(top.uri) {
            forwarded.headers.removeFirstValue("Route")
            routes.removeFirst()
        }
        let targetURI = routes.first?.uri ?? forwarded.uri
        let target: SIPPeer?
        if let (_, binding) = bindingOwner(ofContact: targetURI) {
            target = binding.source
        } else if let address = try? SocketAddress(ipAddress: targetURI.host, port: targetURI.port ?? 5060) {
            let transport: SIPPeer.Transport = targetURI.parameters[parameter: "transport"]?.lowercased() == "tcp" ? .tcp : .udp
            target = SIPPeer(transport: transport, address: address)
        } else {
            target = nil
        }
        guard let target, !(isOurAddress(targetURI)) else {
            if let serverKey { respond(response(to: request, status: 404, warning: "no route to \(targetURI)"), server: serverKey) }
            return
        }
        if let maxForwards = try? request.maxForwards(), maxForwards == 0 {
            if let serverKey { respond(response(to: request, status: 483), server: serverKey) }
            return
        }
        if request.method == .bye, let callID = request.callID, let record = calls.removeValue(forKey: callID) {
            let seconds = record.answeredAt.map { max(0, (clock() - $0) / 1000) } ?? 0
            emitCall(record.key, state: "ended", extra: ["duration": "\(seconds)"],
                     body: "call between \(record.key.caller) and \(record.key.callee) ended after \(seconds) s")
        }
        if stateless || serverKey == nil {
            let maxForwards = ((try? request.maxForwards()) ?? nil) ?? 70
            forwarded.headers.set("Max-Forwards", "\(max(0, maxForwards - 1))")
            forwarded.headers.prepend("Via", "SIP/2.0/\(target.transport.rawValue.uppercased()) \(hostPort);branch=\(newBranch())")
            output?.send(forwarded.serialize(), to: target)
            return
        }
        fork(forwarded, key: serverKey!, to: [(nil, target)], recordRoute: false, call: nil)
    }

    /// Forgets calls whose end the proxy never saw (the BYE took another path) after a day.
    func forgetStaleCalls(now: Int64) {
        calls = calls.filter { now - $0.value.startedAt < 86_400_000 }
    }

    // MARK: Call events

    /// A `call` envelope in the call logs of both parties.
    func emitCall(_ call: CallKey, state: String, extra: [String: String], body: String) {
        var attrs = ["call_id": call.callID, "from": call.caller.rawValue, "to": call.callee.rawValue, "state": state]
        attrs.merge(extra) { _, new in new }
        let logger = self.logger
        for user in Set([call.caller, call.callee]) {
            let draft = EnvelopeDraft(room: .callLog(of: user), from: Sender(user: call.caller, via: .sip), kind: .call,
                                      body: body, attrs: attrs)
            bus.submit(draft, privileged: true) { result in
                if case .failure(let error) = result {
                    logger.warning("cannot log a call event", metadata: ["error": "\(error)"])
                }
            }
        }
    }
}
