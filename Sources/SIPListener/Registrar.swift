import SIPWire
import SwitchboardCore

/// One registered contact of a user. Immutable and shared: a user's list is filtered,
/// compared and replaced on every REGISTER, and copying a reference is one retain where
/// copying the value (an address, a URI and four strings) was a dozen (~3 % of a REGISTER).
final class Binding {
    let contact: SIPAddress
    let source: SIPPeer
    let callID: String
    let cseq: UInt32
    let expiresAt: Int64
    /// `contact.uri.matchKey` and `contact.uri.description`, made once: every REGISTER compares
    /// the user's bindings by key and writes each contact into its 200 and its stored record.
    let matchKey: String
    let contactText: String

    init(contact: SIPAddress, source: SIPPeer, callID: String, cseq: UInt32, expiresAt: Int64) {
        self.contact = contact
        self.source = source
        self.callID = callID
        self.cseq = cseq
        self.expiresAt = expiresAt
        self.matchKey = contact.uri.matchKey
        self.contactText = contact.uri.description
    }

    /// Whether two binding lists hold the same contacts, in any order, and with `sameSources`
    /// each registered from the same source (at most `max_bindings_per_user` each, so a scan
    /// costs less than building two sets).
    static func sameContacts(_ a: [Binding], _ b: [Binding], sameSources: Bool = false) -> Bool {
        a.count == b.count && b.allSatisfy { binding in
            a.contains { $0.matchKey == binding.matchKey && (!sameSources || $0.source == binding.source) }
        }
    }

    func record(_ user: UserName) -> SIPBindingRecord {
        SIPBindingRecord(user: user, contact: contactText, source: source.description,
                         callID: callID, cseq: cseq, expiresAt: expiresAt)
    }
}

/// The registrar (RFC 3261 §10.3) with digest authentication; bindings are written to
/// SQLite in groups before the 200 goes out, so a restart keeps them.
extension SIPCore {
    func handleRegister(_ request: SIPRequest, key: String, from peer: SIPPeer) {
        guard extensionsSupported(request, key: key, header: "Require") else { return }
        guard let to = try? request.to(), let userText = to.uri.user, isOurDomain(to.uri.host) || isOurAddress(to.uri),
              let user = UserName(userText), user.rawValue == userText
        else {
            respond(response(to: request, status: 404, warning: "the To header must name sip:<user>@\(settings.domain)"), server: key)
            return
        }
        authenticate(request, key: key, header: "Authorization", challengeStatus: 401, as: user) { user in
            self.applyRegister(request, user: user, key: key, from: peer)
        }
    }

    private func applyRegister(_ request: SIPRequest, user: UserName, key: String, from peer: SIPPeer) {
        let now = clock()
        let headerExpires = (try? request.expires()) ?? nil
        guard let contacts = try? request.contacts(), let callID = request.callID, let cseq = try? request.cseq() else {
            respond(response(to: request, status: 400), server: key)
            return
        }
        var current = bindings[user, default: []].filter { $0.expiresAt > now }
        if request.contactsAreWildcard {
            guard contacts.isEmpty, headerExpires == 0 else {
                respond(response(to: request, status: 400, warning: "Contact: * needs Expires: 0 and no other contact"), server: key)
                return
            }
            current.removeAll()
        } else {
            for contact in contacts {
                // The proxy can only reach sip:/sips: contacts; a tel: or mailto: binding would
                // take calls and MESSAGEs into a hole, so it is refused rather than stored.
                guard contact.uri.isSIP, !contact.uri.host.isEmpty else {
                    respond(response(to: request, status: 400, warning: "a Contact must be a sip: or sips: URI with a host"), server: key)
                    return
                }
                var expires = settings.maxExpires
                if let text = contact.parameters[parameter: "expires"] {
                    guard let value = Int(text), value >= 0 else {
                        respond(response(to: request, status: 400, warning: "bad expires parameter"), server: key)
                        return
                    }
                    expires = value
                } else if let headerExpires {
                    expires = headerExpires
                }
                if expires > 0 && expires < settings.minExpires {
                    var r = response(to: request, status: 423)
                    r.headers.add("Min-Expires", "\(settings.minExpires)")
                    respond(r, server: key)
                    return
                }
                expires = min(expires, settings.maxExpires)
                let matchKey = contact.uri.matchKey
                if let existing = current.first(where: { $0.matchKey == matchKey }),
                   existing.callID == callID, existing.cseq >= cseq.number {
                    respond(response(to: request, status: 500, warning: "CSeq out of order"), server: key)
                    return
                }
                current.removeAll { $0.matchKey == matchKey }
                if expires > 0 {
                    var stored = contact
                    stored.parameters = []
                    current.append(Binding(contact: stored, source: peer, callID: callID, cseq: cseq.number,
                                           expiresAt: now + Int64(expires) * 1000))
                }
            }
            if current.count > settings.maxBindingsPerUser {
                respond(response(to: request, status: 403, warning: "at most \(settings.maxBindingsPerUser) contacts per user"), server: key)
                return
            }
        }
        let previous = bindings[user] ?? []
        let hadBindings = !previous.isEmpty
        // A new or removed contact is committed before the 200; a refresh of the same contacts
        // is written behind (within `bindingWriteBehindMillis`), like a usrloc write-back cache.
        let refreshOnly = !current.isEmpty && Binding.sameContacts(previous, current)
        setBindings(current, of: user)
        persistBindings(of: user, durable: !refreshOnly) { core in
            var r = core.response(to: request, status: 200)
            for binding in current {
                let remaining = max(0, (binding.expiresAt - now) / 1000)
                r.headers.add("Contact", "<\(binding.contactText)>;expires=\(remaining)")
            }
            core.respond(r, server: key)
            if !current.isEmpty {
                core.memberCameOnline(user, wasOnline: hadBindings)
            }
        }
    }

