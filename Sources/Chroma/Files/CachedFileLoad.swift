import Glibc

/// What `Files.loadCached(_:cacheLimit:)` found for a path, without waiting for the device.
@_spi(CachedReads)
public enum CachedFileLoad: Sendable, Equatable {
    /// A regular file of at most `cacheLimit` bytes (and at most the inline read cap), read
    /// whole, with its metadata as `fstat` gave it before the read.
    case contents([UInt8], FileInfo)
    /// A regular file above `cacheLimit`: open (read-only, `O_NONBLOCK`, close-on-exec) and
    /// unread, with its metadata. The caller owns the descriptor.
    case open(Int32, FileInfo)
    /// A directory (nothing is left open).
    case directory
    /// Neither a regular file nor a directory: a FIFO, a socket, a device (nothing is left open).
    case notRegular
    /// The open failed with this errno, as `open(2)` would have (ENOENT, ENOTDIR, EACCES,
    /// EPERM, ELOOP, ENAMETOOLONG).
    case failed(Int32)
    /// Do it on the pool as before: the lookup or the read needs the device, the file is
    /// empty by its size or above the inline cap, this loop spent its budget for the pass,
    /// the fast path is off, or this is not one of the runtime's loops. Nothing is left open.
    case needsPool
}

extension Files {
    /// For a static-file server's cache misses, on one of this runtime's loops: opens `path`
    /// from the page cache (`openat2` with `RESOLVE_CACHED`), `fstat`s it, and reads it whole
    /// with `RWF_NOWAIT` when it is a regular file of at most `cacheLimit` bytes, all without
    /// ever waiting for the device. Anything that would wait gives `.needsPool` with all of
    /// it undone; the caller then does the same work on the pool as before.
    ///
    /// The result is returned, not sent to a completion: this is for a caller that is
    /// already in its own callback on the loop and answers right away. It counts in
    /// `BlockingPool.cachedReadCounts` and the loop's per-pass budget like `read(_:)`.
    /// Loop threads of this runtime; elsewhere it returns `.needsPool`.
    @_spi(CachedReads)
    public func loadCached(_ path: String, cacheLimit: Int) -> CachedFileLoad {
        let reads = runtime.pool.cachedReads
        guard runtime.isRunning, let slot = reads.admit(cost: 0) else { return .needsPool }
        let outcome = path.withCString { reads.readWholeFile($0, refuseAbove: .max, keepOpenAbove: max(0, cacheLimit), slot: slot) }
        let load: CachedFileLoad
        switch outcome {
        case .contents(let bytes, let st): load = .contents(bytes, FileInfo(st))
        case .open(let fd, let st): load = .open(fd, FileInfo(st))
        case .directory: load = .directory
        case .notRegular: load = .notRegular
        case .failed(let code): load = .failed(code)
        case .needsPool: load = .needsPool
        }
        if case .needsPool = load { reads.miss(slot) } else { reads.hit(slot) }
        return load
    }
}
