import Testing
@testable import SIPListener
import SIPWire

/// The RFC 3261 §17 machines driven with a hand-held clock: no sockets, no sleeping.
@Suite struct TransactionTests {
    let timers = SIPTimers(t1: 500, t2: 4000, t4: 5000)

    func request(_ method: SIPMethod) -> SIPRequest {
        var headers = SIPHeaders()
        headers.add("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-test")
        headers.add("From", "<sip:alice@localhost>;tag=a")
        headers.add("To", "<sip:bob@localhost>")
        headers.add("Call-ID", "c1")
        headers.add("CSeq", "7 \(method.rawValue)")
        return SIPRequest(method: method, uri: SIPURI(user: "bob", host: "127.0.0.1", port: 5070), headers: headers)
    }

    func response(_ status: Int, to method: SIPMethod) -> SIPResponse {
        var r = SIPResponse(status: status)
        r.headers = request(method).headers
        r.headers.set("To", "<sip:bob@localhost>;tag=b")
        return r
    }

    func sends(_ actions: [TransactionAction]) -> Int {
        actions.filter { if case .send = $0 { true } else { false } }.count
    }

    @Test func nonInviteClientRetransmitsWithTimerEDoublingUpToT2() {
        var t = ClientTransaction(request: request(.message), reliable: false, timers: timers)
        #expect(sends(t.start(now: 0)) == 1)
        var sentAt: [Int64] = []
        var now: Int64 = 0
        while now < 20_000 {
            now = t.nextDeadline!
            if sends(t.tick(now: now)) == 1 { sentAt.append(now) }
        }
        // E: 500, 1000, 2000, 4000, 4000, … (RFC 3261 §17.1.2.2).
        #expect(Array(sentAt.prefix(6)) == [500, 1500, 3500, 7500, 11_500, 15_500])
    }

    @Test func nonInviteClientTimesOutWithTimerF() {
        var t = ClientTransaction(request: request(.message), reliable: false, timers: timers)
        _ = t.start(now: 0)
        var actions: [TransactionAction] = []
        while let deadline = t.nextDeadline, !actions.contains(.timeout) {
            actions = t.tick(now: deadline)
        }
        #expect(actions == [.timeout, .terminated])
        #expect(t.state == .terminated)
        #expect(t.nextDeadline == nil)
    }

    @Test func nonInviteClientOverTCPNeverRetransmits() {
        var t = ClientTransaction(request: request(.message), reliable: true, timers: timers)
        _ = t.start(now: 0)
        #expect(t.nextDeadline == Int64(64 * 500))
        let final = t.receive(response(200, to: .message), now: 10)
        #expect(final == [.deliver(response(200, to: .message)), .terminated])
    }

    @Test func nonInviteClientAbsorbsFinalRetransmissionsInCompletedUntilTimerK() {
        var t = ClientTransaction(request: request(.message), reliable: false, timers: timers)
        _ = t.start(now: 0)
        #expect(t.receive(response(200, to: .message), now: 100).count == 1)
        #expect(t.receive(response(200, to: .message), now: 200).isEmpty)
        #expect(t.nextDeadline == Int64(100 + 5000))
        #expect(t.tick(now: 5100) == [.terminated])
    }

    @Test func inviteClientStopsRetransmittingOnProvisionalAndAcksFailures() throws {
        var t = ClientTransaction(request: request(.invite), reliable: false, timers: timers)
        _ = t.start(now: 0)
        #expect(sends(t.tick(now: 500)) == 1)   // Timer A
        #expect(sends(t.tick(now: 1500)) == 1)  // A doubled
        _ = t.receive(response(180, to: .invite), now: 1600)
        #expect(t.state == .proceeding)
        let actions = t.receive(response(486, to: .invite), now: 2000)
        #expect(t.state == .completed)
        guard case .send(.request(let ack)) = actions.last else {
            Issue.record("no ACK sent")
            return
        }
        #expect(ack.method == .ack)
        #expect(try ack.cseq() == SIPCSeq(number: 7, method: .ack))
        #expect(try ack.to().tag == "b")
        #expect(try ack.topVia().branch == "z9hG4bK-test")
        // The 486 again: the same ACK again, no second delivery.
        #expect(t.receive(response(486, to: .invite), now: 2100) == [.send(.request(ack))])
        #expect(t.tick(now: 2000 + 32_000) == [.terminated])
    }

    @Test func inviteClientPassesEvery2xxUpWhileAccepted() {
        var t = ClientTransaction(request: request(.invite), reliable: false, timers: timers)
        _ = t.start(now: 0)
        #expect(t.receive(response(200, to: .invite), now: 10) == [.deliver(response(200, to: .invite))])
        #expect(t.state == .accepted)
        #expect(t.receive(response(200, to: .invite), now: 600) == [.deliver(response(200, to: .invite))])
        #expect(t.tick(now: 10 + 32_000) == [.terminated])
    }

    /// A completed transaction may drop its last response's headers (its owner resends the bytes
    /// it sent); the status stays for the decisions that need it, the timers are unchanged.
    @Test func aCompactedServerTransactionKeepsOnlyTheStatusLine() {
        var t = ServerTransaction(method: .register, reliable: false, timers: timers)
        _ = t.respond(response(401, to: .register), now: 0)
        let deadline = t.nextDeadline
        t.compactLastResponse()
        #expect(t.lastResponse?.status == 401 && t.lastResponse?.headers.count == 0)
        #expect(t.nextDeadline == deadline)
        #expect(t.receiveRetransmission() == [.send(.response(SIPResponse(status: 401)))])
    }

    @Test func nonInviteServerResendsItsLastResponseUntilTimerJ() {
        var t = ServerTransaction(method: .message, reliable: false, timers: timers)
        #expect(t.receiveRetransmission().isEmpty)   // trying: nothing to resend yet
        _ = t.respond(response(200, to: .message), now: 0)
        #expect(t.receiveRetransmission() == [.send(.response(response(200, to: .message)))])
        #expect(t.nextDeadline == 32_000)
        #expect(t.tick(now: 32_000) == [.terminated])
    }

    @Test func inviteServerRetransmitsFailuresWithTimerGUntilACK() {
        var t = ServerTransaction(method: .invite, reliable: false, timers: timers)
        _ = t.respond(response(100, to: .invite), now: 0)
        _ = t.respond(response(480, to: .invite), now: 0)
        #expect(sends(t.tick(now: 500)) == 1)
        #expect(sends(t.tick(now: 1500)) == 1)
        #expect(t.receiveACK(now: 1600).isEmpty)
        #expect(t.state == .confirmed)
        #expect(t.nextDeadline == Int64(1600 + 5000))   // Timer I = T4
        #expect(t.tick(now: 6600) == [.terminated])
    }

    @Test func inviteServerGivesUpWithTimerHWhenNoACKComes() {
        var t = ServerTransaction(method: .invite, reliable: false, timers: timers)
        _ = t.respond(response(486, to: .invite), now: 0)
        var last: [TransactionAction] = []
        while let deadline = t.nextDeadline, t.state != .terminated { last = t.tick(now: deadline) }
        #expect(last == [.timeout, .terminated])
    }

    @Test func finalResponseIsSentOnceAndLaterOnesAreIgnored() {
        var t = ServerTransaction(method: .register, reliable: true, timers: timers)
        #expect(t.respond(response(200, to: .register), now: 0) == [.send(.response(response(200, to: .register))), .terminated])
        #expect(t.respond(response(500, to: .register), now: 1).isEmpty)
    }
}
