import Glibc

/// One wrk load: a path, request headers and a connection count, named like `/hello c64`.
struct HTTPBenchWorkload {
    let label: String
    let path: String
    let connections: Int
    let needsFiles: Bool
    /// Sent with every request (`wrk -H`).
    var headers: [String] = []
    /// The status every answer must have; checked with one request before wrk runs, so a
    /// server that ignores the headers (a 200 for a revalidation) is not measured.
    var expectedStatus: Int = 200
    /// The servers that run it (nil: all that serve files, or all for /hello).
    var servers: Set<String>? = nil
    /// Over HTTPS, with the run's self-signed certificate (`HTTPBenchDir.certificate`).
    var tls = false
    var name: String { "\(label) c\(connections)" }

    func runs(on server: HTTPBenchServer) -> Bool {
        (server.servesFiles || !needsFiles) && (servers?.contains(server.name) ?? true)
    }

    /// The workloads at `connections`: /hello, /file4k, a revalidation answered 304, a
    /// 1 MiB range of a 4 MiB file answered 206, and /hello over HTTPS (the last three for
    /// Chroma and nginx, the servers here that answer them; HTTPS only when the run could
    /// make a certificate).
    static func light(connections: Int, work: HTTPBenchDir) -> [HTTPBenchWorkload] {
        let conditional: Set<String> = ["chroma", "nginx"]
        let https = work.certificate == nil ? [] : [
            HTTPBenchWorkload(label: "/hello https", path: "/hello", connections: connections, needsFiles: false,
                              servers: conditional, tls: true),
        ]
        return https + [
            HTTPBenchWorkload(label: "/hello", path: "/hello", connections: connections, needsFiles: false),
            HTTPBenchWorkload(label: "/file4k", path: "/\(HTTPBenchDir.fileName)", connections: connections, needsFiles: true),
            HTTPBenchWorkload(label: "/file4k 304", path: "/\(HTTPBenchDir.fileName)", connections: connections, needsFiles: true,
                              headers: ["If-Modified-Since: \(work.smallFileDate)"], expectedStatus: 304, servers: conditional),
            HTTPBenchWorkload(label: "range 1MiB", path: "/\(HTTPBenchDir.bigFileName)", connections: connections, needsFiles: true,
                              headers: ["Range: bytes=1048576-2097151"], expectedStatus: 206, servers: conditional),
        ]
    }
}

/// A self-signed certificate and its key, PEM files, for the HTTPS rows.
struct HTTPBenchCertificate {
    let certificate: String
    let key: String
}

/// The run's temporary directory: `root/` (served: a 4 KiB file and a 4 MiB one), `logs/`
/// (the servers' stderr), `nginx/` (nginx's prefix) and `tls/` (the HTTPS rows'
/// certificate). World-readable: nginx's workers run as an unprivileged user when started
/// by root.
struct HTTPBenchDir {
    static let fileName = "file4k.bin"
    static let bigFileName = "file4m.bin"
    let path: String
    /// The 4 KiB file's modification time as an HTTP date (what `If-Modified-Since` sends).
    let smallFileDate: String
    /// Made with the `openssl` command (a P-256 key, valid two days); nil when that failed
    /// or `openssl` is missing, and then the HTTPS rows are left out.
    let certificate: HTTPBenchCertificate?
    var root: String { path + "/root" }
    var logs: String { path + "/logs" }
    var nginxPrefix: String { path + "/nginx" }

    init() throws {
        var template = Array("/tmp/chroma-bench-http-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw HTTPBenchSkip("mkdtemp /tmp/chroma-bench-http-XXXXXX failed: errno \(errno)") }
        path = String(cString: made)
        chmod(path, 0o755)
        for dir in [path + "/root", path + "/logs", path + "/nginx", path + "/nginx/logs"] where mkdir(dir, 0o755) != 0 {
            throw HTTPBenchSkip("mkdir \(dir) failed: errno \(errno)")
        }
        // Deterministic printable patterns.
        let small = (0..<4096).map { (i: Int) -> UInt8 in UInt8(ascii: "a") + UInt8((i * 7 + i / 26) % 26) }
        let big = (0..<(4 << 20)).map { (i: Int) -> UInt8 in UInt8(ascii: "a") + UInt8((i * 11 + i / 4099) % 26) }
        let smallPath = path + "/root/" + Self.fileName
        for (file, bytes) in [(smallPath, small), (path + "/root/" + Self.bigFileName, big)] {
            guard writeWholeFile(file, String(decoding: bytes, as: UTF8.self)) else {
                throw HTTPBenchSkip("writing \(file) failed: errno \(errno)")
            }
        }
        var info = stat()
        guard stat(smallPath, &info) == 0 else { throw HTTPBenchSkip("stat \(smallPath) failed: errno \(errno)") }
        smallFileDate = httpDate(info.st_mtim.tv_sec)
        certificate = HTTPBenchDir.makeCertificate(in: path + "/tls")
    }

    private static func makeCertificate(in dir: String) -> HTTPBenchCertificate? {
        guard onPath("openssl"), mkdir(dir, 0o755) == 0 else { return nil }
        let made = HTTPBenchCertificate(certificate: dir + "/cert.pem", key: dir + "/key.pem")
        let arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                         "-keyout", made.key, "-out", made.certificate, "-days", "2", "-subj", "/CN=localhost"]
        guard let pid = spawnChild("openssl", arguments, stdout: .null, stderr: .null, closing: []) else { return nil }
        var status: Int32 = 0
        guard waitpid(pid, &status, 0) == pid, status == 0, access(made.key, R_OK) == 0 else { return nil }
        return made
    }

    func remove() { removeTree(path) }
}

/// `seconds` since the epoch as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
private func httpDate(_ seconds: Int) -> String {
    var time = seconds
    var parts = tm()
    gmtime_r(&time, &parts)
    var buffer = [CChar](repeating: 0, count: 64)
    let n = strftime(&buffer, buffer.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
    return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// The status of one GET of `path` with `headers` on 127.0.0.1:`port` (nil when no answer
/// came within 5 s).
func probeStatus(port: UInt16, path: String, headers: [String]) -> Int? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    guard connectLoopback(fd, port: port) else { return nil }
    let request = Array(("GET \(path) HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n" + headers.map { $0 + "\r\n" }.joined() + "\r\n").utf8)
    guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else { return nil }
    var head: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1024)
    while !head.contains(UInt8(ascii: "\n")) {
        let n = recv(fd, &chunk, chunk.count, 0)
        guard n > 0 else { return nil }
        head += chunk[..<n]
    }
    // "HTTP/1.1 304 Not Modified"
    let line = String(decoding: head.prefix { $0 != UInt8(ascii: "\r") }, as: UTF8.self)
    let fields = line.split(separator: " ")
    return fields.count >= 2 ? Int(fields[1]) : nil
}
