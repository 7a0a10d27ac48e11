import MetricsTestKit
import Testing
@testable import SwitchboardCore
import SwitchboardTesting

@Suite struct BusMetricsTests {
    @Test func busRecordsEnvelopesSessionsAndLatencies() async throws {
        let metrics = TestMetrics()
        let bus = try makeBus { $0.metricsFactory = metrics }
        let sender = try await joined(bus, alice, .ws)
        let readers = [try await joined(bus, bob, .line), try await joined(bus, carol, .line)]
        for i in 0..<10 {
            try bus.publish(EnvelopeDraft(room: lobby, from: sender.sender, body: "\(i)"), from: sender)
        }
        await bus.flush()
        #expect(try metrics.expectCounter(SwitchboardMetrics.envelopesIn, [("protocol", "ws")]).totalValue == 10)
        // Each reader got 10 chats; the first reader also saw carol's join.
        let out = try metrics.expectCounter(SwitchboardMetrics.envelopesOut, [("protocol", "line")]).totalValue
        #expect(out == 21)
        #expect(try metrics.expectMeter(SwitchboardMetrics.sessions, [("protocol", "line")]).lastValue == 2)
        #expect(try metrics.expectTimer(SwitchboardMetrics.commitLatency).values.count >= 1)
        #expect(try metrics.expectTimer(SwitchboardMetrics.fanoutLatency).values.count >= 1)
        for reader in readers { bus.closeSession(reader) }
        await bus.flush()
        #expect(try metrics.expectMeter(SwitchboardMetrics.sessions, [("protocol", "line")]).lastValue == 0)
        await bus.shutdown()
    }
}
