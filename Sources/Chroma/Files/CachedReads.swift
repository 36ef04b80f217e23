import CChroma
import Glibc
import Synchronization

/// Reads the page cache already holds, done on the calling loop instead of the pool: a small
/// read from memory costs about what the hop to a worker and back costs, so that hop only
/// pays for reads that must wait for the device. io_uring decides the same way inside the
/// kernel: try without blocking, hand the rest to workers.
///
/// - **Only on a loop of this runtime.** Other threads use the pool as always.
/// - **Never blocking.** Reads use `preadv2` with `RWF_NOWAIT`, opens `openat2` with
///   `RESOLVE_CACHED`: both fail with EAGAIN rather than wait for the device, and then the
///   call goes to the pool as it would have. A kernel without `RWF_NOWAIT` (found by a
///   probe once per process), or without `preadv2`, turns the path off for good; one
///   without `RESOLVE_CACHED` turns off the cached opens only. A file that refuses
///   `RWF_NOWAIT` (EOPNOTSUPP: procfs, tmpfs, directories) or the read's arguments (EINVAL)
///   only sends that call to the pool, which reports the real outcome.
/// - **Capped.** A read above `maxBytes` goes to the pool, and each loop reads at most
///   `bytesPerPass` bytes inline per pass of callbacks (a drain's batch of jobs, or one
///   callback libevent made; `Callback` ends each), so a burst of cached reads cannot
///   hold the loop off its sockets. Each call counts at least 4 KiB: the system call is
///   most of a small read's cost.
/// - **Same results.** The completion is queued on the caller's color exactly as the
///   pool's would be (never run inside the call), with the same bytes and the same
///   `FileError`s.
///
/// Threading: `admit` and what uses its slot run on the loop's own thread; the counters
/// may be read from any thread.
final class CachedReads: @unchecked Sendable {
    // Safe to share: the limits are immutable; `runtime`, `slots` and `loopCount` are set
    // once by `attach`, in the runtime's init before any thread starts, and never change;
    // `enabled`, `opensEnabled` and `forceWouldBlock` are atomics; a slot's `pass` and
    // `spent` are touched only by its loop's thread, its counters are atomics.

    /// Whether this kernel knows `RWF_NOWAIT`: probed once per process.
    static let kernelSupportsNoWait: Bool = chroma_pread_nowait_supported() != 0

    /// Each call's minimum charge against the pass budget.
    static let minimumCost = 4096

    /// The largest read tried inline.
    let maxBytes: Int
    /// Bytes each loop may read inline per pass.
    let bytesPerPass: Int
    /// Set once by `attach`, before any loop runs.
    @exclusivity(unchecked) unowned(unsafe) private(set) var runtime: Runtime!
    private let enabled: Atomic<Bool>
    private let opensEnabled = Atomic<Bool>(true)
    /// Tests: every inline read reports EAGAIN, as if its pages had been evicted.
    let forceWouldBlock = Atomic<Bool>(false)
    @exclusivity(unchecked) private var slots: UnsafeMutableRawPointer?
    @exclusivity(unchecked) private var loopCount = 0
    private static let slotBytes = 128

    /// One loop's budget and counters, on a cache line pair of its own.
    struct LoopSlot: ~Copyable {
        /// The pass `spent` belongs to (loop thread only).
        var pass: UInt64 = .max
        /// Bytes charged in that pass (loop thread only).
        var spent = 0
        let hits = Atomic<Int>(0)
        let misses = Atomic<Int>(0)
        let overBudget = Atomic<Int>(0)
    }

    init(configuration: BlockingPool.Configuration) {
        maxBytes = configuration.cachedReadMaxBytes
        bytesPerPass = configuration.cachedReadBytesPerPass
        enabled = Atomic(configuration.cachedReads && CachedReads.kernelSupportsNoWait)
    }

    /// Called once by the pool when the runtime attaches it, before any loop runs.
    func attach(_ runtime: Runtime) {
        precondition(slots == nil, "cached reads are attached once")
        precondition(MemoryLayout<LoopSlot>.size <= CachedReads.slotBytes, "a loop's cached-read slot must fit 128 bytes")
        self.runtime = runtime
        loopCount = runtime.loopCount
        slots = .allocate(byteCount: loopCount * CachedReads.slotBytes, alignment: CachedReads.slotBytes)
        for i in 0..<loopCount { slot(i).initialize(to: LoopSlot()) }
    }

    deinit {
        guard let slots else { return }
        for i in 0..<loopCount { _ = slot(i).move() }
        slots.deallocate()
    }

