import Glibc

/// Why the soak could not set up: what failed, where and why.
struct SoakSetupError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The soak's temporary directory: `root/` (the files chroma-httpd serves), `kv/`
/// (chroma-kv's data) and `logs/` (each server's stdout and stderr). The served files are
/// binary (every byte value, CR and LF included) and kept in memory too, so each answer is
/// compared byte for byte. Sizes are picked around StaticFiles' 256 KiB cache limit: the
/// small file is answered from each loop's cache, the big ones are opened on the blocking
/// pool (or from the page cache) and sent with sendfile.
struct SoakFiles {
    static let small = "small.bin"
    static let big = "big.bin"
    static let huge = "huge.bin"
    let path: String
    let smallBytes: [UInt8]
    let bigBytes: [UInt8]
    let hugeBytes: [UInt8]
    var root: String { path + "/root" }
    var kvData: String { path + "/kv" }
    var logs: String { path + "/logs" }

    init() throws(SoakSetupError) {
        let parent = getenv("TMPDIR").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        let pattern = parent + "/chroma-bench-soak-XXXXXX"
        var template = Array(pattern.utf8CString)
        guard let made = mkdtemp(&template) else { throw SoakSetupError("mkdtemp \(pattern) failed: errno \(errno)") }
        path = String(cString: made)
        var random = SoakRandom(seed: 0x50A4)
        smallBytes = (0..<3000).map { _ in UInt8.random(in: 0...255, using: &random) }
        bigBytes = (0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &random) }
        hugeBytes = (0..<(4 << 20)).map { _ in UInt8.random(in: 0...255, using: &random) }
        for dir in [root, kvData, logs] where mkdir(dir, 0o755) != 0 {
            throw SoakSetupError("mkdir \(dir) failed: \(String(cString: strerror(errno)))")
        }
        for (name, bytes) in [(Self.small, smallBytes), (Self.big, bigBytes), (Self.huge, hugeBytes)] {
            try writeBytes(root + "/" + name, bytes)
        }
    }

    func remove() { removeTree(path) }
}

private func writeBytes(_ path: String, _ bytes: [UInt8]) throws(SoakSetupError) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw SoakSetupError("open \(path) failed: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var written = 0
    while written < bytes.count {
        let n = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { throw SoakSetupError("write \(path) failed: \(String(cString: strerror(errno)))") }
        written += n
    }
}

/// One server under soak: its child process, its port, and the descriptors it had open
/// once listening, before any client connected (the level they must come back to).
final class SoakServer {
    let target: SoakTarget
    let port: UInt16
    let child: ServerChild
    let baselineDescriptors: Int
    private let errorLog: String
    var pid: pid_t { child.pid }

    private init(target: SoakTarget, port: UInt16, child: ServerChild, baselineDescriptors: Int, errorLog: String) {
        self.target = target
        self.port = port
        self.child = child
        self.baselineDescriptors = baselineDescriptors
        self.errorLog = errorLog
    }

    /// Starts the three release servers found next to chroma-bench, each with `loops`
    /// loops on a free port, chroma-kv on `files.kvData` with its default appendfsync.
    /// Stops the ones already started when one fails.
    static func startAll(files: SoakFiles, loops: Int) throws(SoakSetupError) -> [SoakServer] {
        var started: [SoakServer] = []
        do throws(SoakSetupError) {
            for target in SoakTarget.allCases {
                let port = freePort()
                var arguments = ["--port", String(port), "--loops", String(loops)]
                switch target {
                case .http: arguments += ["--root", files.root]
                case .echo: break
                case .kv: arguments += ["--dir", files.kvData]
                }
                started.append(try start(target, arguments: arguments, port: port, logs: files.logs))
            }
        } catch {
            for server in started { _ = server.child.stop() }
            throw error
        }
        return started
    }

    /// Spawns `target`'s binary and waits (polling, at most 10 s) for its listening line
    /// on stdout, a file in `logs`: no probe connection is open when the baseline is counted.
    private static func start(_ target: SoakTarget, arguments: [String], port: UInt16, logs: String) throws(SoakSetupError) -> SoakServer {
        let path = siblingExecutable(target.rawValue)
        guard isExecutable(path) else {
            throw SoakSetupError("no \(target.rawValue) at \(path) (build it: swift build -c release --product \(target.rawValue))")
        }
        let output = logs + "/\(target.rawValue).out", errors = logs + "/\(target.rawValue).err"
        guard let child = ServerChild.spawn(path, arguments, stdout: .file(output), stderrTo: errors) else {
            throw SoakSetupError("could not start \(path)")
        }
        let deadline = nowSeconds() + 10
        while readWholeFile(output)?.contains("\n") != true {
            if let status = child.exitStatus() {
                throw SoakSetupError("\(target.rawValue) exited before listening (\(status))\(lastLine(of: errors).map { ": \($0)" } ?? "")")
            }
            if nowSeconds() > deadline {
                _ = child.stop()
                throw SoakSetupError("\(target.rawValue) printed no listening line within 10 s")
            }
            usleep(20_000)
        }
        guard let descriptors = openDescriptors(child.pid) else {
            _ = child.stop()
            throw SoakSetupError("cannot read /proc/\(child.pid)/fd of \(target.rawValue)")
        }
        return SoakServer(target: target, port: port, child: child, baselineDescriptors: descriptors, errorLog: errors)
    }

    /// The last line the server wrote to stderr, if any (shown when it misbehaves).
    var lastError: String? { lastLine(of: errorLog) }
}

/// Entries in /proc/`pid`/fd: the descriptors the process has open; nil if unreadable.
func openDescriptors(_ pid: pid_t) -> Int? {
    guard let dir = opendir("/proc/\(pid)/fd") else { return nil }
    defer { closedir(dir) }
    var count = 0
    while let entry = readdir(dir) {
        let dot = entry.pointee.d_name.0 == 0x2E  // "." and ".."; descriptors are digits
        if !dot { count += 1 }
    }
    return count
}

/// VmRSS of /proc/`pid`/status in bytes; nil if unreadable.
func residentBytes(_ pid: pid_t) -> Int? {
    guard let text = readWholeFile("/proc/\(pid)/status") else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        // "VmRSS:	   12345 kB"
        guard let kilobytes = line.split(separator: " ").dropFirst().first(where: { Int($0) != nil }).flatMap({ Int($0) }) else { return nil }
        return kilobytes * 1024
    }
    return nil
}

/// User plus system CPU seconds `pid` has used (/proc/`pid`/stat); nil if unreadable.
func cpuSeconds(_ pid: pid_t) -> Double? {
    // "1234 (chroma-kv) S 1 ... utime stime ...": utime and stime are fields 14 and 15,
    // counted from the pid; the name in parentheses may hold spaces, so count after it.
    guard let text = readWholeFile("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// User plus system CPU seconds this process (the load clients) has used.
func ownCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
