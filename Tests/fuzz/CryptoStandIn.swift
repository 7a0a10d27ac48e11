// Stands in for swift-crypto when SIPWire is compiled for fuzzing (scripts/fuzz.sh): the
// parsers never compute a digest, and the fuzz build then needs no package dependencies.
// Only the shapes SIPWire uses are here; the "digest" is the first bytes of the input.
public protocol Digest: Sequence where Element == UInt8 {
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

public struct StandInDigest: Digest {
    var bytes: [UInt8]
    public func makeIterator() -> IndexingIterator<[UInt8]> { bytes.makeIterator() }
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try bytes.withUnsafeBytes(body)
    }
}

public protocol HashFunction {
    init()
    mutating func update(bufferPointer: UnsafeRawBufferPointer)
    func finalize() -> StandInDigest
}

public struct StandInHash: HashFunction {
    let size = 32
    var bytes: [UInt8] = []
    public init() {}
    public mutating func update(bufferPointer: UnsafeRawBufferPointer) { bytes.append(contentsOf: bufferPointer) }
    public func finalize() -> StandInDigest { StandInDigest(bytes: Array((bytes + Array(repeating: 0, count: size)).prefix(size))) }
}

public enum Insecure {
    public typealias MD5 = StandInHash
}

public typealias SHA256 = StandInHash
