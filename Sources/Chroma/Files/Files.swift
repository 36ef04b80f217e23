import Glibc
import SystemPackage

/// Blocking file-system calls as completion events: each call runs on the runtime's
/// `BlockingPool` and its completion runs on a color, by default the caller's (the color of
/// the callback making the call, or `.main` outside callbacks). Get one from
/// `runtime.files`.
///
/// ```swift
/// try runtime.files.read("/etc/hostname") { result in
///     switch result {
///     case .success(let bytes): print(String(decoding: bytes, as: UTF8.self))
///     case .failure(let error): print(error)   // "read /etc/hostname: … (errno 2)"
///     }
/// }
/// ```
///
/// Rules, for every method:
/// - It returns at once, never blocking the caller's loop. It throws `ChromaError` only when
///   the call cannot be queued at all: the runtime is not running, or is stopping.
/// - Otherwise the completion runs exactly once, on `color`, with the result or a
///   `FileError` naming the operation, the path or descriptor, and the errno. A full pool
///   queue gives `.overloaded`, a cancelled job `.cancelled`.
/// - One-shot operations (`read(_:)` and `write(_:to:)` of a whole file) are one pool job:
///   open, read or write, and close run together on one worker.
/// - Reads made on a loop (`read(from:at:count:)`, and `read(_:)` of a whole file) first
///   try the page cache right there, with no pool job; only what needs the device goes to
///   the pool. The completion is the same either way: queued on `color`, never run inside
///   the call (see `BlockingPool.Configuration.cachedReads`).
/// - Bytes read go straight from the kernel into the array the completion receives; bytes
///   written are read from the caller's array in place.
/// - The returned `BlockingJob` cancels the call while it still waits in the queue.
///
/// Descriptors are plain `FileDescriptor`s: close each one you open (with `close`, or
/// `FileDescriptor.close()` where blocking is harmless).
public struct Files: Sendable {
    let runtime: Runtime

    /// A completion for a file operation: runs on the color the operation was given.
    public typealias Completion<T> = @Sendable (Result<T, FileError>) -> Void

    // MARK: Descriptors

    /// Opens `path` (`open(2)` with `O_CLOEXEC`). `permissions` applies when `.create` makes
    /// the file (default 0644).
    @discardableResult
    public func open(_ path: FilePath, _ mode: FileDescriptor.AccessMode, options: FileDescriptor.OpenOptions = [],
                     permissions: FilePermissions? = nil, on color: Color = Color.current ?? .main,
                     fileID: StaticString = #fileID, line: UInt = #line, completion: @escaping Completion<FileDescriptor>) throws(ChromaError) -> BlockingJob {
        let flags = mode.rawValue | options.rawValue
        return try submit(EnqueueSite.word(fileID, line), "open", .short, color, path: path, completion: completion) { () throws(FileError) in
            try FileCalls.open(path, flags, permissions, operation: "open")
        }
    }

    /// Closes `fd`. The descriptor is released even when this reports an error (Linux
    /// semantics), so never close it twice.
    @discardableResult
    public func close(_ fd: FileDescriptor, on color: Color = Color.current ?? .main,
                      fileID: StaticString = #fileID, line: UInt = #line, completion: @escaping Completion<Void>) throws(ChromaError) -> BlockingJob {
        try submit(EnqueueSite.word(fileID, line), "close", .short, color, descriptor: fd, completion: completion) { () throws(FileError) in
            try FileCalls.close(fd)
        }
    }

    /// The largest `count` a descriptor read accepts (1 GiB): its buffer is allocated when
    /// the call is made.
    public static let maxReadCount = 1 << 30

    /// Reads up to `count` bytes of `fd` at `offset` (`pread(2)`, repeated until `count`
    /// bytes or end of file). The array holds fewer than `count` bytes only at end of file.
    /// Reads above 1 MiB go to the long lane. `count` 0 succeeds at once with no system
    /// call (so it does not check `fd`); above `maxReadCount` it is refused.
    @discardableResult
    public func read(from fd: FileDescriptor, at offset: Int64, count: Int, on color: Color = Color.current ?? .main,
                     fileID: StaticString = #fileID, line: UInt = #line, completion: @escaping Completion<[UInt8]>) throws(ChromaError) -> BlockingJob {
        try read(from: fd, at: offset, count: count, on: color, tryingCache: true, site: EnqueueSite.word(fileID, line), completion: completion)
    }

