import Foundation

/// A value shared between test threads and callbacks under an `NSLock` (a pthread mutex,
/// which ThreadSanitizer sees, unlike `Synchronization.Mutex`).
public final class Locked<Value>: @unchecked Sendable {
    // Safe to share: `value` is only touched with `lock` held.
    private let lock = NSLock()
    private var value: Value

    public init(_ value: Value) { self.value = value }

    public func withLock<R>(_ body: (inout Value) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }

    public var snapshot: Value { withLock { $0 } }
}
