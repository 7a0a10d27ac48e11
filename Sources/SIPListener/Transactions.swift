import SIPWire

/// RFC 3261 §17 timer values, in milliseconds.
public struct SIPTimers: Hashable, Sendable {
    public var t1: Int64
    public var t2: Int64
    public var t4: Int64

    public init(t1: Int64 = 500, t2: Int64 = 4000, t4: Int64 = 5000) {
        self.t1 = t1
        self.t2 = t2
        self.t4 = t4
    }

    /// Timers B, F, H and J: 64·T1.
    public var transactionTimeout: Int64 { 64 * t1 }

    /// Timer C: how long a proxy lets an INVITE ring (more than 3 minutes, RFC 3261 §16.6).
    public static let timerC: Int64 = 181_000
}

/// What a transaction asks its owner to do. The owner does the I/O; the machine only decides.
public enum TransactionAction: Hashable, Sendable {
    /// Send (or resend) this message to the transaction's peer.
    case send(SIPMessage)
    /// Hand a response up to the transaction user (client transactions).
    case deliver(SIPResponse)
    /// No final response in time (Timer B or F): the TU treats it as a 408.
    case timeout
    /// The transaction is over and can be forgotten.
    case terminated
}

/// A client transaction (RFC 3261 §17.1): INVITE (Timers A, B, D) or non-INVITE (E, F, K).
/// Time is passed in (`now`, milliseconds), so tests drive it without a clock.
public struct ClientTransaction: Sendable {
    public enum State: Hashable, Sendable { case calling, proceeding, accepted, completed, terminated }

    public let request: SIPRequest
    public let isInvite: Bool
    public let reliable: Bool
    public let timers: SIPTimers
    public private(set) var state: State = .calling
    private var retransmitAt: Int64?
    private var retransmitInterval: Int64
    private var timeoutAt: Int64?
    private var endAt: Int64?
    private var ack: SIPRequest?

    public init(request: SIPRequest, reliable: Bool, timers: SIPTimers) {
        self.request = request
        self.isInvite = request.method == .invite
        self.reliable = reliable
        self.timers = timers
        self.retransmitInterval = timers.t1
    }

    /// The earliest time at which ``tick(now:)`` has something to do.
    public var nextDeadline: Int64? {
        earliest(retransmitAt, timeoutAt, endAt)
    }

    public mutating func start(now: Int64) -> [TransactionAction] {
        if !reliable { retransmitAt = now + timers.t1 }
        timeoutAt = now + timers.transactionTimeout
        return [.send(.request(request))]
    }

    public mutating func receive(_ response: SIPResponse, now: Int64) -> [TransactionAction] {
        switch state {
        case .calling, .proceeding:
            if response.isProvisional {
                state = .proceeding
                if isInvite {
                    // Timer B covers Calling only; a ringing callee gets Timer C (RFC 3261 §16.6 step 11).
                    retransmitAt = nil
                    timeoutAt = now + SIPTimers.timerC
                } else if retransmitAt != nil {
                    retransmitInterval = timers.t2
                }
                return [.deliver(response)]
            }
            retransmitAt = nil
            timeoutAt = nil
            if isInvite && response.isSuccess {
                // RFC 6026: stay to pass retransmitted 2xx up for 64·T1.
                state = .accepted
                endAt = now + timers.transactionTimeout
                return [.deliver(response)]
            }
            state = .completed
            var actions: [TransactionAction] = [.deliver(response)]
            if isInvite {
                let ack = makeACK(for: response)
                self.ack = ack
                actions.append(.send(.request(ack)))
                endAt = reliable ? now : now + 32_000
            } else {
                endAt = reliable ? now : now + timers.t4
            }
            if reliable {
                state = .terminated
                actions.append(.terminated)
            }
            return actions
        case .accepted:
            return response.isSuccess ? [.deliver(response)] : []
        case .completed:
            // A retransmitted final response: answer it with the same ACK.
            if let ack, !response.isProvisional { return [.send(.request(ack))] }
            return []
        case .terminated:
            return []
        }
    }

    public mutating func tick(now: Int64) -> [TransactionAction] {
        var actions: [TransactionAction] = []
        if let at = timeoutAt, now >= at, state == .calling || state == .proceeding {
            state = .terminated
            retransmitAt = nil
            timeoutAt = nil
            return [.timeout, .terminated]
        }
        if let at = endAt, now >= at {
            state = .terminated
            endAt = nil
            return [.terminated]
        }
        if let at = retransmitAt, now >= at {
            actions.append(.send(.request(request)))
            if isInvite {
                retransmitInterval *= 2
            } else {
                retransmitInterval = state == .proceeding ? timers.t2 : min(retransmitInterval * 2, timers.t2)
            }
            retransmitAt = now + retransmitInterval
        }
        return actions
    }

