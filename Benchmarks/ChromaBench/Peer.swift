import Glibc

/// Runs a peer program (a baseline built outside the package) and returns its stdout.
/// Peers print `ops_per_s <number>`; this parses that line.
func runPeer(_ path: String, _ arguments: [String]) -> Double? {
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
    let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
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
    let text = String(decoding: output, as: UTF8.self)
    for line in text.split(separator: "\n") where line.hasPrefix("ops_per_s ") {
        return Double(line.dropFirst("ops_per_s ".count))
    }
    return nil
}

/// True when `path` names an executable file.
func isExecutable(_ path: String) -> Bool {
    access(path, X_OK) == 0
}
