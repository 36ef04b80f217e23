import Glibc

/// What a loop's listening socket does when accept fails for lack of descriptors or memory
/// (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`): the connection stays in the backlog and the
/// socket stays readable, so the loop would spin on it. Instead the socket stops accepting
/// for `retryDelay` and then tries again; the waiting connections are served once
/// descriptors free up. Used by `Listener` and by ChromaHTTP's server. Loop thread.
@_spi(Engine) public enum AcceptBackoff {
    /// How long a loop's socket pauses before accepting again.
    public static let retryDelay: Duration = .milliseconds(100)

    /// True for the accept errors that pause the socket: out of descriptors or memory.
    public static func pauses(after error: Int32) -> Bool {
        error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM
    }

    /// Accept failed with `error` on the loop that owns `loopColor`. If the error pauses the
    /// socket, runs `pause` now and `resume` on `loopColor` after `retryDelay` (never, if
    /// the runtime is stopping: its shutdown closes the socket). Loop thread.
    public static func acceptFailed(_ error: Int32, runtime: Runtime, loopColor: Color,
                                    pause: () -> Void, resume: @escaping @Sendable () -> Void) {
        guard pauses(after: error) else { return }
        pause()
        _ = try? runtime.schedule(after: retryDelay, on: loopColor, resume)
    }
}
