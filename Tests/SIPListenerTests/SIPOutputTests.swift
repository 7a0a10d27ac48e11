import NIOCore
import Testing
@testable import SIPListener

/// NIO closes a UDP socket on a send it cannot make, so the output never tries those.
@Suite struct SIPOutputReachTests {
    let loopback4 = try! SocketAddress(ipAddress: "127.0.0.1", port: 5060)
    let any4 = try! SocketAddress(ipAddress: "0.0.0.0", port: 5060)
    let loopback6 = try! SocketAddress(ipAddress: "::1", port: 5060)

    func reach(_ ip: String, from local: SocketAddress?) -> Bool {
        SIPOutput.mayReach(try! SocketAddress(ipAddress: ip, port: 5070), from: local)
    }

    @Test func aLoopbackSocketReachesOnlyLoopback() {
        #expect(reach("127.0.0.1", from: loopback4))
        #expect(reach("127.0.0.2", from: loopback4))
        #expect(!reach("192.0.2.55", from: loopback4))
        #expect(!reach("10.1.2.3", from: loopback4))
        #expect(reach("::1", from: loopback6))
        #expect(!reach("2001:db8::1", from: loopback6))
    }

    @Test func noSocketSendsToUnspecifiedBroadcastOrMulticast() {
        for ip in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "239.255.255.250"] {
            #expect(!reach(ip, from: any4), "\(ip)")
        }
        #expect(reach("192.0.2.55", from: any4))
        #expect(!reach("::", from: try! SocketAddress(ipAddress: "::", port: 5060)))
        #expect(!reach("ff02::1", from: try! SocketAddress(ipAddress: "::", port: 5060)))
    }

    @Test func theFamilyMustMatchTheSocket() {
        #expect(!reach("::1", from: loopback4))
        #expect(!reach("127.0.0.1", from: loopback6))
        #expect(!reach("127.0.0.1", from: nil))
    }
}
