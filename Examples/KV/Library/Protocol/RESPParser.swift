/// Limits on what one client may send, as Redis names them.
public struct RESPLimits: Sendable {
    /// Longest bulk string (`proto-max-bulk-len`; Redis's default 512 MiB).
    public var maxBulkLength = 512 << 20
    /// Most bytes buffered for one client before its requests parse
    /// (`client-query-buffer-limit`; Redis's default 1 GiB).
    public var maxQueryBuffer = 1 << 30
    /// Longest inline request line (Redis's `PROTO_INLINE_MAX_SIZE`, 64 KiB).
    public var maxInlineLength = 64 << 10
    /// Most arguments in one multibulk request (Redis allows up to `INT_MAX`; 1 Mi here,
    /// where each argument costs an array entry).
    public var maxArguments = 1 << 20

    /// Redis's defaults.
    public init() {}
}

/// Why a client's bytes are not RESP2. `message` is Redis's own text (without the `ERR `
/// prefix), so redis-cli and client libraries show what they would show against Redis.
/// After one, the connection is answered `-ERR <message>` and closed.
public struct RESPProtocolError: Error, Equatable, Sendable {
    public let message: String
}

/// RESP2 requests from a byte stream, as redis-cli and redis-benchmark send them: multibulk
/// (`*<n>\r\n` then n `$<len>\r\n<bytes>\r\n`) and inline (a line of space-separated
/// words, with Redis's quoting). Bytes go in as they arrive, in any pieces; complete
/// requests come out in order, so pipelined requests are simply several in the buffer.
///
/// Not thread-safe: one parser per connection, used on the connection's color.
public struct RESPParser {
    public let limits: RESPLimits
    private var buffer: [UInt8] = []
    /// Bytes of `buffer` already parsed into requests.
    private var consumed = 0
    /// A multibulk request in progress: the arguments still expected, and those read.
    private var expected = 0
    private var arguments: [[UInt8]] = []

    public init(limits: RESPLimits = RESPLimits()) {
        self.limits = limits
    }

    /// Bytes received and not yet parsed.
    public var buffered: Int { buffer.count - consumed }

    /// Adds bytes received from the client. Throws when the unparsed bytes pass
    /// `maxQueryBuffer` (Redis closes such a client too).
    public mutating func append<Bytes: Sequence>(_ bytes: Bytes) throws(RESPProtocolError) where Bytes.Element == UInt8 {
        if consumed > 0 && consumed >= buffer.count / 2 {
            buffer.removeFirst(consumed)
            consumed = 0
        }
        buffer.append(contentsOf: bytes)
        if buffered > limits.maxQueryBuffer {
            throw RESPProtocolError(message: "Protocol error: query buffer limit reached")
        }
    }

    /// The next complete request (its arguments; never empty), or nil until more bytes
    /// arrive. Throws Redis's protocol error for input that can never parse; the parser is
    /// then of no further use.
    public mutating func next() throws(RESPProtocolError) -> [[UInt8]]? {
        while true {
            if expected == 0 {
                guard consumed < buffer.count else { return nil }
                if buffer[consumed] != UInt8(ascii: "*") {
                    guard let request = try nextInline() else { return nil }
                    if request.isEmpty { continue }  // an empty line: Redis skips it
                    return request
                }
                guard let count = try line(limit: 32, tooLong: "Protocol error: too big mbulk count string") else { return nil }
                guard let n = Self.integer(buffer[count].dropFirst()), n <= limits.maxArguments else {
                    throw RESPProtocolError(message: "Protocol error: invalid multibulk length")
                }
                consumed = count.endIndex + 2
                if n <= 0 { continue }  // `*0` and `*-1`: Redis ignores them
                expected = n
                arguments = []
                arguments.reserveCapacity(min(n, 1024))
            }
            while expected > 0 {
                guard let header = try line(limit: 32, tooLong: "Protocol error: too big bulk count string") else { return nil }
                guard buffer[header.startIndex] == UInt8(ascii: "$") else {
                    let got = Character(Unicode.Scalar(buffer[header.startIndex]))
                    throw RESPProtocolError(message: "Protocol error: expected '$', got '\(got)'")
                }
                guard let length = Self.integer(buffer[header].dropFirst()), length >= 0, length <= limits.maxBulkLength else {
                    throw RESPProtocolError(message: "Protocol error: invalid bulk length")
                }
                let start = header.endIndex + 2
                guard buffer.count - start >= length + 2 else { return nil }
                arguments.append(Array(buffer[start..<(start + length)]))
                consumed = start + length + 2
                expected -= 1
            }
            defer { arguments = [] }
            return arguments
        }
    }