    @inline(__always) private func slot(_ index: Int) -> UnsafeMutablePointer<LoopSlot> {
        (slots.unsafelyUnwrapped + index * CachedReads.slotBytes).assumingMemoryBound(to: LoopSlot.self)
    }

    /// True while the fast path may be tried at all.
    var isEnabled: Bool { enabled.load(ordering: .relaxed) }

    /// Loop thread: the calling loop's slot, with `cost` bytes charged to this pass, when a
    /// read may run inline now. Nil when the fast path is off, this is not one of this
    /// runtime's loops, or this pass's budget is spent (counted in `overBudget`).
    @inline(__always) func admit(cost: Int) -> UnsafeMutablePointer<LoopSlot>? {
        guard enabled.load(ordering: .relaxed), let index = runtime.unsafelyUnwrapped.currentLoopIndex else { return nil }
        let slot = self.slot(index)
        let pass = chroma_current_pass()
        if slot.pointee.pass != pass {
            slot.pointee.pass = pass
            slot.pointee.spent = 0
        }
        let charge = max(cost, CachedReads.minimumCost)
        guard slot.pointee.spent + charge <= bytesPerPass else {
            CachedReads.bump(slot.pointee.overBudget)
            return nil
        }
        slot.pointee.spent += charge
        return slot
    }

    /// Loop thread: charges `bytes` more to the pass `slot` was admitted in (a whole-file
    /// read learns its size only after it was admitted).
    @inline(__always) func charge(_ slot: UnsafeMutablePointer<LoopSlot>, _ bytes: Int) {
        slot.pointee.spent += bytes
    }

    /// Loop thread: the call was answered on the loop.
    @inline(__always) func hit(_ slot: UnsafeMutablePointer<LoopSlot>) { CachedReads.bump(slot.pointee.hits) }

    /// Loop thread: the call was tried and went to the pool.
    @inline(__always) func miss(_ slot: UnsafeMutablePointer<LoopSlot>) { CachedReads.bump(slot.pointee.misses) }

