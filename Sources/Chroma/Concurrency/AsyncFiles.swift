import SystemPackage

// The async variants of `Files` and `Runtime.blocking`: the same calls on the same pool,
// returning their result instead of calling a completion.
//
// Each throws the `FileError` the callback variant would report, `CancellationError` when
// the task was cancelled while the call still waited in the pool's queue (cancelling the
// task cancels the queued job; a call already running finishes and its result is
// returned), and `ChromaError` when the runtime is not running. The pool's completion runs
// on the caller's color (or `.main`) and resumes the task on its own executor: on a color
// executor, that is the same loop. A read made on a loop that the page cache answers
// returns at once, without suspending and with no pool job.

extension Files {
    /// `open(2)`; see the callback variant.
    public func open(_ path: FilePath, _ mode: FileDescriptor.AccessMode, options: FileDescriptor.OpenOptions = [],
                     permissions: FilePermissions? = nil) async throws -> FileDescriptor {
        try await perform { try open(path, mode, options: options, permissions: permissions, on: $0, completion: $1) }
    }

    /// `close(2)`; see the callback variant.
    public func close(_ fd: FileDescriptor) async throws {
        try await perform { try close(fd, on: $0, completion: $1) }
    }

    /// `pread(2)` of up to `count` bytes; see the callback variant. On a loop, bytes the
    /// page cache holds are returned without suspending.
    public func read(from fd: FileDescriptor, at offset: Int64, count: Int) async throws -> [UInt8] {
        if let bytes = try readCachedNow(from: fd, at: offset, count: count) { return bytes }
        return try await perform { try read(from: fd, at: offset, count: count, on: $0, tryingCache: false, completion: $1) }
    }

    /// `pwrite(2)` of all of `bytes`; see the callback variant.
    public func write(_ bytes: [UInt8], to fd: FileDescriptor, at offset: Int64) async throws {
        try await perform { try write(bytes, to: fd, at: offset, on: $0, completion: $1) }
    }

    /// `fsync(2)`; see the callback variant.
    public func fsync(_ fd: FileDescriptor) async throws {
        try await perform { try fsync(fd, on: $0, completion: $1) }
    }

    /// `fdatasync(2)`; see the callback variant.
    public func fdatasync(_ fd: FileDescriptor) async throws {
        try await perform { try fdatasync(fd, on: $0, completion: $1) }
    }

    /// `fstat(2)`; see the callback variant.
    public func stat(_ fd: FileDescriptor) async throws -> FileInfo {
        try await perform { try stat(fd, on: $0, completion: $1) }
    }

    /// `ftruncate(2)`; see the callback variant.
    public func truncate(_ fd: FileDescriptor, to size: Int64) async throws {
        try await perform { try truncate(fd, to: size, on: $0, completion: $1) }
    }

    /// The whole file, in one pool job; see the callback variant. On a loop, a file the
    /// page cache holds is returned without suspending.
    public func read(_ path: FilePath, maxBytes: Int = Int(Int32.max)) async throws -> [UInt8] {
        if let bytes = try readCachedNow(path, maxBytes: maxBytes) { return bytes }
        return try await perform { try read(path, maxBytes: maxBytes, on: $0, tryingCache: false, completion: $1) }
    }

    /// Writes the whole file, optionally atomically; see the callback variant.
    public func write(_ bytes: [UInt8], to path: FilePath, atomic: Bool = false,
                      permissions: FilePermissions = [.ownerReadWrite, .groupRead, .otherRead]) async throws {
        try await perform { try write(bytes, to: path, atomic: atomic, permissions: permissions, on: $0, completion: $1) }
    }

    /// `stat(2)`; see the callback variant.
    public func stat(_ path: FilePath) async throws -> FileInfo {
        try await perform { try stat(path, on: $0, completion: $1) }
    }

    /// `lstat(2)`; see the callback variant.
    public func lstat(_ path: FilePath) async throws -> FileInfo {
        try await perform { try lstat(path, on: $0, completion: $1) }
    }

    /// A directory's entries; see the callback variant.
    public func list(_ path: FilePath) async throws -> [DirectoryEntry] {
        try await perform { try list(path, on: $0, completion: $1) }
    }

    /// `mkdir(2)`, optionally with parents; see the callback variant.
    public func makeDirectory(_ path: FilePath,
                              permissions: FilePermissions = [.ownerReadWriteExecute, .groupReadExecute, .otherReadExecute],
                              withIntermediates: Bool = false) async throws {
        try await perform { try makeDirectory(path, permissions: permissions, withIntermediates: withIntermediates, on: $0, completion: $1) }
    }

    /// Removes a file or an empty directory; see the callback variant.
    public func remove(_ path: FilePath) async throws {
        try await perform { try remove(path, on: $0, completion: $1) }
    }

    /// `rename(2)`; see the callback variant.
    public func rename(_ from: FilePath, to: FilePath) async throws {
        try await perform { try rename(from, to: to, on: $0, completion: $1) }
    }

    /// `truncate(2)`; see the callback variant.
    public func truncate(_ path: FilePath, to size: Int64) async throws {
        try await perform { try truncate(path, to: size, on: $0, completion: $1) }
    }

    /// Submits with `start` (given the completion color and the completion), waits for the
    /// result, and maps a cancellation of the task onto the queued job.
    private func perform<T: Sendable>(isolation: isolated (any Actor)? = #isolation,
                                      _ start: (Color, @escaping Completion<T>) throws -> BlockingJob) async throws -> T {
        let color = Color.current ?? .main
        let handle = CancellableJob()
        let result: Result<T, FileError> = try await withTaskCancellationHandler {
            try await withCompletion { done in handle.set(try start(color, done)) }
        } onCancel: {
            handle.cancel()
        }
        switch result {
        case .success(let value): return value
        case .failure(let error) where error.code == .cancelled: throw CancellationError()
        case .failure(let error): throw error
        }
    }
}

extension Runtime {
    /// Runs `work` on the blocking pool and returns its result (the async variant of
    /// `blocking(on:lane:_:completion:)`). Cancelling the task cancels the job if it is
    /// still queued (`CancellationError`); `ChromaError.overloaded` when the queue is full.
    public func blocking<T: Sendable>(lane: BlockingLane = .long, isolation: isolated (any Actor)? = #isolation,
                                      _ work: @escaping @Sendable () throws -> T) async throws -> T {
        let color = Color.current ?? .main
        let handle = CancellableJob()
        let result: Result<T, any Error> = try await withTaskCancellationHandler {
            try await withCompletion { done in handle.set(try blocking(on: color, lane: lane, work, completion: done)) }
        } onCancel: {
            handle.cancel()
        }
        if case .failure(let error) = result, error as? ChromaError == .cancelled(operation: "blocking") {
            throw CancellationError()
        }
        return try result.get()
    }
}

/// A pool job that a task's cancellation handler may cancel before or after it exists.
private final class CancellableJob: @unchecked Sendable {
    // Safe to share: both fields are only touched with `lock` held.
    private let lock = Lock()
    private var job: BlockingJob?
    private var cancelled = false

    func set(_ job: BlockingJob) {
        lock.lock()
        let cancelNow = cancelled
        if !cancelNow { self.job = job }
        lock.unlock()
        if cancelNow { job.cancel() }
    }

    func cancel() {
        lock.lock()
        cancelled = true
        let job = self.job
        lock.unlock()
        job?.cancel()
    }
}