    /// `read(from:at:count:on:completion:)`, trying the page cache on the loop first only
    /// `tryingCache` (the async variant has tried already).
    func read(from fd: FileDescriptor, at offset: Int64, count: Int, on color: Color, tryingCache: Bool, site: UInt64 = 0,
              completion: @escaping Completion<[UInt8]>) throws(ChromaError) -> BlockingJob {
        if offset < 0 || count < 0 || count > Files.maxReadCount {
            return try submitInvalid(site, "read", color, descriptor: fd,
                                     "offset must not be negative and count must be in 0...\(Files.maxReadCount) (offset \(offset), count \(count))",
                                     completion: completion)
        }
        let lane: BlockingLane = count > FileCalls.shortLaneBytes ? .long : .short
        let job = PreadJob(fd, offset: offset, count: count, lane: lane, color: color, completion: completion)
        let reads = runtime.pool.cachedReads
        if tryingCache, count <= reads.maxBytes, let slot = reads.admit(cost: count) {
            try runtime.checkRunning("read")
            if job.readCached(reads) {
                reads.hit(slot)
                job.site = site
                try job.postFinishedOnLoop(runtime, operation: "read")
                return BlockingJob(job: job, pool: runtime.pool)
            }
            reads.miss(slot)
        }
        return try submit(site, job, "read")
    }

    /// Writes all of `bytes` to `fd` at `offset` (`pwrite(2)`, repeated until done).
    /// Writes above 1 MiB go to the long lane.
    @discardableResult
    public func write(_ bytes: [UInt8], to fd: FileDescriptor, at offset: Int64, on color: Color = Color.current ?? .main,
                      fileID: StaticString = #fileID, line: UInt = #line, completion: @escaping Completion<Void>) throws(ChromaError) -> BlockingJob {
        if offset < 0 {
            return try submitInvalid(EnqueueSite.word(fileID, line), "write", color, descriptor: fd, "offset must not be negative (\(offset))", completion: completion)
        }
        let lane: BlockingLane = bytes.count > FileCalls.shortLaneBytes ? .long : .short
        return try submit(EnqueueSite.word(fileID, line), "write", lane, color, descriptor: fd, completion: completion) { () throws(FileError) in
            try FileCalls.pwrite(bytes, fd, offset: offset)
        }
    }

    /// Flushes `fd`'s data and metadata to the device (`fsync(2)`). Long lane.
    @discardableResult
    public func fsync(_ fd: FileDescriptor, on color: Color = Color.current ?? .main,
                      fileID: StaticString = #fileID, line: UInt = #line, completion: @escaping Completion<Void>) throws(ChromaError) -> BlockingJob {
        try submit(EnqueueSite.word(fileID, line), "fsync", .long, color, descriptor: fd, completion: completion) { () throws(FileError) in
            try FileCalls.fsync(fd, dataOnly: false, operation: "fsync")
        }
    }

    /// Flushes `fd`'s data, and only the metadata needed to read it back (`fdatasync(2)`).
    /// Long lane.
    @discardableResult
    public func fdatasync(_ fd: FileDescriptor, on color: Color = Color.current ?? .main,
                          fileID: StaticString = #fileID, line: UInt = #line, completion: @escaping Completion<Void>) throws(ChromaError) -> BlockingJob {
        try submit(EnqueueSite.word(fileID, line), "fdatasync", .long, color, descriptor: fd, completion: completion) { () throws(FileError) in
            try FileCalls.fsync(fd, dataOnly: true, operation: "fdatasync")
        }
    }

    /// `fd`'s metadata (`fstat(2)`).
    @discardableResult
    public func stat(_ fd: FileDescriptor, on color: Color = Color.current ?? .main,
                     fileID: StaticString = #fileID, line: UInt = #line, completion: @escaping Completion<FileInfo>) throws(ChromaError) -> BlockingJob {
        try submit(EnqueueSite.word(fileID, line), "stat", .short, color, descriptor: fd, completion: completion) { () throws(FileError) in
            FileInfo(try FileCalls.rawStat(fd, operation: "stat"))
        }
    }

