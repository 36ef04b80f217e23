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
    var pipeFDs: [Int32] = [0, 0]
    guard pipe(&pipeFDs) == 0 else { return nil }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], STDOUT_FILENO)
    posix_spawn_file_actions_addclose(&actions, pipeFDs[0])
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for arg in argv { free(arg) } }
    var pid = pid_t()
    let rc = posix_spawnp(&pid, path, &actions, nil, argv, environ)
    close(pipeFDs[1])
    guard rc == 0 else {
        close(pipeFDs[0])
        return nil
    }
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(pipeFDs[0], &chunk, chunk.count)
        if n <= 0 { break }
        output += chunk[..<n]
    }
    close(pipeFDs[0])
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    guard status == 0 else { return nil }
    let words = String(decoding: output, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" })
    var fields: [String: Double] = [:]
    var i = 0
    while i + 1 < words.count {
        if let value = Double(words[i + 1]) { fields[String(words[i])] = value; i += 2 } else { i += 1 }
    }
    return fields["ops_per_s"] == nil ? nil : fields
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
