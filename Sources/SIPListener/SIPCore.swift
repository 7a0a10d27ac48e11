import Crypto
import DequeModule
import Foundation
import HeapModule
import Logging
import NIOCore
import SIPWire
import SwitchboardCore

/// Sends bytes to a peer; implemented by the listener's UDP channel and TCP connections.
protocol SIPWireOutput: AnyObject {
    /// False when the peer cannot be reached (a TCP peer without a connection).
    @discardableResult
    func send(_ bytes: [UInt8], to peer: SIPPeer) -> Bool
    func flush()
}

/// The SIP server's logic: transactions, registrar, proxy, messaging, call events.
///
/// It lives on one event loop: every entry point runs there (the UDP channel's loop; TCP
/// connections and the bus hop to it through ``NIOLoopBound``). The state machines it drives
/// do no I/O; this class turns their actions into sends and timers.
final class SIPCore {
    let loop: any EventLoop
    let settings: SIPSettings
    let bus: any MessageBus
    let accounts: any AccountStore
    let state: any SIPStateStore
    let logger: Logger
    var output: (any SIPWireOutput)?
    let clock: () -> Int64

    var serverTransactions: [String: ServerEntry] = [:]
    var clientTransactions: [String: ClientEntry] = [:]
    var timerHeap = Heap<TimerEntry>()
    var timerScheduled: Int64?
    var nonces: DigestNonces
    var credentialCache: [UserName: CachedCredentials] = [:]
    var credentialWaiters: [UserName: [(StoredCredentials?) -> Void]] = [:]

    // Registrar
    var bindings: [UserName: [Binding]] = [:]
    var trustedSources: [SIPPeer: Set<UserName>] = [:]
    var contactOwners: [String: UserName] = [:]
    var bindingWrites: [UserName: [SIPBindingRecord]] = [:]
    var bindingWriteWaiters: [() -> Void] = []
    var bindingWriteInFlight = false
    var bindingWriteScheduled = false
    /// A flush of the output waits behind the tasks already queued on the loop.
    var flushQueued = false

    // Members (SIP users with a bus session)
    var members: [UserName: Member] = [:]
    var deliveries: [String: DeliveryRef] = [:]
    var dirtyMemberships: Set<MembershipKey> = []
    var membershipFlushScheduled = false

    // Proxy
    var proxyContexts: [String: ProxyContext] = [:]
    var calls: [String: CallRecord] = [:]

    var rateBuckets: [SIPPeer: TokenBucket] = [:]
    var counter: UInt64 = 0
    let instance: String

    init(
        loop: any EventLoop, settings: SIPSettings, bus: any MessageBus, accounts: any AccountStore,
        state: any SIPStateStore, logger: Logger, clock: @escaping () -> Int64 = WallClock.millis
    ) {
        self.loop = loop
        self.settings = settings
        self.bus = bus
        self.accounts = accounts
        self.state = state
        self.logger = logger
        self.clock = clock
        self.nonces = DigestNonces(realm: settings.domain, ttlSeconds: settings.nonceTTLSeconds,
                                   algorithms: settings.digestAlgorithms)
        var rng = SystemRandomNumberGenerator()
        self.instance = String(rng.next() as UInt32, radix: 36)
        // Sized once for a busy server, so the table does not stop the loop to rehash while
        // it grows (completed UDP transactions stay 32 s: 64k is 1,000 registrations/s).
        serverTransactions.reserveCapacity(min(1 << 16, settings.maxTransactions))
    }

    var bound: NIOLoopBound<SIPCore> { NIOLoopBound(self, eventLoop: loop) }

