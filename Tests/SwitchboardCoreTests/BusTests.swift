import Synchronization
import Foundation
import Testing
@testable import SwitchboardCore
import SwitchboardTesting

/// Collects a session's events until a condition holds (or a timeout passes).
func events(
    of session: SessionHandle, count: Int, timeout: Duration = .seconds(5),
    where include: (SessionEvent) -> Bool = { _ in true }
) async -> [SessionEvent] {
    var collected: [SessionEvent] = []
    let deadline = ContinuousClock.now + timeout
    while collected.count < count, ContinuousClock.now < deadline {
        let batch = session.takeEvents().filter(include)
        if batch.isEmpty { try? await Task.sleep(for: .milliseconds(2)) }
        collected.append(contentsOf: batch)
    }
    return collected
}

func envelopes(_ events: some Sequence<SessionEvent>) -> [Envelope] {
    events.compactMap { if case .envelope(let e) = $0 { e } else { nil } }
}

func acks(_ events: some Sequence<SessionEvent>) -> [Ack] {
    events.compactMap { if case .ack(let a) = $0 { a } else { nil } }
}

let lobby = RoomName("lobby")!
let alice = UserName("alice")!
let bob = UserName("bob")!
let carol = UserName("carol")!

func makeBus(_ store: InMemoryHistoryStore = InMemoryHistoryStore(), configure: (inout LocalBus.Configuration) -> Void = { _ in }) throws -> LocalBus {
    var configuration = LocalBus.Configuration()
    configure(&configuration)
    return try LocalBus(store: store, configuration: configuration)
}

func joined(_ bus: LocalBus, _ user: UserName, _ via: Via = .line, room: RoomName = lobby, capacity sink: RecordingSink = RecordingSink()) async throws -> SessionHandle {
    let session = bus.openSession(user: user, display: nil, via: via, sink: sink)
    try bus.join(session, room: room, since: nil)
    await bus.flush()
    let got = await events(of: session, count: 1) { if case .joined = $0 { true } else { false } }
    #expect(got.count == 1)
    return session
}

@Suite struct BusTests {
    @Test func concurrentPublishersGetGaplessOrderedSeqs() async throws {
        let store = InMemoryHistoryStore()
        let bus = try makeBus(store)
        let listener = try await joined(bus, carol)
        let senders = [try await joined(bus, alice), try await joined(bus, bob, .ws)]
        _ = listener.takeEvents()
        let perSender = 500
        await withTaskGroup(of: Void.self) { group in
            for sender in senders {
                group.addTask {
                    for i in 0..<perSender {
                        try? bus.publish(EnvelopeDraft(room: lobby, from: sender.sender, body: "\(sender.user) \(i)"), from: sender)
                    }
                }
            }
        }
        await bus.flush()
        let received = envelopes(await events(of: listener, count: 2 * perSender))
        #expect(received.count == 2 * perSender)
        let seqs = received.map(\.seq)
        #expect(seqs == Array(seqs.first!...(seqs.first! + UInt64(2 * perSender) - 1)))
        // Each sender's own messages stay in its order.
        for sender in senders {
            let mine = received.filter { $0.from.user == sender.user }.map(\.body)
            #expect(mine == (0..<perSender).map { "\(sender.user) \($0)" })
            #expect(acks(await events(of: sender, count: perSender) { if case .ack = $0 { true } else { false } }).count == perSender)
        }
        // History holds exactly what was delivered, and group commit batched it.
        #expect(store.all(lobby).filter { $0.kind == .chat }.map(\.seq) == seqs)
        #expect(store.appendCalls < 2 * perSender)
        await bus.shutdown()
    }

    @Test func echoRuleAcksTheSenderAndDeliversToItsOtherSessions() async throws {
        let bus = try makeBus()
        let phone = try await joined(bus, alice, .ws)
        let laptop = try await joined(bus, alice, .line)
        let other = try await joined(bus, bob)
        _ = (phone.takeEvents(), laptop.takeEvents(), other.takeEvents())
        try bus.publish(EnvelopeDraft(room: lobby, from: phone.sender, body: "hi", clientID: "c-1"), from: phone)
        await bus.flush()
        let mine = phone.takeEvents()
        #expect(mine.count == 1)
        guard case .ack(let ack) = mine.first else { Issue.record("expected an ack, got \(mine)"); return }
        #expect(ack.clientID == "c-1")
        #expect(envelopes(laptop.takeEvents()).map(\.body) == ["hi"])
        let seen = envelopes(other.takeEvents())
        #expect(seen.map(\.body) == ["hi"])
        #expect(seen.first?.seq == ack.seq)
        #expect(seen.first?.id == ack.id)
        await bus.shutdown()
    }

