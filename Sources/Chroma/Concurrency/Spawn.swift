import CChroma

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
    ///
    /// The task carries the site of this call (`fileID`, `line`): stall and crash reports
    /// name it for every job of the task, wherever it runs.
    @discardableResult
    public func spawn<T: Sendable>(on color: Color = Color.current ?? .main, fileID: StaticString = #fileID, line: UInt = #line,
                                   _ body: @escaping @Sendable () async throws -> T,
                                   completion: @escaping @Sendable (Result<T, any Error>) -> Void) -> Task<Void, Never> {
        let site = EnqueueSite.word(fileID, line)
        return Task(executorPreference: taskExecutor(for: color)) {
            // The task's address keys its site in the table reports read (its jobs carry
            // that address, see `Job.init(color:executorJob:executor:)`).
            let task = withUnsafeCurrentTask { $0.map { unsafeBitCast($0, to: UnsafeRawPointer.self) } }
            if let task { _ = chroma_task_site_insert(task, site) }
            defer { if let task { chroma_task_site_remove(task) } }
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