    /// Replaces the user's bindings and keeps the two lookups derived from them in step:
    /// registered source → users (trust), contact → user (in-dialog routing).
    func setBindings(_ list: [Binding], of user: UserName) {
        let previous = bindings[user] ?? []
        if Binding.sameContacts(previous, list, sameSources: true) {
            // A refresh from where the user registered before: both lookups stay as they are.
            bindings[user] = list.isEmpty ? nil : list
            return
        }
        for old in previous {
            trustedSources[old.source]?.remove(user)
            if trustedSources[old.source]?.isEmpty == true { trustedSources[old.source] = nil }
            if contactOwners[old.matchKey] == user { contactOwners[old.matchKey] = nil }
        }
        bindings[user] = list.isEmpty ? nil : list
        for binding in list {
            trustedSources[binding.source, default: []].insert(user)
            contactOwners[binding.matchKey] = user
        }
    }

    /// Writes the user's bindings, grouped with others. `durable`: `then` runs once they are
    /// committed; otherwise at once, and the write follows within ``bindingWriteBehindMillis``.
    func persistBindings(of user: UserName, durable: Bool, then: @escaping (SIPCore) -> Void) {
        bindingWrites[user] = (bindings[user] ?? []).map { $0.record(user) }
        if durable {
            bindingWriteWaiters.append({ [unowned self] in then(self) })
            flushBindingWrites()
        } else {
            then(self)
            guard !bindingWriteScheduled else { return }
            bindingWriteScheduled = true
            let bound = self.bound
            loop.scheduleTask(in: .milliseconds(Self.bindingWriteBehindMillis)) {
                bound.value.bindingWriteScheduled = false
                bound.value.flushBindingWrites()
            }
        }
    }

    static let bindingWriteBehindMillis: Int64 = 200

    func flushBindingWrites() {
        guard !bindingWriteInFlight, !bindingWrites.isEmpty else { return }
        bindingWriteInFlight = true
        let writes = bindingWrites
        let waiters = bindingWriteWaiters
        bindingWrites = [:]
        bindingWriteWaiters = []
        let state = self.state
        hop({ try await state.replaceSIPBindings(writes) }) { core, result in
            core.bindingWriteInFlight = false
            if case .failure(let error) = result {
                core.logger.error("cannot store SIP bindings", metadata: ["error": "\(error)"])
            }
            for waiter in waiters { waiter() }
            core.flushBindingWrites()
            core.output?.flush()
        }
    }

    /// Hands over the writes not yet started (at shutdown, to commit them before exiting).
    func takePendingBindingWrites() -> [UserName: [SIPBindingRecord]] {
        defer { bindingWrites = [:] }
        return bindingWrites
    }

    /// Removes expired bindings (each second).
    func expireBindings(now: Int64) {
        for (user, list) in bindings where list.contains(where: { $0.expiresAt <= now }) {
            setBindings(list.filter { $0.expiresAt > now }, of: user)
            if bindings[user] == nil { memberWentOffline(user) }
        }
    }

    /// Loads stored bindings at start.
    func restoreBindings(_ records: [SIPBindingRecord]) {
        let now = clock()
        var byUser: [UserName: [Binding]] = [:]
        for record in records where record.expiresAt > now {
            guard let uri = try? SIPURI(parsing: record.contact), let source = SIPPeer(record.source) else { continue }
            byUser[record.user, default: []].append(Binding(
                contact: SIPAddress(uri: uri), source: source, callID: record.callID, cseq: record.cseq,
                expiresAt: record.expiresAt))
        }
        for (user, list) in byUser { setBindings(list, of: user) }
    }

    /// True when `peer` registered a contact of `user` (requests from it need no digest).
    func isTrusted(_ peer: SIPPeer, as user: UserName) -> Bool {
        trustedSources[peer]?.contains(user) ?? false
    }

    /// The user whose binding has this contact URI, if any.
    func bindingOwner(ofContact uri: SIPURI) -> (UserName, Binding)? {
        let key = uri.matchKey
        guard let user = contactOwners[key],
              let binding = bindings[user]?.first(where: { $0.matchKey == key })
        else { return nil }
        return (user, binding)
    }
}
