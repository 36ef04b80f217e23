import Foundation

/// A blocking TCP client socket to 127.0.0.1 for tests, whose reads time out after
/// `timeout` seconds, so a test waiting for an answer fails instead of hanging.
public final class LoopbackSocket {
    public let fd: Int32
    /// Set when a read saw the peer's close (0 bytes or a reset), as opposed to a timeout.
    public private(set) var sawClose = false

    public init(port: UInt16, timeout: Int = 10) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
        var limit = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        do {
            try Self.connect(fd, port: port)
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    /// Connects `fd` (a TCP socket) to 127.0.0.1:`port`, blocking; throws the errno.
    public static func connect(_ fd: Int32, port: UInt16) throws {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 { throw POSIXError(POSIXErrorCode(rawValue: errno)!) }
    }

    deinit { Glibc.close(fd) }

    /// Sends all of `bytes` (stops early only if the peer is gone).
    public func send(_ bytes: [UInt8]) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            sent += n
        }
    }

    /// The next bytes received, or nil once the peer closed or the read timed out.
    public func receive() -> [UInt8]? {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &chunk, chunk.count, 0)
        if n == 0 || (n < 0 && errno == ECONNRESET) { sawClose = true }
        guard n > 0 else { return nil }
        return Array(chunk[..<n])
    }

    /// True once the peer closed the connection (within the read timeout).
    public func closedByPeer() -> Bool {
        while receive() != nil {}
        return sawClose
    }
}
