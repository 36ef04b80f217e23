@_spi(Engine) import Chroma
import Glibc

/// Where a server writes its access log: one line per answered request, in the common log
/// format with the duration added (seconds, to the microsecond, from the request's first
/// byte to its last answer byte handed to the socket):
///
/// ```text
/// 127.0.0.1 - - [02/Dec/2026:18:09:32 +0000] "GET /hello HTTP/1.1" 200 13 0.000087
/// ```
///
/// Off unless given to `Runtime.serveHTTP(…accessLog:…)`. Lines are never written on a loop:
/// each loop gathers its lines and hands them to the blocking pool in batches (at 64 KiB, or
/// at the loop's next deadline sweep, within a second), one write per batch; with
/// `O_APPEND`, batches from several loops never tear each other's lines. When the
/// destination cannot keep up and a loop has 16 MiB waiting, further lines are dropped and
/// counted (`HTTPServerStats.accessLogDropped`) rather than held without bound. Any thread.
public final class HTTPAccessLog: Sendable {
    let fd: Int32
    private let owned: Bool

    /// Appends to the file at `path`, created (mode 0644) when missing. Throws
    /// `ChromaError.system` naming `open` and the path.
    public init(path: String) throws(ChromaError) {
        let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .system(operation: "HTTPAccessLog(path: \(path))", call: "open", errno: errno) }
        self.fd = fd
        owned = true
    }

    private init(standardOutput: Void) {
        fd = 1
        owned = false
    }

    /// The process's standard output (never closed by the log).
    public static let standardOutput = HTTPAccessLog(standardOutput: ())

    deinit {
        if owned { _ = Glibc.close(fd) }
    }

    /// Writes all of `bytes` (a pool thread: the write may block); false on a failure.
    func write(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return false }
                offset += n
            }
            return true
        }
    }
}
