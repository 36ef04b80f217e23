import Glibc

/// Runs a peer program (a baseline built outside the package) and returns its
/// `ops_per_s <number>` line's number.
func runPeer(_ path: String, _ arguments: [String]) -> Double? {
    runPeerFields(path, arguments)?["ops_per_s"]
}

/// Runs a peer program (found on PATH when `path` has no slash) and parses its stdout:
/// peers print `name value` pairs (`ops_per_s 123 p50_us 4.5 …`), on one line or several.
/// Nil when it could not run or printed no `ops_per_s`.
func runPeerFields(_ path: String, _ arguments: [String]) -> [String: Double]? {
    guard let (status, output) = runCapturing(path, arguments), status == 0 else { return nil }
    let words = output.split(whereSeparator: { $0 == " " || $0 == "\n" })
    var fields: [String: Double] = [:]
    var i = 0
    while i + 1 < words.count {
        if let value = Double(words[i + 1]) { fields[String(words[i])] = value; i += 2 } else { i += 1 }
    }
    return fields["ops_per_s"] == nil ? nil : fields
}

/// Runs `path` to its end; its exit status and stdout, or nil if it could not start.
func runCapturing(_ path: String, _ arguments: [String]) -> (status: Int32, output: String)? {
    guard let (pid, stdout) = spawnWithPipe(path, arguments) else { return nil }
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(stdout, &chunk, chunk.count)
        if n <= 0 { break }
        output += chunk[..<n]
    }
    close(stdout)
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    return (status, String(decoding: output, as: UTF8.self))
}

/// True when an executable named `name` is on PATH.
func onPath(_ name: String) -> Bool {
    let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
    return path.split(separator: ":").contains { access("\($0)/\(name)", X_OK) == 0 }
}

/// True when `path` names an executable file.
func isExecutable(_ path: String) -> Bool {
    access(path, X_OK) == 0
}

/// A peer server running in the background (started with `startServer`).
struct ServerProcess {
    let pid: pid_t

    /// Stops it (SIGTERM, then waits).
    func stop() {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }
}

/// Starts `path` with `arguments` and waits for its first line of output (servers print
/// one when they listen). Nil if it could not start or printed nothing.
func startServer(_ path: String, _ arguments: [String]) -> ServerProcess? {
    guard let (pid, stdout) = spawnWithPipe(path, arguments) else { return nil }
    defer { close(stdout) }
    var byte: UInt8 = 0
    while read(stdout, &byte, 1) == 1 {
        if byte == 10 { return ServerProcess(pid: pid) }
    }
    ServerProcess(pid: pid).stop()
    return nil
}

/// Connects `fd` (a TCP socket) to 127.0.0.1:`port`, blocking. True when connected; else
/// `errno` says why.
func connectLoopback(_ fd: Int32, port: UInt16) -> Bool {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

/// A TCP port free right now on 127.0.0.1 (bound, read, and released).
func freePort() -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    return withUnsafeMutablePointer(to: &address) { pointer -> UInt16 in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            _ = bind(fd, $0, length)
            _ = getsockname(fd, $0, &length)
        }
        return UInt16(bigEndian: pointer.pointee.sin_port)
    }
}

/// Where a spawned child's standard descriptor goes.
enum ChildStream {
    /// /dev/null.
    case null
    /// This (parent's) descriptor, duplicated into the child.
    case descriptor(Int32)
    /// A file, created or truncated.
    case file(String)
}

/// Starts `path` (looked up on PATH when it has no slash) with stdin, stdout and stderr
/// as given; `closing` are parent descriptors the child must not inherit. The pid, or nil.
func spawnChild(_ path: String, _ arguments: [String], stdin: ChildStream = .null, stdout: ChildStream,
                stderr: ChildStream? = nil, closing: [Int32] = []) -> pid_t? {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    for (stream, target) in [(stdin, STDIN_FILENO), (stdout, STDOUT_FILENO)] + (stderr.map { [($0, STDERR_FILENO)] } ?? []) {
        switch stream {
        case .null: posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == STDIN_FILENO ? O_RDONLY : O_WRONLY, 0)
        case .descriptor(let fd): posix_spawn_file_actions_adddup2(&actions, fd, target)
        case .file(let path): posix_spawn_file_actions_addopen(&actions, target, path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        }
    }
    for fd in closing { posix_spawn_file_actions_addclose(&actions, fd) }
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for arg in argv { free(arg) } }
    var pid = pid_t()
    return posix_spawnp(&pid, path, &actions, nil, argv, environ) == 0 ? pid : nil
}

/// Starts `path` with its stdout on a pipe; returns the pid and the pipe's read end, or
/// nil if it could not start.
private func spawnWithPipe(_ path: String, _ arguments: [String]) -> (pid_t, Int32)? {
    var pipeFDs: [Int32] = [0, 0]
    guard pipe(&pipeFDs) == 0 else { return nil }
    let pid = spawnChild(path, arguments, stdin: .descriptor(STDIN_FILENO), stdout: .descriptor(pipeFDs[1]), closing: [pipeFDs[0]])
    close(pipeFDs[1])
    guard let pid else {
        close(pipeFDs[0])
        return nil
    }
    return (pid, pipeFDs[0])
}
