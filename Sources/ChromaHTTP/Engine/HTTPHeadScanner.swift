import Glibc

/// Measures a request's head as its bytes arrive, read by read: finds the blank line that
/// ends it ("\n", an optional "\r", then "\n", as evhttp accepts) and counts the head's
/// bytes up to there, so that a head over `limit` is answered 413 (evhttp would say 400).
///
/// Pure: it sees only the bytes it is given, each once and in order, and carries what the
/// last read left open (a line end, a "\r" after it) into the next, so a blank line split
/// across reads at any byte is found. The connection feeds it the bytes in place, where
/// libevent keeps them. Its connection's loop thread only.
struct HTTPHeadScanner {
    /// The largest head allowed, in bytes.
    let limit: Int
    /// Bytes of the head seen so far: up to and including its blank line once complete.
    private(set) var length = 0
    /// The blank line that ends the head was seen; later bytes are not the head's.
    private(set) var isComplete = false
    /// Where the bytes seen so far leave a blank line in the making.
    private var position = Position.lineStart
    /// A byte other than a line end was seen: the request line began. Before it, empty
    /// lines are skipped (as evhttp does), not taken for the head's end.
    private var started = false

    private enum Position {
        /// Inside a line: a blank line needs a line end first.
        case inLine
        /// Just after a "\n" (or at the start of the head).
        case lineStart
        /// Just after "\n\r".
        case lineStartCR
    }

    /// A scanner for a head of at most `limit` bytes, at the start of a request.
    init(limit: Int) {
        self.limit = limit
    }

    /// More bytes than `limit`, whether the end was seen or not.
    var isTooLarge: Bool { length > limit }

    /// Starts over for the next request, whose first byte starts a line.
    mutating func startRequest() {
        length = 0
        isComplete = false
        position = .lineStart
        started = false
    }

    /// Scans `bytes`, the ones that came next, up to the head's end if it is in them.
    /// Jumps from line end to line end with memchr.
    mutating func scan(_ bytes: UnsafeRawBufferPointer) {
        guard !isComplete, let base = bytes.baseAddress else { return }
        var i = 0
        while i < bytes.count {
            if position == .inLine {
                guard let hit = memchr(base + i, 0x0A, bytes.count - i) else { break }
                i = base.distance(to: UnsafeRawPointer(hit)) + 1
                position = .lineStart
                continue
            }
            let byte = bytes[i]
            i += 1
            if !started {
                if byte == 0x0A || byte == 0x0D { continue }  // an empty line before the request line
                started = true
                position = .inLine
                continue
            }
            if byte == 0x0A {
                length += i
                isComplete = true
                return
            }
            position = byte == 0x0D && position == .lineStart ? .lineStartCR : .inLine
        }
        length += bytes.count
    }
}
