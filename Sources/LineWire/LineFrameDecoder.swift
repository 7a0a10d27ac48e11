import NIOCore

/// Cuts a byte stream into lines for the line protocol, with a bounded buffer.
///
/// Feed it whatever the network delivers with `append(_:)`, then call ``next()``
/// until it returns `nil`:
///
/// ```swift
/// decoder.append(&buffer)
/// while let frame = decoder.next() { … }
/// ```
///
/// Lines end with `LF`; a `CR` right before the `LF` is stripped (any other `CR` is part of the
/// line). A line longer than ``maxLineBytes`` yields ``LineFrame/tooLong`` once, and the rest of
/// it is dropped as it arrives instead of being buffered, so the decoder never holds more than
/// `maxLineBytes + 1` bytes of an unfinished line plus one appended chunk. The frames are the same
/// however the input is split into chunks.
public struct LineFrameDecoder: Sendable {
    /// The default maximum length of a line in bytes, excluding its ending
    /// (`[line] max_line_bytes`).
    public static let defaultMaxLineBytes = 16 * 1024

    /// Once empty, a buffer whose capacity grew beyond this many bytes, or twice `maxLineBytes`
    /// if that is more (because a large chunk was appended at once), is released rather than kept
    /// for reuse.
    static let retainedCapacityLimit = 64 * 1024

    /// The maximum length of a line in bytes, excluding its `LF` or `CRLF` ending.
    public let maxLineBytes: Int

    /// Bytes received but not yet returned as frames.
    private var storage: ByteBuffer
    /// How many readable bytes at the front of `storage` are already known to contain no `LF`,
    /// so that each byte is searched once.
    private var scannedBytes: Int = 0
    /// `true` after a ``LineFrame/tooLong`` was reported for a line whose `LF` has not arrived yet:
    /// incoming bytes are dropped up to and including the next `LF`. `storage` is empty meanwhile.
    private var discarding = false

    /// Creates a decoder that accepts lines of up to `maxLineBytes` bytes, excluding the ending.
    ///
    /// - Parameter maxLineBytes: the longest acceptable line; must not be negative.
    public init(maxLineBytes: Int = LineFrameDecoder.defaultMaxLineBytes) {
        precondition(maxLineBytes >= 0, "maxLineBytes must not be negative")
        self.maxLineBytes = maxLineBytes
        self.storage = ByteBuffer()
    }

    /// Appends bytes received from the network, consuming all of `buffer`'s readable bytes.
    ///
    /// While the rest of an oversized line is being discarded, its bytes are skipped here without
    /// being copied.
    public mutating func append(_ buffer: inout ByteBuffer) {
        if self.discarding {
            guard let lf = buffer.readableBytesView.firstIndex(of: .lf) else {
                buffer.moveReaderIndex(to: buffer.writerIndex)
                return
            }
            buffer.moveReaderIndex(to: lf + 1)
            self.discarding = false
        }
        self.storage.writeBuffer(&buffer)
    }

    /// Appends bytes received from the network.
    public mutating func append(_ bytes: some Sequence<UInt8>) {
        var buffer = ByteBuffer(bytes: bytes)
        self.append(&buffer)
    }

    /// Returns the next complete frame, or `nil` when more bytes are needed.
    public mutating func next() -> LineFrame? {
        let view = self.storage.readableBytesView
        let start = view.startIndex
        if let lf = view[(start + self.scannedBytes)...].firstIndex(of: .lf) {
            var end = lf
            if end > start, view[end - 1] == .cr {
                end -= 1
            }
            let length = end - start
            let frame: LineFrame
            if length > self.maxLineBytes {
                frame = .tooLong
            } else {
                let text = self.storage.withUnsafeReadableBytes { bytes in
                    String(validating: UnsafeRawBufferPointer(rebasing: bytes[0..<length]), as: UTF8.self)
                }
                frame = text.map(LineFrame.line) ?? .invalidUTF8
            }
            self.storage.moveReaderIndex(to: lf + 1)
            self.scannedBytes = 0
            self.releaseStorageIfEmpty()
            return frame
        }

        self.scannedBytes = view.count
        // With `maxLineBytes + 1` bytes the line may still be acceptable if the last one is the
        // `CR` of a `CRLF` ending; with more, it is too long whatever follows.
        let overLimit =
            view.count > self.maxLineBytes + 1
            || (view.count == self.maxLineBytes + 1 && view.last != .cr)
        if overLimit {
            self.storage.moveReaderIndex(to: self.storage.writerIndex)
            self.scannedBytes = 0
            self.releaseStorageIfEmpty()
            self.discarding = true
            return .tooLong
        }
        if self.storage.readerIndex > 0 {
            // Keep only the unfinished line, which is at most `maxLineBytes + 1` bytes. This moves
            // bytes at most once per consumed line, so it stays linear in the input.
            self.storage.discardReadBytes()
        }
        return nil
    }

    /// The number of bytes held that have not been returned as frames yet (for tests).
    var bufferedByteCount: Int {
        self.storage.readableBytes
    }

    /// The capacity of the internal buffer (for tests).
    var storageCapacity: Int {
        self.storage.capacity
    }

    private mutating func releaseStorageIfEmpty() {
        guard self.storage.readableBytes == 0 else { return }
        if self.storage.capacity > max(Self.retainedCapacityLimit, 2 * self.maxLineBytes) {
            self.storage = ByteBuffer()
        } else {
            self.storage.clear()
        }
    }
}