    /// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): same Request-URI, top Via,
    /// From, Call-ID and CSeq number; To from the response.
    func makeACK(for response: SIPResponse) -> SIPRequest {
        var headers = SIPHeaders()
        if let via = request.headers.values("Via").first { headers.add("Via", via) }
        headers.add("Max-Forwards", "70")
        if let from = request.headers["From"] { headers.add("From", from) }
        if let to = response.headers["To"] ?? request.headers["To"] { headers.add("To", to) }
        if let callID = request.callID { headers.add("Call-ID", callID) }
        let number = (try? request.cseq().number) ?? 1
        headers.add("CSeq", "\(number) ACK")
        for route in request.headers.all("Route") { headers.add("Route", route) }
        return SIPRequest(method: .ack, uri: request.uri, headers: headers)
    }
}

/// A server transaction (RFC 3261 §17.2): INVITE (Timers G, H, I) or non-INVITE (J).
/// It absorbs retransmitted requests by resending the last response.
public struct ServerTransaction: Sendable {
    public enum State: Hashable, Sendable { case trying, proceeding, accepted, completed, confirmed, terminated }

    public let isInvite: Bool
    public let reliable: Bool
    public let timers: SIPTimers
    public private(set) var state: State = .trying
    public private(set) var lastResponse: SIPResponse?
    private var retransmitAt: Int64?
    private var retransmitInterval: Int64
    private var timeoutAt: Int64?
    private var endAt: Int64?

    public init(method: SIPMethod, reliable: Bool, timers: SIPTimers) {
        self.isInvite = method == .invite
        self.reliable = reliable
        self.timers = timers
        self.retransmitInterval = timers.t1
    }

    public var nextDeadline: Int64? {
        earliest(retransmitAt, timeoutAt, endAt)
    }

    /// True until a final response was sent.
    public var isPending: Bool { state == .trying || state == .proceeding }

    /// Keeps only the status line of the last response. A completed transaction waits up to
    /// Timer J (32 s over UDP) to answer retransmissions, which its owner does from the bytes it
    /// sent: holding the response's header Strings that long cost ~2 KB per transaction.
    public mutating func compactLastResponse() {
        guard let last = lastResponse, last.headers.count > 0 else { return }
        lastResponse = SIPResponse(status: last.status, reason: last.reason)
    }

    /// The request came again.
    public mutating func receiveRetransmission() -> [TransactionAction] {
        switch state {
        case .proceeding, .completed, .accepted:
            return lastResponse.map { [.send(.response($0))] } ?? []
        case .trying, .confirmed, .terminated:
            return []
        }
    }

    /// An ACK matched this (INVITE) transaction.
    public mutating func receiveACK(now: Int64) -> [TransactionAction] {
        guard isInvite, state == .completed else { return [] }
        state = .confirmed
        retransmitAt = nil
        timeoutAt = nil
        if reliable {
            state = .terminated
            return [.terminated]
        }
        endAt = now + timers.t4
        return []
    }

    /// The TU answers. Provisional responses may repeat; a final one moves the machine on.
    public mutating func respond(_ response: SIPResponse, now: Int64) -> [TransactionAction] {
        switch state {
        case .trying, .proceeding:
            lastResponse = response
            if response.isProvisional {
                state = .proceeding
                return [.send(.response(response))]
            }
            if isInvite && response.isSuccess {
                state = .accepted
                endAt = now + timers.transactionTimeout
                return [.send(.response(response))]
            }
            state = .completed
            if isInvite {
                if !reliable { retransmitAt = now + timers.t1 }
                timeoutAt = now + timers.transactionTimeout
                return [.send(.response(response))]
            }
            if reliable {
                state = .terminated
                return [.send(.response(response)), .terminated]
            }
            endAt = now + timers.transactionTimeout
            return [.send(.response(response))]
        case .accepted:
            // Retransmissions of a 2xx from the UAS pass through.
            if response.isSuccess {
                lastResponse = response
                return [.send(.response(response))]
            }
            return []
        case .completed, .confirmed, .terminated:
            return []
        }
    }

    public mutating func tick(now: Int64) -> [TransactionAction] {
        if let at = timeoutAt, now >= at {
            // Timer H: no ACK came.
            state = .terminated
            retransmitAt = nil
            timeoutAt = nil
            endAt = nil
            return [.timeout, .terminated]
        }
        if let at = endAt, now >= at {
            state = .terminated
            endAt = nil
            return [.terminated]
        }
        if let at = retransmitAt, now >= at, let lastResponse {
            retransmitInterval = min(retransmitInterval * 2, timers.t2)
            retransmitAt = now + retransmitInterval
            return [.send(.response(lastResponse))]
        }
        return []
    }
}

/// The earliest of the set deadlines (asked after every step of a transaction: no array).
func earliest(_ a: Int64?, _ b: Int64?, _ c: Int64?) -> Int64? {
    func earlier(_ x: Int64?, _ y: Int64?) -> Int64? {
        guard let x, let y else { return x ?? y }
        return min(x, y)
    }
    return earlier(earlier(a, b), c)
}