    /// The range of the line starting at `consumed` (without its CRLF), or nil while it is
    /// incomplete. Throws `tooLong` once more than `limit` bytes have come without a CRLF.
    private func line(limit: Int, tooLong: String) throws(RESPProtocolError) -> Range<Int>? {
        let end = Swift.min(buffer.count, consumed + limit + 2)
        var i = consumed
        while i + 1 < end {
            if buffer[i] == 13 && buffer[i + 1] == 10 { return consumed..<i }
            i += 1
        }
        if buffer.count - consumed > limit + 1 { throw RESPProtocolError(message: tooLong) }
        return nil
    }

    /// An inline request: a line ending in LF (a CR before it is dropped), split as Redis's
    /// `sdssplitargs` does.
    private mutating func nextInline() throws(RESPProtocolError) -> [[UInt8]]? {
        let limit = limits.maxInlineLength
        guard let newline = buffer[consumed...].firstIndex(of: 10) else {
            if buffered > limit { throw RESPProtocolError(message: "Protocol error: too big inline request") }
            return nil
        }
        if newline - consumed > limit { throw RESPProtocolError(message: "Protocol error: too big inline request") }
        var end = newline
        if end > consumed && buffer[end - 1] == 13 { end -= 1 }
        let words = try Self.splitArguments(buffer[consumed..<end])
        consumed = newline + 1
        return words
    }

    /// Redis's `sdssplitargs`: words separated by blanks; a word may be "double quoted"
    /// (with \n \r \t \b \a \\ \" and \xHH escapes) or 'single quoted' (with \'), and a
    /// closing quote must be followed by a blank or the end.
    static func splitArguments(_ line: ArraySlice<UInt8>) throws(RESPProtocolError) -> [[UInt8]] {
        let unbalanced = RESPProtocolError(message: "Protocol error: unbalanced quotes in request")
        func isBlank(_ c: UInt8) -> Bool { c == 32 || c == 9 || c == 10 || c == 13 || c == 11 || c == 12 || c == 0 }
        var words: [[UInt8]] = []
        var i = line.startIndex
        while true {
            while i < line.endIndex && isBlank(line[i]) { i += 1 }
            guard i < line.endIndex else { return words }
            var word: [UInt8] = []
            var inDouble = false, inSingle = false
            while true {
                if inDouble {
                    guard i < line.endIndex else { throw unbalanced }
                    let c = line[i]
                    if c == UInt8(ascii: "\\") && i + 3 < line.endIndex && line[i + 1] == UInt8(ascii: "x"),
                       let high = hexValue(line[i + 2]), let low = hexValue(line[i + 3]) {
                        word.append(high << 4 | low)
                        i += 3
                    } else if c == UInt8(ascii: "\\") && i + 1 < line.endIndex {
                        i += 1
                        switch line[i] {
                        case UInt8(ascii: "n"): word.append(10)
                        case UInt8(ascii: "r"): word.append(13)
                        case UInt8(ascii: "t"): word.append(9)
                        case UInt8(ascii: "b"): word.append(8)
                        case UInt8(ascii: "a"): word.append(7)
                        default: word.append(line[i])
                        }
                    } else if c == UInt8(ascii: "\"") {
                        if i + 1 < line.endIndex && !isBlank(line[i + 1]) { throw unbalanced }
                        inDouble = false
                        i += 1
                        break
                    } else {
                        word.append(c)
                    }
                } else if inSingle {
                    guard i < line.endIndex else { throw unbalanced }
                    let c = line[i]
                    if c == UInt8(ascii: "\\") && i + 1 < line.endIndex && line[i + 1] == UInt8(ascii: "'") {
                        word.append(UInt8(ascii: "'"))
                        i += 1
                    } else if c == UInt8(ascii: "'") {
                        if i + 1 < line.endIndex && !isBlank(line[i + 1]) { throw unbalanced }
                        inSingle = false
                        i += 1
                        break
                    } else {
                        word.append(c)
                    }
                } else {
                    guard i < line.endIndex, !isBlank(line[i]) else { break }
                    switch line[i] {
                    case UInt8(ascii: "\""): inDouble = true
                    case UInt8(ascii: "'"): inSingle = true
                    default: word.append(line[i])
                    }
                }
                i += 1
            }
            words.append(word)
        }
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// A decimal integer (an optional `-`, then digits, nothing else), or nil.
    static func integer<C: Collection>(_ digits: C) -> Int? where C.Element == UInt8 {
        var value = 0
        var negative = false
        var sawDigit = false
        for (offset, c) in digits.enumerated() {
            if offset == 0 && c == UInt8(ascii: "-") {
                negative = true
                continue
            }
            guard c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") else { return nil }
            let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times.addingReportingOverflow(Int(c - UInt8(ascii: "0")))
            guard !overflow1 && !overflow2 else { return nil }
            value = sum
            sawDigit = true
        }
        guard sawDigit else { return nil }
        return negative ? -value : value
    }
}
