import TestSupport

/// Runs `curl` (installed by `make setup`) with `arguments`, at most 30 s; returns what it
/// wrote to standard output and its exit status (128 + the signal if one ended it).
func curl(_ arguments: [String]) throws -> (output: [UInt8], status: Int32) {
    let child = try Child("curl", ["--silent", "--show-error", "--max-time", "30"] + arguments, standardOutput: .pipe)
    // Read to the end before waiting: a child blocked on a full pipe would never exit.
    let output = child.readToEnd(child.standardOutput!)
    switch child.wait() {
    case .exited(let code): return (output, code)
    case .signaled(let signal): return (output, 128 + signal)
    }
}
