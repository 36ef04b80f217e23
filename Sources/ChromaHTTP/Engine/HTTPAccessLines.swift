import CChroma
import CLibevent
@_spi(Engine) import Chroma
import Glibc
import Synchronization

/// One loop's access-log lines on their way to the pool (see `HTTPAccessLog`). Loop thread,
/// except `dropped`.
final class HTTPAccessLines: @unchecked Sendable {
    // Safe to send: every field but the immutable ones and `dropped` (an atomic) is
    // touched only on the loop's thread: by answers, the sweep, and the write job's
    // completion, which runs on the loop's own color.
    private let log: HTTPAccessLog
    private let runtime: Runtime
    private let loopColor: Color
    private var pending: [UInt8] = []
    private var writing = false
    private var closing = false
    private var second = -1
    private var stamp = ""
    /// Lines dropped because 16 MiB were already waiting.
    let dropped = Atomic<Int>(0)

    /// A batch goes to the pool at this size without waiting for the sweep.
    static let batchBytes = 64 * 1024
    /// Lines waiting at most; more are dropped.
    static let limitBytes = 16 << 20

    init(log: HTTPAccessLog, runtime: Runtime, loopColor: Color) {
        self.log = log
        self.runtime = runtime
        self.loopColor = loopColor
        pending.reserveCapacity(Self.batchBytes)
    }

    /// The fields of one request's line, taken while its evhttp request still lives.
    struct Entry {
        var host: String
        var requestLine: String
        var status: Int
        var bytes: Int
        var startedAt: UInt64
    }

    /// What a line needs from `request` (loop thread, the request alive).
    static func entry(_ request: OpaquePointer, status: Int, bytes: Int, startedAt: UInt64) -> Entry {
        var host = "-"
        if let evcon = evhttp_request_get_connection(request) {
            var address: UnsafeMutablePointer<CChar>?
            var port: UInt16 = 0
            evhttp_connection_get_peer(evcon, &address, &port)
            if let address { host = String(cString: address) }
        }
        let version = chroma_http_request_version(UnsafeRawPointer(request))
        let uri = evhttp_request_get_uri(request).map { String(cString: $0) } ?? "-"
        let line = methodName(evhttp_request_get_command(request)) + " " + escaped(uri) + " HTTP/\(version / 10).\(version % 10)"
        return Entry(host: host, requestLine: line, status: status, bytes: bytes, startedAt: startedAt)
    }

    /// Adds `entry`'s line, its duration ending now.
    func append(_ entry: Entry) {
        let now = Self.preciseNow()
        let micros = entry.startedAt == 0 || now < entry.startedAt ? 0 : (now - entry.startedAt) / 1000
        let fraction = String(micros % 1_000_000)
        let duration = "\(micros / 1_000_000)." + String(repeating: "0", count: 6 - fraction.count) + fraction
        let line = "\(entry.host) - - [\(timestamp())] \"\(entry.requestLine)\" \(entry.status) "
            + (entry.bytes > 0 ? String(entry.bytes) : "-") + " " + duration + "\n"
        guard pending.count + line.utf8.count <= Self.limitBytes else {
            dropped.add(1, ordering: .relaxed)
            return
        }
        pending.append(contentsOf: line.utf8)
        if pending.count >= Self.batchBytes { flush() }
    }

    /// Hands what is waiting to the pool, unless a write is already out (its completion
    /// sends the rest: one write at a time per loop keeps the lines in order).
    func flush() {
        guard !writing, !pending.isEmpty else { return }
        var taken: [UInt8] = []
        taken.reserveCapacity(Self.batchBytes)
        swap(&taken, &pending)
        writing = true
        let log = self.log, batch = taken
        do {
            try runtime.blocking(on: loopColor, lane: .short) { log.write(batch) } completion: { [self] _ in
                writing = false
                if closing || pending.count >= Self.batchBytes { flush() }
            }
        } catch {
            // The pool is gone (shutting down): this last batch is written right here.
            _ = log.write(batch)
            writing = false
        }
    }

    /// The server is closing: whatever is waiting goes out now, the rest after the write
    /// in flight.
    func close() {
        closing = true
        flush()
    }

    /// "02/Dec/2026:18:09:32 +0000", remade once a second.
    private func timestamp() -> String {
        let now = coarseRealtimeSeconds()
        if now != second {
            second = now
            stamp = HTTPDateText.utc(now, "%d/%b/%Y:%H:%M:%S +0000")
        }
        return stamp
    }

    static func preciseNow() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
    }

    private static func methodName(_ command: evhttp_cmd_type) -> String {
        switch command {
        case EVHTTP_REQ_GET: "GET"
        case EVHTTP_REQ_POST: "POST"
        case EVHTTP_REQ_HEAD: "HEAD"
        case EVHTTP_REQ_PUT: "PUT"
        case EVHTTP_REQ_DELETE: "DELETE"
        case EVHTTP_REQ_OPTIONS: "OPTIONS"
        case EVHTTP_REQ_PATCH: "PATCH"
        default: "-"
        }
    }

    /// The target as sent, with `"`, `\` and control bytes as `\xHH` (as nginx logs them),
    /// so a line cannot be split or forged by a request.
    static func escaped(_ text: String) -> String {
        guard text.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) else { return text }
        var out: [UInt8] = []
        for byte in text.utf8 {
            if byte < 0x20 || byte == 0x7F || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                out += Array(("\\x" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)).utf8)
            } else {
                out.append(byte)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
