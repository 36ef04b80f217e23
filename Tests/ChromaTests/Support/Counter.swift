import Synchronization

/// A thread-safe counter for assertions made from callbacks.
final class Counter: Sendable {
    private let value = Atomic<Int>(0)
    @discardableResult func increment(by n: Int = 1) -> Int { value.add(n, ordering: .sequentiallyConsistent).newValue }
    var current: Int { value.load(ordering: .sequentiallyConsistent) }
}