    /// Runs `body` on the core's loop once an async operation finishes.
    func hop<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T,
                          then body: @escaping (SIPCore, Result<T, any Error>) -> Void) {
        let bound = NIOLoopBound(self, eventLoop: loop)
        let continuation = NIOLoopBound(body, eventLoop: loop)
        let loop = self.loop
        Task {
            let result: Result<T, any Error>
            do { result = .success(try await operation()) } catch { result = .failure(error) }
            loop.execute { continuation.value(bound.value, result) }
        }
    }

    // MARK: Identifiers

    func nextID() -> String {
        counter &+= 1
        return instance + String(counter, radix: 36)
    }

    func newBranch() -> String { "z9hG4bK-sb" + nextID() }
    func newTag() -> String { "sb" + nextID() }

    /// The sent-by of our Via and the host:port of our Record-Route.
    var hostPort: String { "\(settings.advertiseHost):\(settings.port)" }

    func isOurAddress(_ uri: SIPURI) -> Bool {
        let port = uri.port ?? 5060
        return port == settings.port && (uri.host == settings.advertiseHost || uri.host == settings.bind)
    }

    /// A Route URI that names this proxy: our address, or the domain without a port.
    func isOurRoute(_ uri: SIPURI) -> Bool {
        isOurAddress(uri) || (uri.host == settings.domain && (uri.port == nil || uri.port == settings.port))
    }

    /// An in-dialog request may go on when it comes from a registered contact or goes to one.
    func mayRelayInDialog(_ request: SIPRequest, from peer: SIPPeer, routes: [SIPAddress]) -> Bool {
        if trustedSources[peer] != nil { return true }
        return bindingOwner(ofContact: routes.first?.uri ?? request.uri) != nil
    }

    /// Our domain, or the address we listen on (UAs often write `sip:bob@127.0.0.1:5060`).
    func isOurDomain(_ host: String) -> Bool {
        host == settings.domain || host == settings.advertiseHost || host == settings.bind
    }

    // MARK: Input

    /// One message from the network. With `flush` false the caller flushes the output
    /// itself, once per burst of reads, so that UDP replies go out in one `sendmmsg`.
    func receive(_ message: consuming SIPMessage, from peer: SIPPeer, flush: Bool = true) {
        switch consume message {
        case .request(let request): receiveRequest(request, from: peer)
        case .response(let response): receiveResponse(response, from: peer)
        }
        if flush { output?.flush() }
    }

    /// Bytes that did not parse: answer with the error's status when enough headers were read.
    func receiveInvalid(_ error: SIPParseError, looksLikeRequest: Bool, from peer: SIPPeer) {
        SwitchboardMetrics.reject(.sip, reason: SwitchboardError.Code(rawValue: error.code))
        guard let headers = error.partialHeaders, looksLikeRequest,
              headers["Via"] != nil, headers["Call-ID"] != nil, headers["CSeq"] != nil,
              headers["From"] != nil, headers["To"] != nil,
              !(headers["CSeq"] ?? "").hasSuffix("ACK")
        else {
            logger.debug("dropped an unparsable SIP message", metadata: ["peer": "\(peer)", "error": "\(error)"])
            return
        }
        var response = SIPResponse(status: error.status, reason: nil)
        for via in headers.values("Via").prefix(1) { response.headers.add("Via", via) }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            if let value = headers[name] { response.headers.add(name, name == "To" ? addTag(value) : value) }
        }
        response.headers.add("Warning", "399 \(settings.advertiseHost) \"\(error.message.prefix(120).replacingOccurrences(of: "\"", with: "'"))\"")
        output?.send(response.serialize(), to: peer)
        output?.flush()
    }

    /// False for bytes that start like a status line (a response is never answered).
    static func looksLikeRequest(_ bytes: [UInt8]) -> Bool {
        let prefix = bytes.drop(while: { $0 == 13 || $0 == 10 }).prefix(4)
        return !prefix.elementsEqual("SIP/".utf8)
    }

    private func addTag(_ to: String) -> String {
        Self.hasTagParameter(to) ? to : to + ";tag=" + newTag()
    }

    /// Whether a To/From value has `;tag=` (any case). A byte scan: `String.contains` with a
    /// string argument goes through Foundation and cost ~2 % of a REGISTER.
    static func hasTagParameter(_ value: String) -> Bool {
        var matched = 0
        for byte in value.utf8 {
            let lower = byte.asciiLowercased
            if lower == tagNeedle[matched] {
                matched += 1
                if matched == tagNeedle.count { return true }
            } else {
                matched = lower == tagNeedle[0] ? 1 : 0
            }
        }
        return false
    }

    private static let tagNeedle = Array(";tag=".utf8)

    func receiveRequest(_ request: consuming SIPRequest, from peer: SIPPeer) {
        guard withinRate(peer) else {
            SwitchboardMetrics.reject(.sip, reason: .rateLimited)
            if request.method != .ack, (try? request.topVia()) != nil {
                var r = response(to: request, status: 503, warning: "too many requests from \(peer)")
                r.headers.add("Retry-After", "1")
                sendStateless(r, to: peer)
            }
            return
        }
        // Consumed, so validating it in place copies nothing.
        do {
            try request.validate()
        } catch {
            SwitchboardMetrics.reject(.sip, reason: SwitchboardError.Code(rawValue: error.code))
            if request.method != .ack {
                sendStateless(response(to: request, status: error.status, warning: error.message), to: peer)
            }
            return
        }
        guard let via = try? request.topVia() else { return }
        let key = Self.serverKey(branch: via.branch, via: via, method: request.method == .ack ? .invite : request.method,
                                 callID: request.callID ?? "", cseq: (try? request.cseq().number) ?? 0)

        if request.method == .ack {
            if let entry = serverTransactions[key], entry.transaction.isInvite, !(entry.transaction.lastResponse?.isSuccess ?? false) {
                let actions = entry.transaction.receiveACK(now: clock())
                perform(actions, server: key)
                return
            }
            // An ACK for a 2xx travels inside the dialog: relayed only along our Record-Route.
            let routes = (try? request.routes()) ?? []
            if let top = routes.first, isOurRoute(top.uri), mayRelayInDialog(request, from: peer, routes: Array(routes.dropFirst())) {
                forwardInDialog(request, from: peer, stateless: true)
            }
            return
        }
        if let entry = serverTransactions[key] {
            let actions = entry.transaction.receiveRetransmission()
            perform(actions, server: key)
            return
        }
        if request.method == .cancel {
            handleCancel(request, via: via, from: peer)
            return
        }
        // A new server transaction, unless the table is full (a flood from many sources).
        guard serverTransactions.count < settings.maxTransactions else {
            SwitchboardMetrics.reject(.sip, reason: .rateLimited)
            var r = response(to: request, status: 503, warning: "too many transactions in progress")
            r.headers.add("Retry-After", "1")
            sendStateless(r, to: peer)
            return
        }
        let transaction = ServerTransaction(method: request.method, reliable: peer.isReliable, timers: settings.timers)
        serverTransactions[key] = ServerEntry(transaction: transaction, peer: peer, request: copy request)
        route(request, key: key, from: peer)
    }

    static func serverKey(branch: String?, via: SIPVia, method: SIPMethod, callID: String, cseq: UInt32) -> String {
        if let branch, branch.hasPrefix("z9hG4bK") {
            return "\(branch)|\(via.host):\(via.port ?? 5060)|\(method.rawValue)"
        }
        // RFC 2543 peers: match on Call-ID, CSeq and the Via.
        return "\(callID)|\(cseq)|\(via)|\(method.rawValue)"
    }

    /// Decides who handles a new request.
    func route(_ request: SIPRequest, key: String, from peer: SIPPeer) {
        // A proxy checks Proxy-Require; Require is for the UAS (checked where we are one).
        guard extensionsSupported(request, key: key, header: "Proxy-Require") else { return }
        guard request.uri.isSIP else {
            respond(response(to: request, status: 416), server: key)
            return
        }
        // A SIPS URI asks for TLS on every hop (RFC 3261 §26.2.2, RFC 5630); SIP here runs over
        // UDP and TCP only, so honouring it is impossible and treating it as sip: would be a lie.
        guard request.uri.scheme == "sip" else {
            respond(response(to: request, status: 416, warning: "sips: needs TLS, which this server does not offer"),
                    server: key)
            return
        }
        // RFC 3261 §16.4: a top Route naming us is removed; another Route is the next hop.
        // (The request is copied only then: most requests carry no Route.)
        var routes = (try? request.routes()) ?? []
        if let top = routes.first, isOurRoute(top.uri) {
            var stripped = request
            stripped.headers.removeFirstValue("Route")
            routes.removeFirst()
            dispatch(stripped, routes: routes, looseRoutedToUs: true, key: key, from: peer)
        } else {
            dispatch(request, routes: routes, looseRoutedToUs: false, key: key, from: peer)
        }
    }

    /// ``route(_:key:from:)`` once a Route naming us is gone: relayed in a dialog, refused, or
    /// handled here (rooms, the server itself, the registrar, direct messages, the proxy).
    private func dispatch(_ request: SIPRequest, routes: [SIPAddress], looseRoutedToUs: Bool, key: String, from peer: SIPPeer) {
        if !routes.isEmpty || (request.uri.host != settings.domain && request.uri.host != settings.conferenceDomain
                                && !isOurAddress(request.uri)) {
            // Not for us: only requests inside a dialog we record-routed go on, and only between
            // registered parties, so the proxy is no open relay.
            if looseRoutedToUs, (try? request.to().tag) != nil, mayRelayInDialog(request, from: peer, routes: routes) {
                forwardInDialog(request, from: peer, stateless: false, serverKey: key)
            } else {
                respond(response(to: request, status: 403, warning: "this server does not relay to \(request.uri.host)"), server: key)
            }
            return
        }
        if request.uri.host == settings.conferenceDomain {
            handleConferenceRequest(request, key: key, from: peer)
            return
        }
        if request.uri.user == nil {
            handleServerRequest(request, key: key, from: peer)
            return
        }
        if request.method == .register {
            handleRegister(request, key: key, from: peer)
            return
        }
        if request.method == .message {
            handleDirectMessage(request, key: key, from: peer)
            return
        }
        proxyToUser(request, key: key, from: peer)
    }

    /// Option tags we implement (none beyond RFC 3261 and RFC 3428).
    static let supportedExtensions: Set<String> = []

    /// Answers 420 Bad Extension (with Unsupported) when `header` (Require or Proxy-Require)
    /// names an option tag we lack.
    func extensionsSupported(_ request: SIPRequest, key: String, header: String) -> Bool {
        // Nearly every request has neither header: nothing to split or filter then.
        guard request.headers.contains(header) else { return true }
        let unsupported = request.headers.values(header).filter { !Self.supportedExtensions.contains($0.lowercased()) }
        guard !unsupported.isEmpty else { return true }
        var r = response(to: request, status: 420)
        r.headers.add("Unsupported", unsupported.joined(separator: ", "))
        respond(r, server: key)
        return false
    }
    static let allowedMethods = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, MESSAGE, REGISTER"

    /// Requests addressed to the server itself (`sip:<domain>`).
    func handleServerRequest(_ request: SIPRequest, key: String, from peer: SIPPeer) {
        guard extensionsSupported(request, key: key, header: "Require") else { return }
        switch request.method {
        case .register:
            handleRegister(request, key: key, from: peer)
        case .options:
            var r = response(to: request, status: 200)
            r.headers.add("Allow", Self.allowedMethods)
            r.headers.add("Accept", "text/plain, application/sdp")
            r.headers.add("Supported", "")
            respond(r, server: key)
        case .invite, .message, .bye, .info, .update:
            respond(response(to: request, status: 404, warning: "no user in the Request-URI"), server: key)
        default:
            var r = response(to: request, status: 405)
            r.headers.add("Allow", Self.allowedMethods)
            respond(r, server: key)
        }
    }

    /// Takes a token from the source's bucket (`sip.rate_per_second`, `sip.rate_burst`).
    func withinRate(_ peer: SIPPeer) -> Bool {
        if rateBuckets.count > 50_000 { rateBuckets.removeAll(keepingCapacity: true) }
        let now = UInt64(clamping: clock()) &* 1_000_000
        var bucket = rateBuckets[peer] ?? TokenBucket(rate: settings.ratePerSecond, burst: settings.rateBurst)
        let ok = bucket.take(nowNanos: now)
        rateBuckets[peer] = bucket
        return ok
    }

    // MARK: Responses

    /// A response to `request` with its Via, From, To (tagged), Call-ID and CSeq.
    func response(to request: SIPRequest, status: Int, reason: String? = nil, warning: String? = nil) -> SIPResponse {
        var r = SIPResponse(status: status, reason: reason)
        r.headers.reserveCapacity(10)
        let fields = request.headers.fields
        for i in fields.indices where fields[i].name == "Via" { r.headers.add("Via", fields[i].value) }
        if let from = request.headers["From"] { r.headers.add("From", from) }
        if let to = request.headers["To"] { r.headers.add("To", status == 100 ? to : addTag(to)) }
        if let callID = request.callID { r.headers.add("Call-ID", callID) }
        if let cseq = request.headers["CSeq"] { r.headers.add("CSeq", cseq) }
        if let warning {
            r.headers.add("Warning", "399 \(settings.advertiseHost) \"\(warning.prefix(200).replacingOccurrences(of: "\"", with: "'"))\"")
        }
        r.headers.add("Server", "Switchboard")
        return r
    }

    /// Answers through the server transaction `key` (absorbing retransmissions from then on).
    func respond(_ response: SIPResponse, server key: String) {
        guard let entry = serverTransactions[key] else { return }
        let actions = entry.transaction.respond(response, now: clock())
        if !entry.transaction.isPending, !entry.request.headers.fields.isEmpty {
            // From here on only the last response matters (it answers retransmissions, for
            // 64·T1 over UDP): the request's headers and body need not wait that long.
            entry.request = SIPRequest(method: entry.request.method, uri: entry.request.uri)
        }
        perform(actions, server: key)
        if !entry.transaction.isPending { entry.transaction.compactLastResponse() }
    }

    /// Answers with a digest challenge. Outside INVITE it is sent statelessly and the server
    /// transaction is forgotten (RFC 3261 §8.2.7, §26.1.5): unauthenticated requests, a
    /// flood of them included, leave no state behind for Timer J's 32 s, and a
    /// retransmission of one is simply challenged again. An INVITE keeps its transaction,
    /// which has sent 100 Trying and waits for the ACK of the 407.
    func respondChallenge(_ response: SIPResponse, server key: String) {
        guard let entry = serverTransactions[key] else { return }
        guard !entry.transaction.isInvite else { return respond(response, server: key) }
        serverTransactions[key] = nil
        proxyContexts[key] = nil
        sendStateless(response, to: entry.peer)
    }

    /// Flushes the output once the loop has run the tasks queued before this one. The bus
    /// wakes each member's drain as a task of its own (a direct message wakes the sender's,
    /// for the ack, and the recipient's): their datagrams then leave in one `sendmmsg`.
    func flushAfterQueuedTasks() {
        guard !flushQueued else { return }
        flushQueued = true
        let bound = self.bound
        loop.execute {
            bound.value.flushQueued = false
            bound.value.output?.flush()
        }
    }

    func sendStateless(_ response: SIPResponse, to peer: SIPPeer) {
        output?.send(response.serialize(), to: peer)
    }

    func perform(_ actions: [TransactionAction], server key: String) {
        guard let entry = serverTransactions[key] else { return }
        for action in actions {
            switch action {
            case .send(.response(let response)):
                // A compacted last response has no headers: the bytes sent then answer again.
                if response.headers.count == 0, let sent = entry.lastSent, sent.status == response.status {
                    output?.send(sent.bytes, to: entry.peer)
                } else {
                    let bytes = response.serialize()
                    entry.lastSent = (response.status, bytes)
                    output?.send(bytes, to: entry.peer)
                }
            case .send(let message):
                output?.send(message.serialize(), to: entry.peer)
            case .terminated:
                serverTransactions[key] = nil
                proxyContexts[key] = nil
            case .timeout, .deliver:
                break
            }
        }
        if let deadline = serverTransactions[key]?.transaction.nextDeadline {
            schedule(.server(key), at: deadline)
        }
    }

    // MARK: Client transactions

    /// Starts a client transaction sending `request` to `peer`; `handler` gets each response
    /// (a timeout or unreachable peer arrives as a 408). It is keyed by `givenKey` when the
    /// caller made the top Via's branch (no need to parse it back), else by the branch found there.
    func startClient(_ request: SIPRequest, to peer: SIPPeer, key givenKey: String? = nil,
                     handler: @escaping (SIPCore, SIPResponse) -> Void) {
        let key: String
        if let given = givenKey {
            key = given
        } else {
            guard let branch = (try? request.topVia())?.branch else { return }
            key = Self.clientKey(branch: branch, method: request.method)
        }
        var transaction = ClientTransaction(request: request, reliable: peer.isReliable, timers: settings.timers)
        let actions = transaction.start(now: clock())
        clientTransactions[key] = ClientEntry(transaction: transaction, peer: peer, handler: handler)
        performClient(actions, key: key)
    }

    /// A client transaction's key: our branch and the method (RFC 3261 §17.1.3).
    static func clientKey(branch: String, method: SIPMethod) -> String { "\(branch)|\(method.rawValue)" }

    func receiveResponse(_ response: SIPResponse, from peer: SIPPeer) {
        guard let via = try? response.topVia(), let branch = via.branch, let cseq = try? response.cseq() else { return }
        let key = Self.clientKey(branch: branch, method: cseq.method)
        guard let entry = clientTransactions[key] else {
            // A 2xx retransmission for an INVITE whose transaction is gone: forward it statelessly.
            if cseq.method == .invite, response.isSuccess { forwardStrayResponse(response) }
            return
        }
        let actions = entry.transaction.receive(response, now: clock())
        performClient(actions, key: key)
    }

    func performClient(_ actions: [TransactionAction], key: String) {
        guard let entry = clientTransactions[key] else { return }
        for action in actions {
            switch action {
            case .send(let message):
                if output?.send(message.serialize(), to: entry.peer) == false {
                    clientTransactions[key] = nil
                    entry.handler(self, synthesized(503, for: entry.transaction.request))
                    return
                }
            case .deliver(let response):
                entry.handler(self, response)
            case .timeout:
                entry.handler(self, synthesized(408, for: entry.transaction.request))
            case .terminated:
                clientTransactions[key] = nil
            }
        }
        if let deadline = clientTransactions[key]?.transaction.nextDeadline {
            schedule(.client(key), at: deadline)
        }
    }

    /// The response a client transaction reports when the peer never answered (408) or
    /// cannot be reached (503): the request's Via, From, To, Call-ID and CSeq only.
    func synthesized(_ status: Int, for request: SIPRequest) -> SIPResponse {
        var r = SIPResponse(status: status)
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            for value in request.headers.all(name) { r.headers.add(name, value) }
        }
        return r
    }

    // MARK: Timers

    func schedule(_ target: TimerEntry.Target, at deadline: Int64) {
        timerHeap.insert(TimerEntry(deadline: deadline, target: target))
        armTimer()
    }

    func armTimer() {
        guard let first = timerHeap.min else { return }
        if let scheduled = timerScheduled, scheduled <= first.deadline { return }
        timerScheduled = first.deadline
        let delay = max(0, first.deadline - clock())
        let bound = self.bound
        loop.scheduleTask(in: .milliseconds(delay)) {
            bound.value.timerFired()
        }
    }

    func timerFired() {
        timerScheduled = nil
        let now = clock()
        while let first = timerHeap.min, first.deadline <= now {
            _ = timerHeap.removeMin()
            switch first.target {
            case .server(let key):
                guard let entry = serverTransactions[key], let deadline = entry.transaction.nextDeadline, deadline <= now else { continue }
                let actions = entry.transaction.tick(now: now)
                if actions.contains(.timeout) { proxyTimedOut(server: key) }
                perform(actions, server: key)
            case .client(let key):
                guard let entry = clientTransactions[key], let deadline = entry.transaction.nextDeadline, deadline <= now else { continue }
                let actions = entry.transaction.tick(now: now)
                performClient(actions, key: key)
            case .housekeeping:
                housekeeping(now: now)
            }
        }
        output?.flush()
        armTimer()
    }

    // MARK: Credentials

    /// The user's credentials when the cache has them fresh (the inner nil: no such user).
    func cachedCredentials(of user: UserName) -> StoredCredentials?? {
        guard let cached = credentialCache[user], clock() - cached.fetchedAt < 30_000 else { return nil }
        return .some(cached.credentials)
    }

    /// The stored credentials of `user` (cached for a short while), delivered on the loop.
    func withCredentials(of user: UserName, _ body: @escaping (StoredCredentials?) -> Void) {
        if let cached = cachedCredentials(of: user) {
            body(cached)
            return
        }
        if credentialWaiters[user] != nil {
            credentialWaiters[user]!.append(body)
            return
        }
        credentialWaiters[user] = [body]
        let accounts = self.accounts
        hop({ try await accounts.credentials(for: user) }) { core, result in
            let credentials = try? result.get()
            if case .success = result {
                core.credentialCache[user] = CachedCredentials(credentials: credentials ?? nil, fetchedAt: core.clock())
            }
            let waiters = core.credentialWaiters.removeValue(forKey: user) ?? []
            for waiter in waiters { waiter(credentials ?? nil) }
            core.output?.flush()
        }
    }

    /// Digest authentication of `request` by the `header` it carries, as `user` (nil: whoever
    /// the credentials name). Calls `done` with the authenticated user, or answers the
    /// transaction with a challenge (401/407) and calls nothing.
    func authenticate(
        _ request: SIPRequest, key: String, header: String, challengeStatus: Int, as expected: UserName?,
        done: (UserName) -> Void
    ) {
        // Of several credentials (one per realm), ours; else the first, which must parse.
        let values = request.headers.all(header)
        guard !values.isEmpty else {
            return challenge(request, key: key, status: challengeStatus, stale: false)
        }
        let offered = values.map { try? SIPDigestCredentials(parsing: $0) }
        guard let credentials = offered.first(where: { $0?.realm == settings.domain }) ?? offered[0],
              let user = UserName(credentials.username), user.rawValue == credentials.username
        else {
            respond(response(to: request, status: 400, warning: "malformed \(header)"), server: key)
            return
        }
        if let expected, expected != user {
            respond(response(to: request, status: 403, warning: "credentials of \(user) cannot act for \(expected)"), server: key)
            return
        }
        // The credentials sign `uri`, which must name what is asked for (RFC 7616 §3.4.6):
        // otherwise an answer captured for one Request-URI could be replayed for another.
        guard Self.digestURI(credentials.uri, matches: request.uri) else {
            respond(response(to: request, status: 400, warning: "the digest uri does not match the Request-URI"), server: key)
            return
        }
        // Checked at once when the user's credentials are cached (nearly always), so `done`
        // need not escape and no closure holds a copy of the request. Otherwise they are
        // loaded and the request is handled again from the start, as it waits in its
        // transaction; if they could not be loaded, it is challenged.
        if let stored = cachedCredentials(of: user) {
            return check(credentials, of: user, against: stored, request: request, key: key, status: challengeStatus, done: done)
        }
        withCredentials(of: user) { _ in
            guard let entry = self.serverTransactions[key], entry.transaction.isPending else { return }
            if self.cachedCredentials(of: user) != nil {
                self.route(entry.request, key: key, from: entry.peer)
            } else {
                self.challenge(entry.request, key: key, status: challengeStatus, stale: false)
            }
        }
    }

    private func check(
        _ credentials: SIPDigestCredentials, of user: UserName, against stored: StoredCredentials?, request: SIPRequest,
        key: String, status: Int, done: (UserName) -> Void
    ) {
        guard let stored else { return challenge(request, key: key, status: status, stale: false) }
        switch nonces.verify(credentials, method: request.method.rawValue, stored: stored, now: clock()) {
        case .ok: done(user)
        case .stale: challenge(request, key: key, status: status, stale: true)
        case .rejected:
            SwitchboardMetrics.reject(.sip, reason: .authFailed)
            challenge(request, key: key, status: status, stale: false)
        }
    }

    /// Answers `request` with a 401 or 407 carrying fresh nonces (`stale=true` when the
    /// answer's nonce had expired but was otherwise right).
    private func challenge(_ request: SIPRequest, key: String, status: Int, stale: Bool) {
        var r = response(to: request, status: status)
        let name = status == 401 ? "WWW-Authenticate" : "Proxy-Authenticate"
        for value in nonces.challenges(now: clock(), stale: stale) { r.headers.add(name, value) }
        respondChallenge(r, server: key)
    }

    /// True when a digest `uri` names the Request-URI: the same text, or the same SIP URI
    /// (scheme, user, host and port; case of the host and parameters aside).
    static func digestURI(_ text: String, matches requestURI: SIPURI) -> Bool {
        if text == requestURI.description { return true }
        guard let uri = try? SIPURI(parsing: text) else { return false }
        return uri.scheme == requestURI.scheme && uri.matchKey == requestURI.matchKey
    }

    // MARK: Housekeeping

    func startHousekeeping() {
        schedule(.housekeeping, at: clock() + 1000)
    }

    func housekeeping(now: Int64) {
        expireBindings(now: now)
        retryStalledMembers(now: now)
        if now % 60_000 < 1000 { forgetStaleCalls(now: now) }
        if credentialCache.count > 10_000 { credentialCache.removeAll() }
        schedule(.housekeeping, at: now + 1000)
    }
}