    /// Sets `fd`'s size (`ftruncate(2)`): cuts or extends with zeros.
    @discardableResult
    public func truncate(_ fd: FileDescriptor, to size: Int64, on color: Color = Color.current ?? .main,
                         fileID: StaticString = #fileID, line: UInt = #line, completion: @escaping Completion<Void>) throws(ChromaError) -> BlockingJob {
        if size < 0 {
            return try submitInvalid(EnqueueSite.word(fileID, line), "truncate", color, descriptor: fd, "size must not be negative (\(size))", completion: completion)
        }
        return try submit(EnqueueSite.word(fileID, line), "truncate", .short, color, descriptor: fd, completion: completion) { () throws(FileError) in
            try FileCalls.truncate(fd, to: size)
        }
    }

    // MARK: Whole files

    /// Reads the whole file at `path`: open, read to the end, close, as one pool job. It
    /// starts in the short lane; a file above 1 MiB continues in the long lane (it closes
    /// and reopens the file rather than hold a descriptor while it waits), so a big read
    /// never holds a short-lane worker.
    ///
    /// A file larger than `maxBytes` (default 2 GiB − 1, as Node's `readFile`) fails with
    /// `EFBIG` before anything is allocated; one without a size (procfs, devices) fails
    /// with `EFBIG` once it has produced more. The file is opened with `O_NONBLOCK`, so a
    /// FIFO never blocks a worker: with no writer it reads as empty, and with a writer that
    /// has nothing to say it fails with `EAGAIN`.
    @discardableResult
    public func read(_ path: FilePath, maxBytes: Int = Int(Int32.max), on color: Color = Color.current ?? .main,
                     fileID: StaticString = #fileID, line: UInt = #line, completion: @escaping Completion<[UInt8]>) throws(ChromaError) -> BlockingJob {
        try read(path, maxBytes: maxBytes, on: color, tryingCache: true, site: EnqueueSite.word(fileID, line), completion: completion)
    }

    /// `read(_:maxBytes:on:completion:)`, trying the page cache on the loop first only
    /// `tryingCache` (the async variant has tried already).
    func read(_ path: FilePath, maxBytes: Int, on color: Color, tryingCache: Bool, site: UInt64 = 0,
              completion: @escaping Completion<[UInt8]>) throws(ChromaError) -> BlockingJob {
        let job = WholeFileRead(path: path, maxBytes: max(0, maxBytes), color: color, completion: completion)
        let reads = runtime.pool.cachedReads
        if tryingCache, let slot = reads.admit(cost: 0) {
            try runtime.checkRunning("read")
            if job.readCached(reads, slot: slot) {
                reads.hit(slot)
                job.site = site
                try job.postFinishedOnLoop(runtime, operation: "read")
                return BlockingJob(job: job, pool: runtime.pool)
            }
            reads.miss(slot)
        }
        return try submit(site, job, "read")
    }

    /// Writes `bytes` as the whole content of `path`, creating it with `permissions` if
    /// needed (default 0644), as one pool job.
    ///
    /// With `atomic`, readers see the old content or the new, never a mix, even across a
    /// crash: the bytes go to a temporary file beside `path`, which is fsynced, renamed over
    /// `path`, and the directory fsynced. If any step fails, the temporary file is removed
    /// and `path` is untouched. Atomic writes, and writes above 1 MiB, use the long lane.
    @discardableResult
    public func write(_ bytes: [UInt8], to path: FilePath, atomic: Bool = false, permissions: FilePermissions = [.ownerReadWrite, .groupRead, .otherRead],
                      on color: Color = Color.current ?? .main, fileID: StaticString = #fileID, line: UInt = #line, completion: @escaping Completion<Void>) throws(ChromaError) -> BlockingJob {
        let lane: BlockingLane = atomic || bytes.count > FileCalls.shortLaneBytes ? .long : .short
        return try submit(EnqueueSite.word(fileID, line), "write", lane, color, path: path, completion: completion) { () throws(FileError) in
            try FileCalls.writeFile(bytes, to: path, atomic: atomic, permissions: permissions)
        }
    }

    // MARK: Paths