    /// One writer per counter (its loop), so a plain store, no locked add.
    @inline(__always) private static func bump(_ counter: borrowing Atomic<Int>) {
        counter.store(counter.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
    }

    /// Turns the fast path off for good (the kernel lacks `preadv2`).
    func disable() { enabled.store(false, ordering: .relaxed) }

    /// Whether opens may try `RESOLVE_CACHED`.
    var opensAreEnabled: Bool { opensEnabled.load(ordering: .relaxed) }

    /// Turns cached opens off for good (the kernel lacks `openat2` or `RESOLVE_CACHED`).
    func disableOpens() { opensEnabled.store(false, ordering: .relaxed) }

    /// The counters, summed over loops (or of one loop). Any thread.
    func counts(loop: Int? = nil) -> CachedReadCounts {
        var total = CachedReadCounts()
        for i in loop.map({ [$0] }) ?? Array(0..<loopCount) {
            total.hits += slot(i).pointee.hits.load(ordering: .relaxed)
            total.misses += slot(i).pointee.misses.load(ordering: .relaxed)
            total.overBudget += slot(i).pointee.overBudget.load(ordering: .relaxed)
        }
        return total
    }

    // MARK: Reading without blocking

    /// What a read without blocking came to.
    enum Outcome {
        /// Finished: `filled` bytes read (fewer than asked only at end of file), or the
        /// error the pool would also have met.
        case done
        /// Part of it needs the device (or the file or the arguments refuse `RWF_NOWAIT`):
        /// the pool continues from `filled`.
        case wouldBlock
        /// The read failed with this errno.
        case failed(Int32)
    }

    /// Loop thread: reads `count` bytes at `offset` into `base`, from `filled` on, without
    /// ever waiting for the device.
    func read(_ fd: Int32, into base: UnsafeMutableRawPointer?, count: Int, offset: Int64, filled: inout Int) -> Outcome {
        if forceWouldBlock.load(ordering: .relaxed) { return .wouldBlock }
        while filled < count {
            let n = chroma_pread_nowait(fd, base! + filled, UInt(count - filled), nil, 0, offset + Int64(filled))
            if n > 0 {
                filled += n
            } else if n == 0 {
                return .done
            } else {
                switch Int32(-n) {
                case EINTR: continue
                case EAGAIN, EOPNOTSUPP, EINVAL: return .wouldBlock
                case ENOSYS:
                    disable()
                    return .wouldBlock
                case let code: return .failed(code)
                }
            }
        }
        return .done
    }

    /// What a whole-file read tried on the loop came to.
    enum WholeFile {
        /// The whole file, and its metadata.
        case contents([UInt8], Glibc.stat)
        /// A regular file above `keepOpenAbove` bytes: open, not read (the caller closes it).
        case open(Int32, Glibc.stat)
        case directory
        case notRegular
        /// The open failed with this errno, as `open(2)` would have; or EFBIG for a file
        /// above the caller's limit.
        case failed(Int32)
        /// A step needs the device, or the file is not one to read here (empty by its size,
        /// as procfs files are; above the inline cap; growing): everything was undone.
        case needsPool
    }

    /// Loop thread, admitted: opens `path` from the cache, `fstat`s it and reads it whole
    /// without blocking, or undoes all of it (`.needsPool`). A regular file above
    /// `keepOpenAbove` is returned open and unread; otherwise one above `refuseAbove` fails
    /// with EFBIG, and one above the inline cap needs the pool.
    func readWholeFile(_ path: UnsafePointer<CChar>, refuseAbove: Int, keepOpenAbove: Int = .max,
                       slot: UnsafeMutablePointer<LoopSlot>) -> WholeFile {
        guard opensAreEnabled else { return .needsPool }
        let fd = chroma_open_cached(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        if fd < 0 {
            switch -fd {
            case ENOENT, ENOTDIR, EACCES, EPERM, ELOOP, ENAMETOOLONG: return .failed(-fd)
            case ENOSYS, E2BIG:
                disableOpens()
            case EINVAL:
                // Unknown resolve flag (Linux 5.6 to 5.11); the flags themselves are valid.
                disableOpens()
            default:
                break  // EAGAIN, and anything open(2) should report itself
            }
            return .needsPool
        }
        var st = Glibc.stat()
        guard Glibc.fstat(fd, &st) == 0 else {
            _ = Glibc.close(fd)
            return .needsPool
        }
        switch st.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR:
            _ = Glibc.close(fd)
            return .directory
        default:
            _ = Glibc.close(fd)
            return .notRegular
        }
        let size = Int(st.st_size)
        if size > keepOpenAbove { return .open(fd, st) }
        if size > refuseAbove {
            _ = Glibc.close(fd)
            return .failed(EFBIG)
        }
        guard size > 0, size <= maxBytes, !forceWouldBlock.load(ordering: .relaxed) else {
            _ = Glibc.close(fd)
            return .needsPool
        }
        charge(slot, size)
        var complete = false
        let bytes = withUnsafeMutablePointer(to: &complete) { complete in
            ByteArray.make(count: size, CachedWholeRead(fd: fd, complete: complete))
        }
        if !complete {
            _ = Glibc.close(fd)
            return .needsPool
        }
        if Glibc.close(fd) != 0 && errno != EINTR { return .needsPool }
        return .contents(bytes, st)
    }
}

/// How reads tried the page cache on the loop (see `BlockingPool.Configuration.cachedReads`).
@_spi(CachedReads)
public struct CachedReadCounts: Sendable, Equatable {
    /// Calls answered on the loop, with no pool job.
    public var hits = 0
    /// Calls tried on the loop that needed the device (or that the file refused to try),
    /// and went to the pool.
    public var misses = 0
    /// Calls sent straight to the pool because their loop had spent this pass's budget.
    public var overBudget = 0

    /// All zero.
    public init() {}
}

/// A whole file read from the page cache on the loop (`CachedReads.readWhole`), into a new
/// array of its expected size; `complete` says whether it was read to its end without
/// blocking.
private struct CachedWholeRead: ByteArraySource {
    let fd: Int32
    let complete: UnsafeMutablePointer<Bool>

    func write(into start: UnsafeMutableRawPointer, count size: Int) -> Int {
        var filled = 0
        // One byte past the expected end in the same call: a file that grew since the
        // fstat shows it, and goes to the pool, which reads to the real end.
        var probe: UInt8 = 0
        while true {
            let n = withUnsafeMutableBytes(of: &probe) { extra in
                chroma_pread_nowait(fd, start + filled, UInt(size - filled), extra.baseAddress, 1, Int64(filled))
            }
            if n == -Int(EINTR) { continue }
            if n < 0 || n > size - filled { return filled }
            filled += n
            if n == 0 || filled == size {
                complete.pointee = true  // a short file (it shrank) is read as it is now, as the pool would
                return filled
            }
        }
    }
}