    /// Batches are delivered room by room, yet every session (and a tap) receives its events in
    /// commit order, also across rooms: ids (ULIDs, made in commit order) only grow, each room's
    /// seqs have no gap, a publisher's acks take its envelopes' places, and completions of
    /// publishes without a session come in the order they were submitted.
    @Test func batchedDeliveryKeepsEverySessionInCommitOrder() async throws {
        let kitchen = RoomName("kitchen")!
        let bus = try makeBus()
        let a = try await joined(bus, alice)
        try bus.join(a, room: kitchen, since: nil)
        let b = try await joined(bus, bob, .ws)
        try bus.join(b, room: kitchen, since: nil)
        let alsoAlice = try await joined(bus, alice, .ws)
        let c = try await joined(bus, carol)
        let tap = bus.openTap(name: UserName("bridge")!, via: .mqtt, sink: RecordingSink())
        await bus.flush()
        for session in [a, b, alsoAlice, c] { _ = session.takeEvents() }
        _ = tap.takeEvents()
        let rounds = 300
        final class Completions: Sendable { let acks = Mutex<[Ack]>([]) }
        let completions = Completions()
        await withTaskGroup(of: Void.self) { group in
            for (sender, tag) in [(a, "a"), (b, "b")] {
                group.addTask {
                    for i in 0..<rounds {
                        let room = i % 3 == 0 ? kitchen : lobby
                        try? bus.publish(EnvelopeDraft(room: room, from: sender.sender, body: "\(tag) \(i)"), from: sender)
                    }
                }
            }
            group.addTask {
                for i in 0..<rounds {
                    let draft = EnvelopeDraft(room: i % 2 == 0 ? kitchen : lobby, from: Sender(user: carol, via: .mqtt), body: "m \(i)")
                    bus.submit(draft, privileged: false) { result in
                        if case .success(let ack) = result { completions.acks.withLock { $0.append(ack) } }
                    }
                }
            }
        }
        await bus.flush()
        let lobbyCount = (0..<rounds).filter { $0 % 3 != 0 }.count * 2 + rounds / 2
        let all = 2 * rounds + rounds
        // (session, events expected, of which acks)
        for (session, expected, ackCount) in [(a, all, rounds), (b, all, rounds), (alsoAlice, lobbyCount, 0),
                                              (c, lobbyCount, 0), (tap, all, 0)] {
            let got = await events(of: session, count: expected) {
                switch $0 { case .envelope(let e): e.kind == .chat; case .ack: true; default: false }
            }
            var ids: [String] = []
            var seqs: [RoomName: [UInt64]] = [:]
            for event in got {
                switch event {
                case .envelope(let e): ids.append(e.id); seqs[e.room, default: []].append(e.seq)
                case .ack(let ack): ids.append(ack.id); seqs[ack.room, default: []].append(ack.seq)
                default: break
                }
            }
            #expect(got.count == expected, "\(session)")
            #expect(got.filter { if case .ack = $0 { true } else { false } }.count == ackCount, "\(session)")
            #expect(ids == ids.sorted() && Set(ids).count == ids.count, "\(session): not in commit order")
            for (room, list) in seqs {
                #expect(list == Array(list.first!...(list.first! + UInt64(list.count) - 1)), "\(session) in \(room): \(list)")
            }
        }
        let acked = completions.acks.withLock { $0 }
        #expect(acked.count == rounds)
        #expect(acked.map(\.id) == acked.map(\.id).sorted(), "completions out of commit order")
    }