    /// `path`'s metadata, following symbolic links (`stat(2)`).
    @discardableResult
    public func stat(_ path: FilePath, on color: Color = Color.current ?? .main,
                     fileID: StaticString = #fileID, line: UInt = #line, completion: @escaping Completion<FileInfo>) throws(ChromaError) -> BlockingJob {
        try submit(EnqueueSite.word(fileID, line), "stat", .short, color, path: path, completion: completion) { () throws(FileError) in
            try FileCalls.info(path, followLinks: true, operation: "stat")
        }
    }

    /// `path`'s own metadata: a symbolic link is described, not followed (`lstat(2)`).
    @discardableResult
    public func lstat(_ path: FilePath, on color: Color = Color.current ?? .main,
                      fileID: StaticString = #fileID, line: UInt = #line, completion: @escaping Completion<FileInfo>) throws(ChromaError) -> BlockingJob {
        try submit(EnqueueSite.word(fileID, line), "lstat", .short, color, path: path, completion: completion) { () throws(FileError) in
            try FileCalls.info(path, followLinks: false, operation: "lstat")
        }
    }

    /// The entries of the directory at `path`, without "." and "..", in the order the file
    /// system returns them.
    @discardableResult
    public func list(_ path: FilePath, on color: Color = Color.current ?? .main,
                     fileID: StaticString = #fileID, line: UInt = #line, completion: @escaping Completion<[DirectoryEntry]>) throws(ChromaError) -> BlockingJob {
        try submit(EnqueueSite.word(fileID, line), "list", .short, color, path: path, completion: completion) { () throws(FileError) in
            try FileCalls.list(path)
        }
    }

    /// Creates a directory (`mkdir(2)`); with `withIntermediates`, also its missing parents,
    /// and an existing directory is not an error.
    @discardableResult
    public func makeDirectory(_ path: FilePath, permissions: FilePermissions = [.ownerReadWriteExecute, .groupReadExecute, .otherReadExecute],
                              withIntermediates: Bool = false, on color: Color = Color.current ?? .main,
                              fileID: StaticString = #fileID, line: UInt = #line, completion: @escaping Completion<Void>) throws(ChromaError) -> BlockingJob {
        try submit(EnqueueSite.word(fileID, line), "makeDirectory", .short, color, path: path, completion: completion) { () throws(FileError) in
            try FileCalls.makeDirectory(path, permissions: permissions, withIntermediates: withIntermediates)
        }
    }

    /// Removes a file, or an empty directory (`unlink(2)`, then `rmdir(2)` for a directory).
    @discardableResult
    public func remove(_ path: FilePath, on color: Color = Color.current ?? .main,
                       fileID: StaticString = #fileID, line: UInt = #line, completion: @escaping Completion<Void>) throws(ChromaError) -> BlockingJob {
        try submit(EnqueueSite.word(fileID, line), "remove", .short, color, path: path, completion: completion) { () throws(FileError) in
            try FileCalls.remove(path)
        }
    }

    /// Renames `from` to `to`, atomically replacing `to` if it exists (`rename(2)`). The
    /// error names `from`.
    @discardableResult
    public func rename(_ from: FilePath, to: FilePath, on color: Color = Color.current ?? .main,
                       fileID: StaticString = #fileID, line: UInt = #line, completion: @escaping Completion<Void>) throws(ChromaError) -> BlockingJob {
        try submit(EnqueueSite.word(fileID, line), "rename", .short, color, path: from, completion: completion) { () throws(FileError) in
            try FileCalls.rename(from, to: to)
        }
    }

    /// Sets the size of the file at `path` (`truncate(2)`): cuts or extends with zeros.
    @discardableResult
    public func truncate(_ path: FilePath, to size: Int64, on color: Color = Color.current ?? .main,
                         fileID: StaticString = #fileID, line: UInt = #line, completion: @escaping Completion<Void>) throws(ChromaError) -> BlockingJob {
        if size < 0 {
            return try submitInvalid(EnqueueSite.word(fileID, line), "truncate", color, path: path, "size must not be negative (\(size))", completion: completion)
        }
        return try submit(EnqueueSite.word(fileID, line), "truncate", .short, color, path: path, completion: completion) { () throws(FileError) in
            try FileCalls.truncate(path, to: size)
        }
    }

    // MARK: Reading on the loop

