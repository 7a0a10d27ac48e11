import NIOCore
import SwitchboardTesting
import Testing

@testable import LineWire

/// Feeds `chunks` one after the other, draining the decoder after each, as a channel handler does.
private func frames(_ chunks: [[UInt8]], maxLineBytes: Int) -> [LineFrame] {
    var decoder = LineFrameDecoder(maxLineBytes: maxLineBytes)
    var frames: [LineFrame] = []
    for chunk in chunks {
        var buffer = ByteBuffer(bytes: chunk)
        decoder.append(&buffer)
        #expect(buffer.readableBytes == 0)
        while let frame = decoder.next() {
            frames.append(frame)
        }
    }
    return frames
}

/// Splits `bytes` at random places (including empty chunks).
private func randomChunks(_ bytes: [UInt8], seed: UInt64) -> [[UInt8]] {
    var generator = SeededGenerator(seed: seed)
    var chunks: [[UInt8]] = []
    var index = 0
    while index < bytes.count {
        let length = Int.random(in: 0...min(24, bytes.count - index), using: &generator)
        chunks.append(Array(bytes[index..<(index + length)]))
        index += length
    }
    return chunks
}

/// A stream that exercises every boundary of a decoder with `maxLineBytes == 16`.
private enum Vector {
    static let maxLineBytes = 16

    static let parts: [(bytes: [UInt8], frame: LineFrame?)] = [
        (Array("hello\n".utf8), .line("hello")),
        (Array("crlf\r\n".utf8), .line("crlf")),
        (Array("\n".utf8), .line("")),
        (Array("\r\n".utf8), .line("")),
        (Array("a\rb\n".utf8), .line("a\rb")),
        (Array("\r\r\n".utf8), .line("\r")),
        (Array("snow ☃ 😀\n".utf8), .line("snow ☃ 😀")),
        (Array(repeating: UInt8(ascii: "x"), count: 16) + [.lf], .line(String(repeating: "x", count: 16))),
        (Array(repeating: UInt8(ascii: "y"), count: 16) + [.cr, .lf], .line(String(repeating: "y", count: 16))),
        (Array(repeating: UInt8(ascii: "z"), count: 17) + [.lf], .tooLong),
        (Array(repeating: UInt8(ascii: "w"), count: 16) + [.cr, .cr, .lf], .tooLong),
        (Array(repeating: UInt8(ascii: "v"), count: 100) + [.cr, .lf], .tooLong),
        (Array("after\n".utf8), .line("after")),
        ([0x61, 0xFF, 0xFE, 0x62, .lf], .invalidUTF8),
        ([0xE2, 0x98, .cr, .lf], .invalidUTF8),  // truncated "☃"
        ([0xC0, 0xAF, .lf], .invalidUTF8),  // overlong "/"
        (Array("fine\n".utf8), .line("fine")),
        // 17 bytes whose UTF-8 is invalid too: length is checked first.
        (Array(repeating: 0xFF, count: 17) + [.lf], .tooLong),
        (Array("last\r\n".utf8), .line("last")),
        (Array("unfinished".utf8), nil),
    ]

    static let bytes = parts.flatMap(\.bytes)
    static let frames = parts.compactMap(\.frame)
}

@Suite struct LineFrameDecoderTests {
    @Test func coalesced() {
        #expect(frames([Vector.bytes], maxLineBytes: Vector.maxLineBytes) == Vector.frames)
    }

    @Test func byteByByte() {
        let chunks = Vector.bytes.map { [$0] }
        #expect(frames(chunks, maxLineBytes: Vector.maxLineBytes) == Vector.frames)
    }

    @Test func onePartPerChunk() {
        let chunks = Vector.parts.map(\.bytes)
        #expect(frames(chunks, maxLineBytes: Vector.maxLineBytes) == Vector.frames)
    }

    @Test(arguments: 0..<200)
    func randomSplits(seed: UInt64) {
        let chunks = randomChunks(Vector.bytes, seed: seed)
        #expect(frames(chunks, maxLineBytes: Vector.maxLineBytes) == Vector.frames)
    }

    @Test func appendingWithoutDrainingGivesTheSameFrames() {
        var decoder = LineFrameDecoder(maxLineBytes: Vector.maxLineBytes)
        for chunk in randomChunks(Vector.bytes, seed: 42) {
            decoder.append(chunk)
        }
        var frames: [LineFrame] = []
        while let frame = decoder.next() {
            frames.append(frame)
        }
        #expect(frames == Vector.frames)
        #expect(decoder.bufferedByteCount == "unfinished".utf8.count)
    }