// MARK: - Bookkeeping types

/// A server transaction and what it answers. A class: the table moves only a reference when
/// it grows, and holds up to `[sip] max_transactions` of them.
final class ServerEntry {
    var transaction: ServerTransaction
    let peer: SIPPeer
    var request: SIPRequest
    /// The wire form of the last response sent, which answers retransmissions once the
    /// transaction kept only that response's status (``ServerTransaction/compactLastResponse()``).
    var lastSent: (status: Int, bytes: [UInt8])?

    init(transaction: ServerTransaction, peer: SIPPeer, request: SIPRequest) {
        self.transaction = transaction
        self.peer = peer
        self.request = request
    }
}

/// A client transaction and who gets its responses. A class, like ``ServerEntry``: looking
/// one up or stepping its state machine copies a reference, not the request it carries.
final class ClientEntry {
    var transaction: ClientTransaction
    let peer: SIPPeer
    let handler: (SIPCore, SIPResponse) -> Void

    init(transaction: ClientTransaction, peer: SIPPeer, handler: @escaping (SIPCore, SIPResponse) -> Void) {
        self.transaction = transaction
        self.peer = peer
        self.handler = handler
    }
}

struct TimerEntry: Comparable {
    enum Target: Equatable {
        case server(String)
        case client(String)
        case housekeeping
    }
    var deadline: Int64
    var target: Target
    static func < (a: TimerEntry, b: TimerEntry) -> Bool { a.deadline < b.deadline }
    static func == (a: TimerEntry, b: TimerEntry) -> Bool { a.deadline == b.deadline && a.target == b.target }
}

struct CachedCredentials {
    var credentials: StoredCredentials?
    var fetchedAt: Int64
}
