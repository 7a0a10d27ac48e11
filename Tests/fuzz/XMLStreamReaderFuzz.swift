// libFuzzer target: XMPPWire's XML stream reader (libxml2's push parser underneath).
// Built and run by scripts/fuzz.sh, not by SwiftPM.
import XMPPWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzXMLStreamReader(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let reader = XMLStreamReader()
    // Fed in pieces whose size comes from the first byte, so splits land everywhere.
    let step = max(1, Int(bytes.first ?? 1) % 17)
    var index = 0
    while index < bytes.count {
        let end = min(bytes.count, index + step)
        guard let events = try? reader.feed(bytes[index..<end]) else { break }
        for case .stanza(let element) in events {
            _ = XMLSerializer().serialize(element)
        }
        index = end
    }
    reader.reset()
    return 0
}
