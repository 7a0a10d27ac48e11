// libFuzzer target: SIPWire's datagram parser, request validation, the header value parsers
// the server uses, and the TCP stream framer. Built and run by scripts/fuzz.sh.
import SIPWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSIPParser(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let message = try? SIPParser().parse(datagram: bytes) {
        _ = message.serialize()
        if case .request(var request) = message, (try? request.validate()) != nil {
            _ = try? request.contacts()
            _ = try? request.vias()
            _ = try? request.expires()
            _ = try? request.maxForwards()
            _ = request.contactsAreWildcard
            for value in request.headers.all("Authorization") + request.headers.all("Proxy-Authorization") {
                _ = try? SIPDigestCredentials(parsing: value)
            }
            for value in request.headers.values("Route") + request.headers.values("Record-Route") {
                _ = try? SIPAddress(parsing: value)
            }
            _ = try? SIPURI(parsing: request.uri.description)
        }
    }
    // The same bytes on a stream, split where the first byte says.
    var framer = SIPStreamFramer()
    let cut = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
    framer.append(bytes[..<cut])
    _ = try? framer.next()
    framer.append(bytes[cut...])
    while let message = try? framer.next() { _ = message.serialize() }
    _ = framer.takePings()
    return 0
}
