import Synchronization
import SystemPackage

/// A reusable descriptor read, for code that reads one piece after another (a chunked
/// copy, random access to an index, a file server's blocks): one buffer and one job,
/// allocated once, serve every read, so a read the page cache answers allocates nothing.
/// Get one from `runtime.files.reader(for:capacity:on:handler:)`.
///
/// ```swift
/// let reader = runtime.files.reader(for: fd, capacity: 4096, on: color) { reader, result in
///     guard case .success(let count) = result, count > 0 else { return }  // 0: end of file
///     reader.withUnsafeBytes { bytes in consume(bytes) }                   // `count` bytes
///     try? reader.read(at: reader.offset + Int64(count), count: 4096)     // the same buffer
/// }
/// try reader.read(at: 0, count: 4096)
/// ```
///
/// Rules:
/// - **One read at a time.** `read` while a read is in flight is a programming error and
///   traps. The handler may start the next read.
/// - **The handler** runs on `color`, exactly once per accepted read, never inside `read`:
///   with the count read (fewer than asked only at end of file) or a `FileError` naming
///   `read` and the descriptor, as `Files.read(from:at:count:)` reports it.
/// - **The bytes** live in the reader: read them with `withUnsafeBytes` in the handler, or
///   later on `color`, until the next `read` starts.
/// - **Where it reads** is `Files.read(from:at:count:)`'s rule: on a loop, from the page
///   cache first; what needs the device goes to the pool, into the same buffer.
/// - The reader stays alive while a read is in flight; the handler is given the reader
///   rather than capturing it, so nothing forms a cycle.
///
/// Threading: `read`, `cancel` and `withUnsafeBytes` belong to the reader's color (or any
/// one thread at a time, ordered with the handler).
public final class FileReader: @unchecked Sendable {
    // Safe to share: `busy` is atomic and admits one read at a time; the read's fields and
    // the buffer's bytes are written by the thread that starts a read, then by the worker
    // or loop that does it, then read by the handler on `color`: the pool's lock and the
    // mailbox order each handoff, and the next read starts only after the handler's turn
    // (`busy`'s release and acquire).

    /// What a reader's read came to: the count read, or the error.
    public typealias Handler = @Sendable (FileReader, Result<Int, FileError>) -> Void

    /// The descriptor read. Closing it is the caller's business, after the last read.
    public let descriptor: FileDescriptor
    /// The largest `count` one read takes: the buffer's size.
    public let capacity: Int
    /// The color the handler runs on.
    public let color: Color

    let runtime: Runtime
    /// The runtime's, kept here so a read does not walk runtime → pool → cached reads.
    let reads: CachedReads
    let handler: Handler
    let buffer: UnsafeMutableRawBufferPointer
    /// Set while a read is in flight, from `read` until its handler starts.
    private let busy = Atomic<Bool>(false)
    /// The pool job for reads that need the device, made on the first and reused.
    @exclusivity(unchecked) private var job: FileReaderJob?
    /// Where the read in flight, or the last one, started. On the reader's color.
    @exclusivity(unchecked) public internal(set) var offset: Int64 = 0
    /// The count the read in flight, or the last one, asked for.
    @exclusivity(unchecked) var wanted = 0
    /// Bytes of the buffer the read has filled.
    @exclusivity(unchecked) var filled = 0
    /// Its errno (0: none), or the failure errno cannot say.
    @exclusivity(unchecked) var errorCode: Int32 = 0
    /// The failure errno cannot say (invalid arguments, the pool's refusal).
    @exclusivity(unchecked) private(set) var failure: FileError?

    /// Records a failure errno cannot say.
    func fail(_ code: FileError.Code) {
        failure = FileError(operation: "read", descriptor: descriptor, code: code)
    }

    init(runtime: Runtime, descriptor: FileDescriptor, capacity: Int, color: Color, handler: @escaping Handler) {
        precondition(capacity >= 0 && capacity <= Files.maxReadCount, "a FileReader's capacity must be in 0...\(Files.maxReadCount)")
        self.runtime = runtime
        reads = runtime.pool.cachedReads
        self.descriptor = descriptor
        self.capacity = capacity
        self.color = color
        self.handler = handler
        // Page-aligned, as a buffer for direct reads would need to be.
        buffer = .allocate(byteCount: max(capacity, 1), alignment: capacity >= 4096 ? 4096 : 64)
    }

    deinit {
        buffer.deallocate()
    }

    /// Reads up to `count` bytes at `offset` into the reader's buffer; the handler gets the
    /// outcome on `color`. `count` 0 succeeds with no system call; an `offset` below 0 or a
    /// `count` outside `0...capacity` fails with `.invalidArgument`, through the handler.
    /// Throws `ChromaError` only when the read cannot be queued (the runtime is not running,
    /// or is stopping); then the handler will not run and the reader may read again.
    public func read(at offset: Int64, count: Int, fileID: StaticString = #fileID, line: UInt = #line) throws(ChromaError) {
        precondition(!busy.exchange(true, ordering: .acquiring), "FileReader.read while a read is in flight")
        self.offset = offset
        wanted = count
        filled = 0
        errorCode = 0
        if failure != nil { failure = nil }
        let site = EnqueueSite.word(fileID, line)
        do throws(ChromaError) {
            if offset < 0 || count < 0 || count > capacity {
                fail(.invalidArgument("offset must not be negative and count must be in 0...\(capacity) (offset \(offset), count \(count))"))
                try runtime.checkRunning("read")
                try postFinished(site)
                return
            }
            if count <= reads.maxBytes, let slot = reads.admit(cost: count) {
                try runtime.checkRunning("read")
                switch reads.read(descriptor.rawValue, into: buffer.baseAddress, count: count, offset: offset, filled: &filled) {
                case .wouldBlock:
                    reads.miss(slot)
                case .done:
                    reads.hit(slot)
                    try postFinished(site)
                    return
                case .failed(let code):
                    reads.hit(slot)
                    errorCode = code
                    try postFinished(site)
                    return
                }
            }
            try runtime.checkRunning("read")
            let job = self.job ?? FileReaderJob(color: color)
            self.job = job
            job.start(self, site: site)
            do throws(ChromaError) {
                try runtime.pool.submit(job, operation: "read")
            } catch {
                job.abandon()
                throw error
            }
        } catch {
            busy.store(false, ordering: .releasing)
            throw error
        }
    }

