import Chroma
import FuzzSupport
import Glibc
import Synchronization

/// `Connection.onLines` on a real loopback connection: the payload is sent in the input's
/// chunks, each one read by the loop (and its lines handed out) before the next is sent,
/// then the client ends its side. Properties, for every split:
/// - the lines are the payload cut at each LF, a CR before the LF removed, and what follows
///   the last LF as a last line;
/// - a line longer than the limit (the parameter byte, 1...256) closes the connection with
///   `.lineTooLong` after exactly the lines before it; otherwise it closes `.peerClosed`;
/// - it closes, within seconds (a hang is a finding too).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzLineFraming(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = FuzzInput(data, size)
    let maxLength = Int(input.parameter) + 1
    let observed = harness.exchange(input.chunks, maxLength: maxLength)
    let expected = frame(input.payload, maxLength: maxLength)
    require(observed.lines == expected.lines,
            "lines \(observed.lines.map(\.count)) (by length), expected \(expected.lines.map(\.count)); limit \(maxLength), chunks \(input.chunks.map(\.count))")
    require(observed.reason == expected.reason,
            "closed \(observed.reason), expected \(expected.reason); limit \(maxLength), chunks \(input.chunks.map(\.count))")
    return 0
}

/// The framing rule read plainly, on the whole payload at once.
private func frame(_ payload: [UInt8], maxLength: Int) -> (lines: [[UInt8]], reason: CloseReason) {
    var lines: [[UInt8]] = []
    var start = 0
    for (i, byte) in payload.enumerated() where byte == 0x0A {
        var line = payload[start..<i]
        if line.last == 0x0D { line = line.dropLast() }
        if line.count > maxLength { return (lines, .lineTooLong) }
        lines.append(Array(line))
        start = i + 1
    }
    let rest = payload[start...]
    if rest.count > maxLength { return (lines, .lineTooLong) }
    if !rest.isEmpty { lines.append(Array(rest)) }
    return (lines, .peerClosed)
}

private let harness = Harness()

/// One runtime with one loop and a listener, shared by every input; one connection at a
/// time is under test.
private final class Harness: @unchecked Sendable {
    // Safe to share: `runtime` and `port` are immutable; `state` guards the rest.
    let runtime: Runtime
    let port: UInt16
    let state = Guarded()

    final class Guarded: Sendable {
        private let mutex = Mutex(Exchange())
        func withLock<R>(_ body: (inout Exchange) -> R) -> R { mutex.withLock { body(&$0) } }
    }

    struct Exchange {
        var maxLength = 1
        var connection: Connection?
        var lines: [[UInt8]] = []
        var reason: CloseReason?
        var pings = 0
    }

    init() {
        do {
            runtime = try Runtime(loops: 1)
            try runtime.start()
            let state = self.state
            port = try runtime.listen(host: "127.0.0.1", port: 0) { connection in
                let maxLength = state.withLock { $0.maxLength }
                connection.onLines(maxLength: maxLength) { line in state.withLock { $0.lines.append(line) } }
                connection.onClose { reason in state.withLock { $0.reason = reason } }
                state.withLock { $0.connection = connection }
            }.port
        } catch {
            fatalError("the harness could not start: \(error)")
        }
    }

    /// Sends `chunks` one by one over a fresh connection, then ends the client's side;
    /// returns what the server's connection saw.
    func exchange(_ chunks: [ArraySlice<UInt8>], maxLength: Int) -> (lines: [[UInt8]], reason: CloseReason) {
        state.withLock { $0 = Exchange(maxLength: maxLength) }
        let client = connectClient()
        defer { close(client) }
        let connection = waitFor("the server's connection") { state.withLock { $0.connection } }
        let serverFD = acceptedDescriptor(peerPort: localPort(client))
        for chunk in chunks {
            if state.withLock({ $0.reason }) != nil { break }
            sendAll(client, chunk)
            // The loop has read the chunk once the kernel holds none of it; its read
            // callback runs in the same loop callback, so a job queued after it runs later.
            _ = waitFor("the loop to read a chunk") { () -> Bool? in
                var pending: Int32 = 0
                if state.withLock({ $0.reason }) != nil || ioctl(serverFD, UInt(FIONREAD), &pending) != 0 { return true }
                return pending == 0 ? true : nil
            }
            let ping = state.withLock { $0.pings }
            try? runtime.execute(on: connection.color) { [state] in state.withLock { $0.pings += 1 } }
            _ = waitFor("a job after the read") { state.withLock { $0.pings > ping || $0.reason != nil ? true : nil } }
        }
        shutdown(client, Int32(SHUT_WR))
        let reason = waitFor("the connection to close") { state.withLock { $0.reason } }
        return (state.withLock { $0.lines }, reason)
    }

    private func connectClient() -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        precondition(fd >= 0, "socket: errno \(errno)")
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if result != 0 {
            // libFuzzer's timeout alarm (SIGALRM) can interrupt the connect, which then goes
            // on without us: wait for it to finish and take its outcome.
            precondition(errno == EINTR, "connect: errno \(errno)")
            var ready = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            while poll(&ready, 1, 10_000) < 0 && errno == EINTR {}
            var code: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &length)
            precondition(ready.revents & Int16(POLLOUT) != 0 && code == 0, "connect: errno \(code) after an interrupted connect")
        }
        return fd
    }

    /// The server side of the client whose local port is `peerPort`: this process holds
    /// both ends, so it is the socket whose peer has that port.
    private func acceptedDescriptor(peerPort: UInt16) -> Int32 {
        waitFor("the accepted socket") { () -> Int32? in
            for fd in Int32(3)..<1024 {
                var address = sockaddr_in()
                var length = socklen_t(MemoryLayout<sockaddr_in>.size)
                let found = withUnsafeMutablePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) }
                }
                if found == 0 && address.sin_family == sa_family_t(AF_INET) && UInt16(bigEndian: address.sin_port) == peerPort
                    && localPort(fd) == port {
                    return fd
                }
            }
            return nil
        }
    }

    private func localPort(_ fd: Int32) -> UInt16 {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let result = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return result == 0 ? UInt16(bigEndian: address.sin_port) : 0
    }

    private func sendAll(_ fd: Int32, _ bytes: ArraySlice<UInt8>) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }  // libFuzzer's timeout alarm
            if n < 0 { return }  // the server closed (a line too long): the rest is moot
            sent += n
        }
    }

    /// Polls `probe` until it gives a value; a wait past 10 s is a hang, and stops the run.
    private func waitFor<T>(_ what: String, _ probe: () -> T?) -> T {
        let deadline = now() + 10
        while true {
            if let value = probe() { return value }
            if now() > deadline { fatalError("hang: waited 10 s for \(what)") }
            sched_yield()
        }
    }

    private func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}