    /// The async reads' fast path: on a loop, the whole descriptor read from the page cache,
    /// returned at once (its error thrown); nil when it must go to the pool (the pool then
    /// reads it all again, and reports invalid arguments).
    func readCachedNow(from fd: FileDescriptor, at offset: Int64, count: Int) throws -> [UInt8]? {
        guard offset >= 0, count >= 0 else { return nil }
        let reads = runtime.pool.cachedReads
        guard count <= reads.maxBytes, let slot = reads.admit(cost: count) else { return nil }
        try runtime.checkRunning("read")
        var outcome = CachedReads.Outcome.done
        let bytes = count == 0 ? [] : withUnsafeMutablePointer(to: &outcome) { outcome in
            ByteArray.make(count: count, CachedRead(reads: reads, fd: fd.rawValue, offset: offset, outcome: outcome))
        }
        switch outcome {
        case .wouldBlock:
            reads.miss(slot)
            return nil
        case .done:
            reads.hit(slot)
            return bytes
        case .failed(let code):
            reads.hit(slot)
            throw FileCalls.fail("read", fd: fd, errno: code)
        }
    }

    /// The async whole-file read's fast path: the file from the page cache, returned at once
    /// (its error thrown); nil when it must go to the pool.
    func readCachedNow(_ path: FilePath, maxBytes: Int) throws -> [UInt8]? {
        let reads = runtime.pool.cachedReads
        guard let slot = reads.admit(cost: 0) else { return nil }
        try runtime.checkRunning("read")
        switch path.withPlatformString({ reads.readWholeFile($0, refuseAbove: max(0, maxBytes), slot: slot) }) {
        case .contents(let bytes, _):
            reads.hit(slot)
            return bytes
        case .failed(let code):
            reads.hit(slot)
            throw FileCalls.fail("read", path: path, errno: code)
        case .open(let fd, _):
            _ = Glibc.close(fd)
            reads.miss(slot)
            return nil
        case .directory, .notRegular, .needsPool:
            reads.miss(slot)
            return nil
        }
    }

    // MARK: Submitting

    /// Queues `call` on the pool; its result, or the pool's refusal, goes to `completion`
    /// on `color`.
    private func submit<T: Sendable>(_ site: UInt64, _ operation: StaticString, _ lane: BlockingLane, _ color: Color,
                                     path: FilePath? = nil, descriptor: FileDescriptor? = nil,
                                     completion: @escaping Completion<T>,
                                     _ call: @escaping @Sendable () throws(FileError) -> T) throws(ChromaError) -> BlockingJob {
        try submit(site, FileCallJob(operation, lane, color, path: path, descriptor: descriptor, completion: completion, call: call), operation)
    }

    /// `site`: the `EnqueueSite` word of the public call, which its completion carries.
    private func submit(_ site: UInt64, _ job: PoolJob, _ operation: StaticString) throws(ChromaError) -> BlockingJob {
        try runtime.checkRunning(operation)
        job.site = site
        try runtime.pool.submit(job, operation: operation)
        return BlockingJob(job: job, pool: runtime.pool)
    }

    /// Completes at once (through the pool's queue, so still on `color` and never inline)
    /// with an `.invalidArgument` error.
    private func submitInvalid<T: Sendable>(_ site: UInt64, _ operation: StaticString, _ color: Color, path: FilePath? = nil,
                                            descriptor: FileDescriptor? = nil, _ detail: String,
                                            completion: @escaping Completion<T>) throws(ChromaError) -> BlockingJob {
        try submit(site, operation, .short, color, path: path, descriptor: descriptor, completion: completion) { () throws(FileError) -> T in
            throw FileError(operation: String(describing: operation), path: path, descriptor: descriptor, code: .invalidArgument(detail))
        }
    }
}

/// A read from the page cache on the loop, into a new array (`Files.readCachedNow`); how
/// it ended goes to `outcome`.
private struct CachedRead: ByteArraySource {
    let reads: CachedReads
    let fd: Int32
    let offset: Int64
    let outcome: UnsafeMutablePointer<CachedReads.Outcome>

    func write(into start: UnsafeMutableRawPointer, count: Int) -> Int {
        var filled = 0
        outcome.pointee = reads.read(fd, into: start, count: count, offset: offset, filled: &filled)
        return filled
    }
}