    /// A read done here (or refused here): its handler queued on `color` as a function job
    /// holding one reference to the reader, the way a pool completion is queued, so it runs
    /// later and never inside `read`. With chains on, the pool job's path carries them.
    private func postFinished(_ site: UInt64) throws(ChromaError) {
        if runtime.keepsChains {
            let job = self.job ?? FileReaderJob(color: color)
            self.job = job
            job.start(self, site: site)
            do throws(ChromaError) {
                try job.postFinishedOnLoop(runtime, operation: "read")
            } catch {
                job.abandon()
                throw error
            }
            return
        }
        let posted = runtime.post(Job(color: color.rawValue, site: site, function: { raw in
            Unmanaged<FileReader>.fromOpaque(raw.unsafelyUnwrapped).takeRetainedValue().finish(refused: false)
        }, context: Unmanaged.passRetained(self).toOpaque()), color: color.rawValue)
        if !posted {
            // A refused function job is ours again, with the reference it held.
            Unmanaged.passUnretained(self).release()
            throw .shutDown(operation: "read")
        }
    }

    /// Cancels the read in flight if it still waits in the pool's queue: its handler then
    /// gets `.cancelled`. True when it was cancelled. On the reader's color.
    @discardableResult
    public func cancel() -> Bool {
        guard busy.load(ordering: .relaxed), let job else { return false }
        return runtime.pool.cancel(job)
    }

    /// The bytes the last read produced (none before the first, or after a failure). Valid
    /// inside `body` only; on the reader's color, while no read is in flight.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(rebasing: buffer[0..<(failure == nil && errorCode == 0 ? filled : 0)]))
    }

    /// On `color`: the read's outcome, handed to the handler. A refused pool job (cancelled,
    /// overloaded) may still sit in a pool queue as a tombstone, so it is never reused.
    func finish(refused: Bool) {
        if refused { job = nil }
        if failure == nil && errorCode == 0 {
            busy.store(false, ordering: .releasing)
            // Built in the call, a success is known to need no destroying afterwards.
            handler(self, .success(filled))
            return
        }
        let failure = self.failure ?? FileCalls.fail("read", fd: descriptor, errno: errorCode)
        busy.store(false, ordering: .releasing)
        handler(self, .failure(failure))
    }
}

extension Files {
    /// A reusable reader of `fd`: a buffer of `capacity` bytes and one job, made once, for
    /// reads one after another whose outcomes go to `handler` on `color` (see
    /// `FileReader`). Any thread.
    public func reader(for fd: FileDescriptor, capacity: Int, on color: Color = Color.current ?? .main,
                       handler: @escaping FileReader.Handler) -> FileReader {
        FileReader(runtime: runtime, descriptor: fd, capacity: capacity, color: color, handler: handler)
    }
}

/// A `FileReader`'s pool job, started again for each read that needs the device: it
/// continues the reader's read where the loop stopped.
final class FileReaderJob: PoolJob, @unchecked Sendable {
    // Safe to share: see `PoolJob` and `FileReader`; a job is restarted only after the
    // handler of its previous read has begun, so no two reads' fields overlap.
    /// The reader in flight: held strongly from `start` to `complete`, so the reader (and
    /// its buffer) outlives every read, and released then, so nothing forms a cycle.
    @exclusivity(unchecked) private var reader: FileReader?
    @exclusivity(unchecked) private var refused = false

    init(color: Color) {
        super.init(color: color, lane: .short)
    }

    /// The reading thread: readies the job for the reader's read.
    func start(_ reader: FileReader, site: UInt64) {
        self.reader = reader
        refused = false
        state = .queued
        chain = nil
        self.site = site
        lane = reader.wanted > FileCalls.shortLaneBytes ? .long : .short
    }

    /// The reading thread, when the read was not accepted: drops the reader.
    func abandon() { reader = nil }

    override func run() -> Bool {
        let reader = self.reader.unsafelyUnwrapped
        let start = reader.filled
        var error: Int32 = 0
        let target = UnsafeMutableRawBufferPointer(rebasing: reader.buffer[start..<reader.wanted])
        reader.filled = start + FileCalls.preadFully(reader.descriptor, into: target, offset: reader.offset + Int64(start), errno: &error)
        reader.errorCode = error
        return true
    }

    override func refuse(_ refusal: PoolRefusal) {
        refused = true
        reader.unsafelyUnwrapped.fail(refusal == .overloaded ? .overloaded : .cancelled)
    }

    override func complete() {
        self.reader.take().unsafelyUnwrapped.finish(refused: refused)
    }
}
