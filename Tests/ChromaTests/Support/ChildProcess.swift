import Foundation

/// Marks this test bundle, so its path can be found from here.
private final class BundleMarker {}

/// Runs one test of this bundle in a child process with CHROMA_TRAP_CHILD=1; returns how it
/// ended.
func runThisTestInChild(_ test: String) throws -> (signaled: Bool, code: Int32) {
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
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    return (process.terminationReason == .uncaughtSignal, process.terminationStatus)
}
