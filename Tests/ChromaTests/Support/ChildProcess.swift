import Foundation

/// Marks this test bundle, so its path can be found from here.
private final class BundleMarker {}

/// Runs one test of this bundle in a child process with CHROMA_TRAP_CHILD=1; returns how it
/// ended.
func runThisTestInChild(_ test: String) throws -> (signaled: Bool, code: Int32) {
    let status = try runThisTestInChild(test, keepingStandardError: false)
    return (status.signaled, status.code)
}

/// `runThisTestInChild`, also returning what the child wrote to stderr when asked to keep it.
func runThisTestInChild(_ test: String, keepingStandardError: Bool) throws -> (signaled: Bool, code: Int32, standardError: String) {
    let bundle = Bundle(for: BundleMarker.self).bundlePath
    let process = Process()
    process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
    process.arguments = CommandLine.arguments[0].hasSuffix(".xctest") ? [test] : [bundle, test]
    var environment = ProcessInfo.processInfo.environment
    environment["CHROMA_TRAP_CHILD"] = "1"
    // The child is meant to trap; Swift's backtracer would spend a long time (minutes under
    // ThreadSanitizer) symbolicating that expected crash.
    environment["SWIFT_BACKTRACE"] = "enable=no"
    process.environment = environment
    process.standardOutput = FileHandle.nullDevice
    let pipe = Pipe()
    process.standardError = keepingStandardError ? pipe : FileHandle.nullDevice
    try process.run()
    // Read to the end before waiting: a child blocked on a full pipe would never exit.
    let text = keepingStandardError ? String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) : ""
    process.waitUntilExit()
    return (process.terminationReason == .uncaughtSignal, process.terminationStatus, text)
}
