extension Runtime {
    /// File-system calls on the blocking pool, with completions on colors (see `Files`).
    public var files: Files { Files(runtime: self) }

    /// Runs `work` on a blocking-pool worker, then `completion` with its result on `color`
    /// (default: the caller's color, or `.main` outside callbacks): libuv's `uv_queue_work`,
    /// libasync's aiod for any call that blocks.
    ///
    /// ```swift
    /// try runtime.blocking(on: color) {
    ///     try expensiveHash(password)
    /// } completion: { result in
    ///     reply(try? result.get())
    /// }
    /// ```
    ///
    /// `work` runs on a pool thread, outside every color: it must not touch state that a
    /// color protects; hand results to `completion` instead. `lane` (default `.long`, since
    /// the pool cannot know how long arbitrary work takes) decides which queue it waits in.
    /// The completion runs exactly once: with `work`'s result, or with
    /// `ChromaError.overloaded` when the queue was full, or `ChromaError.cancelled` when the
    /// returned job was cancelled (or the runtime stopped) before a worker took it.
    /// Throws `.shutDown` (and never completes) once the runtime is stopping, and
    /// `.invalidState` before `start()`.
    ///
    /// Shutdown waits for running work to finish: work that blocks forever blocks
    /// `shutdown()` too.
    @discardableResult
    public func blocking<T: Sendable>(on color: Color = Color.current ?? .main, lane: BlockingLane = .long,
                                      fileID: StaticString = #fileID, line: UInt = #line,
                                      _ work: @escaping @Sendable () throws -> T,
                                      completion: @escaping @Sendable (Result<T, any Error>) -> Void) throws(ChromaError) -> BlockingJob {
        try checkRunning("blocking")
        let job = BlockingWork(color: color, lane: lane, capacity: pool.configuration.queueCapacity,
                               work: work, completion: completion)
        job.site = EnqueueSite.word(fileID, line)
        try pool.submit(job, operation: "blocking")
        return BlockingJob(job: job, pool: pool)
    }
}
