import Foundation

/// Runs `curl` (installed by `make setup`) with `arguments`, at most 30 s; returns what it
/// wrote to standard output and its exit status.
func curl(_ arguments: [String]) throws -> (output: [UInt8], status: Int32) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["curl", "--silent", "--show-error", "--max-time", "30"] + arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    // Read to the end before waiting: a child blocked on a full pipe would never exit.
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return ([UInt8](output), process.terminationStatus)
}