    @Test func sequenceAndByteBufferAppendAgree() {
        var viaSequence = LineFrameDecoder(maxLineBytes: Vector.maxLineBytes)
        var viaBuffer = LineFrameDecoder(maxLineBytes: Vector.maxLineBytes)
        for chunk in randomChunks(Vector.bytes, seed: 7) {
            viaSequence.append(chunk)
            var buffer = ByteBuffer(bytes: chunk)
            viaBuffer.append(&buffer)
            while let frame = viaBuffer.next() {
                #expect(viaSequence.next() == frame)
            }
            #expect(viaSequence.next() == nil)
        }
    }

    @Test func defaultLimit() {
        #expect(LineFrameDecoder.defaultMaxLineBytes == 16 * 1024)
        #expect(LineFrameDecoder().maxLineBytes == 16 * 1024)
        let exact = String(repeating: "a", count: 16 * 1024)
        let input = Array("\(exact)\n\(exact)a\nok\n".utf8)
        #expect(frames([input], maxLineBytes: 16 * 1024) == [.line(exact), .tooLong, .line("ok")])
    }

    @Test(arguments: [1, 1000, 4096, 40 * 1024 + 1])
    func fortyKiBLineIsReportedOnce(chunkSize: Int) {
        let long = [UInt8](repeating: UInt8(ascii: "L"), count: 40 * 1024)
        let input = Array("before\r\n".utf8) + long + Array("\r\nnext line\r\n".utf8)
        let chunks = stride(from: 0, to: input.count, by: chunkSize).map {
            Array(input[$0..<min($0 + chunkSize, input.count)])
        }
        let decoded = frames(chunks, maxLineBytes: LineFrameDecoder.defaultMaxLineBytes)
        #expect(decoded == [.line("before"), .tooLong, .line("next line")])
    }

    @Test func tenMiBLineWithoutNewlineStaysBounded() {
        let maxLineBytes = LineFrameDecoder.defaultMaxLineBytes
        let chunkSize = 4 * 1024
        var decoder = LineFrameDecoder(maxLineBytes: maxLineBytes)
        var frames: [LineFrame] = []
        var maxBuffered = 0
        let chunk = [UInt8](repeating: UInt8(ascii: "a"), count: chunkSize)
        for _ in 0..<(10 * 1024 * 1024 / chunkSize) {
            var buffer = ByteBuffer(bytes: chunk)
            decoder.append(&buffer)
            maxBuffered = max(maxBuffered, decoder.bufferedByteCount)
            while let frame = decoder.next() {
                frames.append(frame)
            }
            maxBuffered = max(maxBuffered, decoder.bufferedByteCount)
        }
        #expect(frames == [.tooLong])
        #expect(maxBuffered <= maxLineBytes + chunkSize)
        #expect(decoder.storageCapacity <= 2 * (maxLineBytes + chunkSize))
        // While the rest of the line is discarded nothing is kept.
        #expect(decoder.bufferedByteCount == 0)

        decoder.append(Array("tail of the long line\nPING\n".utf8))
        #expect(decoder.next() == .line("PING"))
        #expect(decoder.next() == nil)
    }

    @Test func largeCoalescedReadDoesNotKeepItsCapacity() {
        var decoder = LineFrameDecoder()
        decoder.append([UInt8](repeating: UInt8(ascii: "a"), count: 1024 * 1024) + [.lf])
        #expect(decoder.next() == .tooLong)
        #expect(decoder.next() == nil)
        #expect(decoder.bufferedByteCount == 0)
        #expect(decoder.storageCapacity <= LineFrameDecoder.retainedCapacityLimit)
    }

    @Test func invalidUTF8ThenNextLineIsFine() {
        let input: [UInt8] = [0x68, 0x69, 0x80, .lf] + Array("JOIN lobby\n".utf8)
        #expect(frames([input], maxLineBytes: 64) == [.invalidUTF8, .line("JOIN lobby")])
        #expect(frames(input.map { [$0] }, maxLineBytes: 64) == [.invalidUTF8, .line("JOIN lobby")])
    }

    @Test func emptyLines() {
        let input = Array("\n\r\n\nx\n".utf8)
        #expect(frames([input], maxLineBytes: 8) == [.line(""), .line(""), .line(""), .line("x")])
    }

    @Test func zeroLimitAcceptsOnlyEmptyLines() {
        let input = Array("\r\na\n\n".utf8)
        #expect(frames(input.map { [$0] }, maxLineBytes: 0) == [.line(""), .tooLong, .line("")])
        #expect(frames([input], maxLineBytes: 0) == [.line(""), .tooLong, .line("")])
    }

    @Test func nothingBeforeTheLineFeed() {
        var decoder = LineFrameDecoder()
        #expect(decoder.next() == nil)
        decoder.append(Array("partial".utf8))
        #expect(decoder.next() == nil)
        #expect(decoder.next() == nil)
        decoder.append(Array(" line\n".utf8))
        #expect(decoder.next() == .line("partial line"))
        #expect(decoder.next() == nil)
        #expect(decoder.bufferedByteCount == 0)
    }
}
