/// Something on a loop that holds sockets (a connection, a listener) and must release them
/// on that loop's thread when the runtime shuts down.
protocol SocketOwner: AnyObject {
    /// Loop thread, during the shutdown sweep: close at once, reporting `.shutdown`.
    func closeForShutdown()
}

/// The socket owners live on one loop. Registering takes a lock, so nothing can slip onto a
/// loop after its shutdown sweep: `register` then returns false.
final class LoopSockets: @unchecked Sendable {
    // Safe to share: `owners` and `closed` are only touched with `lock` held.
    private let lock = Lock()
    private var owners: [ObjectIdentifier: SocketOwner] = [:]
    private var closed = false

    func register(_ owner: SocketOwner) -> Bool {
        lock.withLock {
            guard !closed else { return false }
            owners[ObjectIdentifier(owner)] = owner
            return true
        }
    }

    func unregister(_ owner: SocketOwner) {
        lock.withLock { owners[ObjectIdentifier(owner)] = nil }
    }

    /// Loop thread, at shutdown: closes every owner.
    func closeAll() {
        let all = lock.withLock { () -> [SocketOwner] in
            closed = true
            defer { owners.removeAll() }
            return Array(owners.values)
        }
        for owner in all { owner.closeForShutdown() }
    }
}
