extension Runtime {
    /// Runs async code from callback code (the async → callback adaptor): `body` runs as a
    /// task that prefers `color`'s executor (default: the caller's color, or `.main`), so
    /// its nonisolated parts run on the color too; `completion` then runs on `color` with
    /// the result. Cancel the returned task to cancel `body` (it sees `CancellationError`
    /// from the Chroma calls it awaits, and the completion still runs, with that error).
    ///
    /// ```swift
    /// runtime.spawn(on: session) {
    ///     try await runtime.files.read("/etc/hostname")
    /// } completion: { result in … }
    /// ```
    @discardableResult
    public func spawn<T: Sendable>(on color: Color = Color.current ?? .main,
                                   _ body: @escaping @Sendable () async throws -> T,
                                   completion: @escaping @Sendable (Result<T, any Error>) -> Void) -> Task<Void, Never> {
        return Task(executorPreference: taskExecutor(for: color)) {
            let result: Result<T, any Error>
            do {
                result = .success(try await body())
            } catch {
                result = .failure(error)
            }
            // The task runs on its preferred executor, so this is normally already the
            // color; a stranded job (the runtime stopped) runs it on the fallback thread.
            completion(result)
        }
    }
}
