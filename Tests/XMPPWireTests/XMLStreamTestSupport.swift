import SwitchboardTesting
@testable import XMPPWire

/// What a reader produced from a sequence of chunks: the events, and the error that ended it.
struct ReadResult: Equatable {
    var events: [XMLStreamEvent]
    var error: XMLStreamError?
    /// How many bytes had been fed when the error was thrown (all of them if none was).
    var bytesFed: Int
}

/// Feeds `chunks` to a new reader one after the other, as a channel handler does, stopping at
/// the first error.
func read(_ chunks: some Sequence<[UInt8]>, limits: XMLStreamReader.Limits = .init()) -> ReadResult {
    let reader = XMLStreamReader(limits: limits)
    return read(chunks, with: reader)
}

/// Feeds `chunks` to `reader`, stopping at the first error.
func read(_ chunks: some Sequence<[UInt8]>, with reader: XMLStreamReader) -> ReadResult {
    var events: [XMLStreamEvent] = []
    var fed = 0
    for chunk in chunks {
        fed += chunk.count
        do throws(XMLStreamError) {
            try reader.feed(chunk, into: &events)
        } catch {
            return ReadResult(events: events, error: error, bytesFed: fed)
        }
    }
    return ReadResult(events: events, error: nil, bytesFed: fed)
}

/// Splits `bytes` at random places (empty chunks included), chunks of up to `maxChunk` bytes.
func randomChunks(_ bytes: [UInt8], seed: UInt64, maxChunk: Int = 24) -> [[UInt8]] {
    var generator = SeededGenerator(seed: seed)
    var chunks: [[UInt8]] = []
    var index = 0
    while index < bytes.count {
        let length = Int.random(in: 0...min(maxChunk, bytes.count - index), using: &generator)
        chunks.append(Array(bytes[index..<(index + length)]))
        index += length
    }
    return chunks
}

/// One chunk per byte.
func bytewise(_ bytes: [UInt8]) -> [[UInt8]] {
    bytes.map { [$0] }
}

/// Fixed chunks of `size` bytes.
func chunked(_ bytes: [UInt8], size: Int) -> [[UInt8]] {
    stride(from: 0, to: bytes.count, by: size).map { Array(bytes[$0..<min($0 + size, bytes.count)]) }
}

/// A client stream header as Gajim or slixmpp sends it.
let clientHeader =
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    + "xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' xml:lang='en'>"

/// The event for ``clientHeader``.
let clientHeaderEvent = XMLStreamEvent.streamOpened(
    XMLStreamHeader(
        attributes: [
            XMLAttribute("to", "example.com"),
            XMLAttribute("version", "1.0"),
            XMLAttribute("xml:lang", "en"),
        ],
        namespaceDeclarations: [
            XMLNamespaceDeclaration(prefix: nil, namespace: "jabber:client"),
            XMLNamespaceDeclaration(prefix: "stream", namespace: XMLNamespace.streams),
        ]
    )
)

/// Shorthand for building expected trees.
func element(
    _ name: String,
    _ namespace: String? = XMLNamespace.client,
    _ attributes: [(String, String)] = [],
    _ children: [XMLElement.Node] = []
) -> XMLElement {
    XMLElement(
        name: name,
        namespace: namespace,
        attributes: attributes.map { XMLAttribute($0.0, $0.1) },
        children: children
    )
}
