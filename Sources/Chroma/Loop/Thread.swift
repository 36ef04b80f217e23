import Glibc

/// Starts a pthread that runs `body` and exits; returns the thread to join, or
/// `pthread_create`'s error code. `body` (and what it captures) lives until it returns: a
/// loop or worker thread captures the runtime, which keeps it alive while the thread runs.
func startThread(_ body: @escaping () -> Void) -> Result<pthread_t, ThreadStartError> {
    let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { raw in
        Unmanaged<ThreadBody>.fromOpaque(raw!).takeRetainedValue().run()
        return nil
    }, context)
    if rc != 0 {
        Unmanaged<ThreadBody>.fromOpaque(context).release()
        return .failure(ThreadStartError(code: rc))
    }
    return .success(thread)
}

/// `pthread_create` failed with `code`.
struct ThreadStartError: Error {
    let code: Int32
}

private final class ThreadBody {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}