    @Test func duplicateClientIDIsAckedAgainNotRepublished() async throws {
        let store = InMemoryHistoryStore()
        let bus = try makeBus(store)
        let sender = try await joined(bus, alice)
        let other = try await joined(bus, bob)
        _ = (sender.takeEvents(), other.takeEvents())
        for _ in 0..<3 {
            try bus.publish(EnvelopeDraft(room: lobby, from: sender.sender, body: "once", clientID: "dup-1"), from: sender)
        }
        // The same client_id from another user is a different message.
        try bus.publish(EnvelopeDraft(room: lobby, from: other.sender, body: "mine", clientID: "dup-1"), from: other)
        await bus.flush()
        let senderAcks = acks(sender.takeEvents())
        #expect(senderAcks.count == 3)
        #expect(Set(senderAcks.map(\.seq)).count == 1)
        #expect(senderAcks.map(\.duplicate) == [false, true, true])
        #expect(store.all(lobby).filter { $0.kind == .chat }.map(\.body) == ["once", "mine"])
        // Sessionless publishers (REST, MQTT redeliveries) are deduplicated the same way.
        let first = try await bus.publish(EnvelopeDraft(room: lobby, from: Sender(user: carol, via: .mqtt), body: "qos1", clientID: "m-1"), privileged: false)
        let again = try await bus.publish(EnvelopeDraft(room: lobby, from: Sender(user: carol, via: .mqtt), body: "qos1", clientID: "m-1"), privileged: false)
        #expect(first.seq == again.seq && again.duplicate)
        await bus.shutdown()
    }

    @Test func dedupWindowSurvivesARestart() async throws {
        let store = InMemoryHistoryStore()
        let bus = try makeBus(store)
        let first = try await bus.publish(EnvelopeDraft(room: lobby, from: Sender(user: carol, via: .mqtt), body: "x", clientID: "m-9"), privileged: false)
        await bus.shutdown()
        let restarted = try makeBus(store)
        let again = try await restarted.publish(EnvelopeDraft(room: lobby, from: Sender(user: carol, via: .mqtt), body: "x", clientID: "m-9"), privileged: false)
        #expect(again.seq == first.seq && again.duplicate)
        let next = try await restarted.publish(EnvelopeDraft(room: lobby, from: Sender(user: carol, via: .mqtt), body: "y"), privileged: false)
        #expect(next.seq == first.seq + 1)
        await restarted.shutdown()
    }

    @Test func slowConsumerIsDisconnectedWithoutStallingOthers() async throws {
        let bus = try makeBus { $0.sessionQueueCapacity = 500 }
        let slowSink = RecordingSink()
        let slow = try await joined(bus, carol, capacity: slowSink)
        let reader = try await joined(bus, bob)
        let sender = try await joined(bus, alice)
        _ = (reader.takeEvents(), sender.takeEvents())
        // The slow session never drains; the reader and the sender drain after every chunk.
        var received: [Envelope] = []
        var acked = 0
        for chunk in 0..<20 {
            for i in 0..<100 {
                try bus.publish(EnvelopeDraft(room: lobby, from: sender.sender, body: "\(chunk * 100 + i)"), from: sender)
            }
            await bus.flush()
            received += envelopes(reader.takeEvents())
            acked += acks(sender.takeEvents()).count
        }
        #expect(received.map(\.body) == (0..<2_000).map(String.init))
        #expect(acked == 2_000)
        #expect(slowSink.closeReasons.map(\.code) == [.slowConsumer])
        #expect(slow.isClosed)
        #expect(slow.queuedCount == 0)
        await bus.shutdown()
    }

