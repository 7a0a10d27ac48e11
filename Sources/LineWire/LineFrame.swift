/// One frame cut from the byte stream of a line-protocol connection by ``LineFrameDecoder``.
///
/// The decoder reports oversized and malformed lines as frames rather than errors, so that the
/// listener can answer `ERR line_too_long …` or `ERR invalid_utf8 …` and keep the connection open.
public enum LineFrame: Hashable, Sendable {
    /// A complete line, without its `LF` or `CRLF` ending. Empty lines are reported as `.line("")`.
    case line(String)
    /// A line longer than the decoder's `maxLineBytes` (excluding its ending). It is reported
    /// once; its bytes up to and including the next `LF` are discarded.
    case tooLong
    /// A line of acceptable length whose bytes are not valid UTF-8. The line is discarded.
    case invalidUTF8
}
