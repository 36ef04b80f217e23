import Glibc

/// Why a soak client's socket call failed: the call, and errno, a timeout or the peer's close.
struct SoakIOError: Error, CustomStringConvertible {
    enum Kind {
        case system(Int32)
        /// SO_RCVTIMEO or SO_SNDTIMEO ran out.
        case timedOut
        /// The peer closed its side (recv returned 0).
        case closed
        /// More bytes than the reader allows for the thing it waits for (a head, a line).
        case tooLong
        /// Bytes that do not parse as the answer expected.
        case malformed(String)
    }
    let operation: String
    let kind: Kind

    var description: String {
        switch kind {
        case .system(let code): return "\(operation) failed: \(String(cString: strerror(code)))"
        case .timedOut: return "\(operation) timed out after \(Int(SoakSocket.timeout)) s"
        case .closed: return "\(operation): closed by the server"
        case .tooLong: return "\(operation): too long"
        case .malformed(let what): return "\(operation): \(what)"
        }
    }

    /// A reset from the peer (after a server's close with unread input, or a crash).
    var isReset: Bool {
        if case .system(let code) = kind { return code == ECONNRESET || code == EPIPE }
        return false
    }
}

/// A blocking TCP client socket to 127.0.0.1 for the soak's load threads. Every send and
/// receive gives up after `timeout` (SO_SNDTIMEO/SO_RCVTIMEO), so a server that stops
/// answering costs a client one timeout, never a hang. Received bytes are buffered, so
/// answers can be read by head, line or length. One thread uses a socket at a time.
final class SoakSocket {
    /// The longest any one call waits.
    static let timeout = 10.0

    let fd: Int32
    private var pending: [UInt8] = []
    private var consumed = 0
    private var chunk = [UInt8](repeating: 0, count: 64 << 10)
    private var isClosed = false

    private init(fd: Int32) { self.fd = fd }

    /// A connected socket, or why not.
    static func connect(port: UInt16) -> Result<SoakSocket, SoakIOError> {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return .failure(SoakIOError(operation: "socket", kind: .system(errno))) }
        var limit = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        guard connectLoopback(fd, port: port) else {
            let code = errno
            Glibc.close(fd)
            return .failure(SoakIOError(operation: "connect to port \(port)", kind: .system(code)))
        }
        return .success(SoakSocket(fd: fd))
    }

    deinit { close() }

    /// Sends all of `bytes`.
    func send(_ bytes: [UInt8]) throws(SoakIOError) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SoakIOError(operation: "send", kind: errno == EAGAIN ? .timedOut : .system(errno))
            }
            sent += n
        }
    }

    func send(_ text: String) throws(SoakIOError) { try send(Array(text.utf8)) }

    /// Bytes up to and including the first `terminator` (CRLF CRLF for a head, LF for a
    /// line), at most `limit` bytes.
    func read(through terminator: [UInt8], limit: Int, operation: String) throws(SoakIOError) -> [UInt8] {
        var scanned = 0  // bytes after `consumed` searched without a match (`fill` may move them)
        while true {
            if let end = find(terminator, from: consumed + scanned) {
                let bytes = Array(pending[consumed..<end])
                consumed = end
                return bytes
            }
            if pending.count - consumed > limit { throw SoakIOError(operation: operation, kind: .tooLong) }
            scanned = max(0, pending.count - consumed - terminator.count + 1)
            try fill(operation: operation)
        }
    }

    /// Exactly `count` bytes.
    func read(count: Int, operation: String) throws(SoakIOError) -> [UInt8] {
        while pending.count - consumed < count { try fill(operation: operation) }
        let bytes = Array(pending[consumed..<consumed + count])
        consumed += count
        return bytes
    }

    /// Reads and drops `count` bytes (a body the client does not check).
    func skip(count: Int, operation: String) throws(SoakIOError) {
        var left = count
        while left > 0 {
            if pending.count == consumed { try fill(operation: operation) }
            let n = min(left, pending.count - consumed)
            consumed += n
            left -= n
        }
    }

    /// Waits for the server to close: nil once it did (EOF, or a reset after everything it
    /// sent was read), or what came instead (bytes, a timeout).
    func expectClose(operation: String) -> String? {
        if pending.count > consumed { return "\(operation): \(pending.count - consumed) unexpected bytes before the close" }
        do {
            try fill(operation: operation)
            return "\(operation): \(pending.count - consumed) unexpected bytes before the close"
        } catch {
            if case .closed = error.kind { return nil }
            if error.isReset { return nil }
            return error.description
        }
    }

    /// Bytes received so far without blocking, and whether the peer has closed (the
    /// slowloris trickles' check between their bytes).
    func poll() -> (bytes: [UInt8], closed: Bool) {
        var closed = false
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n > 0 {
                pending += chunk[..<n]
                continue
            }
            if n == 0 || (errno != EAGAIN && errno != EINTR) { closed = true }
            break
        }
        let bytes = Array(pending[consumed...])
        consumed = pending.count
        return (bytes, closed)
    }

    /// Closes with SO_LINGER {1, 0}: the kernel drops what is unsent and sends a reset,
    /// as a client that crashes or gives up does.
    func reset() {
        guard !isClosed else { return }
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close()
    }

    /// An orderly close.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        Glibc.close(fd)
    }

    private func fill(operation: String) throws(SoakIOError) {
        if consumed > 0 && consumed == pending.count {
            pending.removeAll(keepingCapacity: true)
            consumed = 0
        } else if consumed >= 1 << 20 {
            pending.removeFirst(consumed)
            consumed = 0
        }
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                pending += chunk[..<n]
                return
            }
            if n == 0 { throw SoakIOError(operation: operation, kind: .closed) }
            if errno == EINTR { continue }
            throw SoakIOError(operation: operation, kind: errno == EAGAIN ? .timedOut : .system(errno))
        }
    }

    private func find(_ terminator: [UInt8], from start: Int) -> Int? {
        guard pending.count - start >= terminator.count else { return nil }
        let first = terminator[0]
        var i = start
        let last = pending.count - terminator.count
        while i <= last {
            if pending[i] == first {
                var match = true
                for j in 1..<terminator.count where pending[i + j] != terminator[j] {
                    match = false
                    break
                }
                if match { return i + terminator.count }
            }
            i += 1
        }
        return nil
    }
}

/// A small, fast generator (SplitMix64) for the load's choices and payloads: one per
/// client thread, seeded apart, so no thread shares state or asks the kernel per number.
struct SoakRandom: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// True with probability `p`.
    mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &self) < p }
}