    @Test func directMessagesReachEverySessionOfBothUsersOnly() async throws {
        let bus = try makeBus()
        let alicePhone = bus.openSession(user: alice, display: nil, via: .ws, sink: RecordingSink())
        let aliceLine = bus.openSession(user: alice, display: nil, via: .line, sink: RecordingSink())
        let bob1 = bus.openSession(user: bob, display: nil, via: .xmpp, sink: RecordingSink())
        let bob2 = bus.openSession(user: bob, display: nil, via: .line, sink: RecordingSink())
        let carolSession = bus.openSession(user: carol, display: nil, via: .line, sink: RecordingSink())
        let dm = RoomName.direct(alice, bob)
        try bus.publish(EnvelopeDraft(room: dm, from: alicePhone.sender, body: "psst"), from: alicePhone)
        await bus.flush()
        #expect(acks(alicePhone.takeEvents()).count == 1)
        for session in [aliceLine, bob1, bob2] {
            #expect(envelopes(session.takeEvents()).map(\.body) == ["psst"])
        }
        #expect(carolSession.takeEvents().isEmpty)
        // Carol may neither write nor read it, nor join it.
        #expect(throws: SwitchboardError.self) {
            try bus.publish(EnvelopeDraft(room: dm, from: carolSession.sender, body: "hi"), from: carolSession)
        }
        await #expect(throws: SwitchboardError.self) {
            _ = try await bus.history(of: dm, reader: carol, before: nil, after: nil, limit: 10)
        }
        #expect(throws: SwitchboardError.self) { try bus.join(bob1, room: dm, since: nil) }
        await bus.shutdown()
    }

    @Test func callLogIsReadableByItsOwnerAndWrittenByTheServerOnly() async throws {
        let bus = try makeBus()
        let calls = RoomName.callLog(of: bob)
        let bobSession = try await joined(bus, bob, .ws, room: calls)
        let aliceSession = bus.openSession(user: alice, display: nil, via: .ws, sink: RecordingSink())
        #expect(throws: SwitchboardError.self) { try bus.join(aliceSession, room: calls, since: nil) }
        #expect(throws: SwitchboardError.self) {
            try bus.publish(EnvelopeDraft(room: calls, from: bobSession.sender, body: "fake"), from: bobSession)
        }
        await #expect(throws: SwitchboardError.self) {
            _ = try await bus.publish(EnvelopeDraft(room: calls, from: Sender(user: alice, via: .sip), kind: .call, body: "x"), privileged: false)
        }
        _ = try await bus.publish(EnvelopeDraft(
            room: calls, from: Sender(user: alice, via: .sip), kind: .call, body: "alice is calling bob",
            attrs: ["state": "ringing"]), privileged: true)
        await bus.flush()
        #expect(envelopes(bobSession.takeEvents()).map(\.body) == ["alice is calling bob"])
        await bus.shutdown()
    }

    @Test func joinAndLeaveEnvelopesOncePerUserAndProtocol() async throws {
        let store = InMemoryHistoryStore()
        let bus = try makeBus(store)
        let watcher = try await joined(bus, carol)
        _ = watcher.takeEvents()
        let a1 = try await joined(bus, alice, .line)
        let a2 = try await joined(bus, alice, .line)
        let a3 = try await joined(bus, alice, .ws)
        await bus.flush()
        #expect(envelopes(watcher.takeEvents()).map { "\($0.kind.rawValue) \($0.from.via.rawValue)" } == ["join line", "join ws"])
        #expect(bus.occupants(of: lobby).map { "\($0.user)/\($0.via.rawValue)" } == ["alice/line", "alice/ws", "carol/line"])
        bus.closeSession(a1)
        await bus.flush()
        #expect(envelopes(watcher.takeEvents()).isEmpty)
        try bus.leave(a2, room: lobby)
        bus.closeSession(a3)
        await bus.flush()
        #expect(envelopes(watcher.takeEvents()).map { "\($0.kind.rawValue) \($0.from.via.rawValue)" } == ["leave line", "leave ws"])
        #expect(bus.occupants(of: lobby).map(\.user) == [carol])
        // Join and leave envelopes are part of the room's history, with seqs.
        #expect(store.all(lobby).map(\.kind) == [.join, .join, .join, .leave, .leave])
        await bus.shutdown()
    }

    @Test func joinReportsTheSeqAfterWhichDeliveryIsLive() async throws {
        let bus = try makeBus()
        let sender = try await joined(bus, alice)
        for i in 0..<5 {
            try bus.publish(EnvelopeDraft(room: lobby, from: sender.sender, body: "\(i)"), from: sender)
        }
        let late = bus.openSession(user: bob, display: nil, via: .line, sink: RecordingSink())
        try bus.join(late, room: lobby, since: 2)
        try bus.publish(EnvelopeDraft(room: lobby, from: sender.sender, body: "after"), from: sender)
        await bus.flush()
        let got = late.takeEvents()
        guard case .joined(let room, let seq, let since) = got.first else { Issue.record("got \(got)"); return }
        #expect(room == lobby && since == 2)
        // seq 1 = alice's join, 2...6 = the five messages, 7 = bob's join.
        #expect(seq == 7)
        #expect(envelopes(Array(got.dropFirst())).map(\.seq) == [8])
        let replay = try await bus.history(of: lobby, reader: bob, before: seq + 1, after: 2, limit: 100)
        #expect(replay.map(\.seq) == [3, 4, 5, 6, 7])
        await bus.shutdown()
    }

    @Test func failedCommitLeavesNoGapAndTellsTheSender() async throws {
        let store = InMemoryHistoryStore()
        let bus = try makeBus(store)
        let sender = try await joined(bus, alice)
        let other = try await joined(bus, bob)
        _ = (sender.takeEvents(), other.takeEvents())
        store.failNextAppends(3)
        try bus.publish(EnvelopeDraft(room: lobby, from: sender.sender, body: "lost"), from: sender)
        await bus.flush()
        let failed = sender.takeEvents()
        #expect(failed.count == 1)
        if case .failed(let error, _, _, _) = failed.first { #expect(error.code == .storageUnavailable) } else { Issue.record("got \(failed)") }
        #expect(other.takeEvents().isEmpty)
        try bus.publish(EnvelopeDraft(room: lobby, from: sender.sender, body: "kept"), from: sender)
        await bus.flush()
        let kept = envelopes(other.takeEvents())
        #expect(kept.map(\.body) == ["kept"])
        #expect(kept.first?.seq == bus.lastSeq(of: lobby))
        #expect(store.all(lobby).map(\.seq) == Array(1...UInt64(store.all(lobby).count)))
        await bus.shutdown()
    }

    @Test func publishingRequiresMembershipForSessions() async throws {
        let bus = try makeBus()
        let outsider = bus.openSession(user: alice, display: nil, via: .line, sink: RecordingSink())
        try bus.publish(EnvelopeDraft(room: lobby, from: outsider.sender, body: "hi"), from: outsider)
        await bus.flush()
        let got = outsider.takeEvents()
        if case .failed(let error, _, _, _) = got.first { #expect(error.code == .notJoined) } else { Issue.record("got \(got)") }
        await bus.shutdown()
    }

    @Test func typingIsDeliveredButNeverStored() async throws {
        let store = InMemoryHistoryStore()
        let bus = try makeBus(store)
        let typist = try await joined(bus, alice, .ws)
        let other = try await joined(bus, bob, .ws)
        _ = other.takeEvents()
        try bus.typing(typist, room: lobby)
        await bus.flush()
        let got = envelopes(other.takeEvents())
        #expect(got.map(\.kind) == [.typing])
        #expect(got.first?.seq == 0)
        #expect(!store.all(lobby).contains { $0.kind == .typing })
        await bus.shutdown()
    }

    @Test func autoCreateOffRefusesUnknownRooms() async throws {
        let bus = try makeBus { $0.autoCreateRooms = false }
        let session = bus.openSession(user: alice, display: nil, via: .line, sink: RecordingSink())
        try bus.join(session, room: RoomName("nowhere")!, since: nil)
        await bus.flush()
        let got = session.takeEvents()
        if case .failed(let error, _, _, _) = got.first { #expect(error.code == .noSuchRoom) } else { Issue.record("got \(got)") }
        await bus.shutdown()
    }

    @Test func aDeletedRoomIsForgottenWhenAutoCreateIsOff() async throws {
        let store = InMemoryHistoryStore()
        let bus = try makeBus(store) { $0.autoCreateRooms = false }
        let session = bus.openSession(user: alice, display: nil, via: .line, sink: RecordingSink())
        let room = RoomName("gone")!
        // The room exists in storage: the bus learns it on first use.
        try store.append([Envelope(id: "01J", room: room, seq: 1, ts: 1, from: Sender(user: alice, via: .line), kind: .chat, body: "x")])
        try bus.join(session, room: room, since: nil)
        try bus.leave(session, room: room)
        await bus.flush()
        #expect(session.takeEvents().contains { if case .joined = $0 { true } else { false } })
        store.removeRoom(room)
        bus.roomDeleted(room)
        try bus.join(session, room: room, since: nil)
        await bus.flush()
        let got = session.takeEvents()
        if case .failed(let error, .join, _, _) = got.first { #expect(error.code == .noSuchRoom) } else { Issue.record("got \(got)") }
        await bus.shutdown()
    }

    @Test func aTapSeesEveryGroupRoomButNoDirectMessagesAndIsNoOccupant() async throws {
        let bus = try makeBus()
        let tap = bus.openTap(name: UserName("bridge")!, via: .mqtt, sink: RecordingSink())
        let sender = try await joined(bus, alice)
        try bus.publish(EnvelopeDraft(room: lobby, from: sender.sender, body: "in lobby"), from: sender)
        try bus.publish(EnvelopeDraft(room: .direct(alice, bob), from: sender.sender, body: "private"), from: sender)
        await bus.flush()
        let bodies = envelopes(tap.takeEvents()).filter { $0.kind == .chat }.map(\.body)
        #expect(bodies == ["in lobby"])
        #expect(!bus.occupants(of: lobby).contains { $0.user.rawValue == "bridge" })
        bus.closeSession(tap)
        try bus.publish(EnvelopeDraft(room: lobby, from: sender.sender, body: "after"), from: sender)
        await bus.flush()
        #expect(envelopes(tap.takeEvents()).isEmpty)
        await bus.shutdown()
    }

    /// A run of one room's envelopes reaches its members and a tap whole and in order (the tap
    /// shares the members' events then).
    @Test func aTapGetsASingleRoomRunWholeAndInOrder() async throws {
        let bus = try makeBus()
        let tap = bus.openTap(name: UserName("bridge")!, via: .mqtt, sink: RecordingSink())
        let member = try await joined(bus, bob)
        await bus.flush()
        _ = member.takeEvents()
        _ = tap.takeEvents()
        let device = Sender(user: alice, via: .mqtt)
        for index in 0..<200 {
            bus.submit(EnvelopeDraft(room: lobby, from: device, body: "m\(index)"), privileged: false) { _ in }
        }
        await bus.flush()
        let expected = (0..<200).map { "m\($0)" }
        #expect(envelopes(tap.takeEvents()).map(\.body) == expected)
        #expect(envelopes(member.takeEvents()).map(\.body) == expected)
        await bus.shutdown()
    }

    @Test func submittedPublishesCompleteInOrderAfterCommit() async throws {
        let store = InMemoryHistoryStore()
        let bus = try makeBus(store)
        let acks = Mutex<[UInt64]>([])
        let refusals = Mutex<[SwitchboardError.Code]>([])
        let device = Sender(user: alice, via: .mqtt)
        for index in 0..<50 {
            bus.submit(EnvelopeDraft(room: lobby, from: device, body: "m\(index)"), privileged: false) { result in
                if case .success(let ack) = result { acks.withLock { $0.append(ack.seq) } }
            }
        }
        // A check that fails at once (call logs are written by the server only) completes at once.
        bus.submit(EnvelopeDraft(room: RoomName.callLog(of: alice), from: device, body: "no"), privileged: false) { result in
            if case .failure(let error) = result { refusals.withLock { $0.append(error.code) } }
        }
        #expect(refusals.withLock { $0 } == [.forbidden])
        await bus.flush()
        #expect(acks.withLock { $0 } == Array(1...50))
        #expect(store.all(lobby).map(\.body) == (0..<50).map { "m\($0)" })
        await bus.shutdown()
    }

    @Test func shutdownAsksOpenSessionsToCloseAndRefusesNewWork() async throws {
        let bus = try makeBus()
        let sink = RecordingSink()
        let session = try await joined(bus, alice, capacity: sink)
        await bus.shutdown()
        #expect(sink.closeReasons.map(\.code) == [.shuttingDown])
        #expect(throws: SwitchboardError.self) {
            try bus.publish(EnvelopeDraft(room: lobby, from: session.sender, body: "late"), from: session)
        }
    }
}

@Suite struct SmallIDSetTests {
    /// Past the list limit the ids move into a set; membership answers stay the same.
    @Test func answersTheSameBelowAndAboveTheListLimit() {
        var ids = BusEngine.SmallIDSet()
        #expect(!ids.contains(1))
        for id in UInt64(1)...UInt64(BusEngine.SmallIDSet.listLimit + 5) {
            ids.insert(id)
            ids.insert(id)
            #expect(ids.contains(id))
            #expect(!ids.contains(id + 1000))
        }
        #expect((1...UInt64(BusEngine.SmallIDSet.listLimit + 5)).allSatisfy { ids.contains($0) })
    }
}
