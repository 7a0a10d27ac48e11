// libFuzzer target: the line protocol's command parser and text escapes (round trip checked).
// Built and run by scripts/fuzz.sh.
import LineWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzLineCommand(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let line = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    _ = LineCommandParser.parse(line)
    let text = LineText.unescape(line)
    precondition(LineText.unescape(LineText.escape(text)) == text, "escape then unescape must give the text back")
    _ = LineText.singleLine(line)
    return 0
}
