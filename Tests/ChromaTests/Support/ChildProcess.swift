import Foundation
import TestSupport

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
    var environment = ProcessInfo.processInfo.environment
    environment["CHROMA_TRAP_CHILD"] = "1"
    // The child is meant to trap; Swift's backtracer would spend a long time (minutes under
    // ThreadSanitizer) symbolicating that expected crash.
    environment["SWIFT_BACKTRACE"] = "enable=no"
    let arguments = CommandLine.arguments[0].hasSuffix(".xctest") ? [test] : [bundle, test]
    let child = try Child(CommandLine.arguments[0], arguments, environment: environment,
                          standardError: keepingStandardError ? .pipe : .discard)
    // Read to the end before waiting: a child blocked on a full pipe would never exit.
    let text = keepingStandardError ? String(decoding: child.readToEnd(child.standardError!), as: UTF8.self) : ""
    switch child.wait() {
    case .exited(let code): return (false, code, text)
    case .signaled(let signal): return (true, signal, text)
    }
}
