import Foundation
// The shared test helpers (`Locked`, `LoopbackSocket`), for every file of this target.
@_exported import TestSupport

/// A blocking test client on a plain socket, with a receive timeout (`hangTimeout`) so no
/// test can hang.
final class TestClient: @unchecked Sendable {
    // Safe to send: only `fd` (immutable); a test uses one client from one thread at a time,
    // or sends from one thread while the test thread only waits.
    let fd: Int32

    /// A socket not yet connected (so a test can create descriptors before lowering limits).
    init() {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        precondition(fd >= 0, "socket: \(errno)")
        var timeout = timeval(tv_sec: Int(hangTimeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    convenience init(port: UInt16) throws {
        self.init()
        try connect(port: port)
    }

    func connect(port: UInt16) throws {
        try LoopbackSocket.connect(fd, port: port)
    }

    func send(_ text: String) {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            sent += n
        }
    }

    /// Reads until `count` bytes arrived, the peer closed, or the receive timeout.
    func receive(_ count: Int) -> [UInt8] {
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while result.count < count {
            let n = recv(fd, &buffer, min(buffer.count, count - result.count), 0)
            if n <= 0 { break }
            result += buffer[..<n]
        }
        return result
    }

    /// True once the peer closed (recv returns 0) within the receive timeout.
    func waitForClose() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n == 0 { return true }
            if n < 0 { return errno == ECONNRESET }
        }
    }

    /// Closes with a reset (SO_LINGER 0) instead of a FIN.
    func reset() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        Glibc.close(fd)
    }

    func close() { Glibc.close(fd) }
}
