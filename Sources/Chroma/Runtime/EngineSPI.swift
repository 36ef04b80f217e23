import CChroma
import Glibc
import SystemPackage

// What Chroma lends, through `@_spi(Engine)`, to an engine built on its loops in another
// module: ChromaHTTP's evhttp engine. The loops stay internal; an engine sees each one as
// an `EngineLoop`, gets its `event_base` only inside `withRawBase`'s closure (never to keep
// outside the engine), and registers what the loop's shutdown sweep must close. Its pool
// jobs use the file calls of `Files`.

/// One loop of a runtime, as an engine sees it. `isCurrent`, `index` and `run(as:_:)` are
/// cheap enough for a request's hot path (inlined into the engine); the rest is for setup.
@_spi(Engine) public struct EngineLoop: @unchecked Sendable {
    // Safe to send: `loop` is only used through its thread-safe calls (`withRawBase` while
    // the loop is open, `sockets`, which locks); `identity` is an address compared, never read.
    /// The loop's number, `0..<loopCount`: the colors it owns are those with
    /// `runtime.loopIndex(of:) == index`.
    public let index: Int
    /// The loop's own color, shared with no user color: for the engine's work that must run
    /// on this loop (see `Placement.loopColor`).
    public let loopColor: Color
    /// The address the loop's thread-local identity holds on its thread.
    @usableFromInline let identity: UnsafeMutableRawPointer
    let loop: Loop

    init(_ loop: Loop) {
        self.loop = loop
        index = loop.index
        loopColor = loop.runtime.loopColor(loop.index)
        identity = loop.core.identity
    }

    /// True on this loop's own thread. Any thread.
    @inlinable @inline(__always) public var isCurrent: Bool { chroma_current_loop() == identity }

    /// Stops the program unless called on this loop's thread.
    @inlinable public func preconditionOnLoop(_ what: @autoclosure () -> String = "", file: StaticString = #file, line: UInt = #line) {
        precondition(isCurrent, "must run on loop \(index)'s thread: \(what())", file: file, line: line)
    }

    /// Runs `body` as `color` (one pinned to this loop) right here, as an event callback of
    /// this loop: it starts where every callback starts (`Callback`). Loop thread only.
    @inlinable @inline(__always) public func run(as color: Color, _ body: () -> Void) {
        Callback.run(as: color, body)
    }

    /// Lends the loop's raw `event_base` to `body`. Whatever `body` creates on it must be
    /// freed on this loop before the runtime shuts down (register it with `register`). Any
    /// thread while the loop is open; throws `.shutDown` after.
    public func withRawBase<R>(_ body: (OpaquePointer) throws(ChromaError) -> R) throws(ChromaError) -> R {
        try loop.withRawBase(body)
    }

    /// Has the loop's shutdown sweep close `owner` (on this loop's thread). False when the
    /// sweep already ran: nothing registered later would be closed. Any thread.
    public func register(_ owner: EngineSocketOwner) -> Bool {
        loop.sockets.register(owner)
    }

    /// Undoes `register`, once `owner` has closed itself. Any thread.
    public func unregister(_ owner: EngineSocketOwner) {
        loop.sockets.unregister(owner)
    }
}

/// Something an engine keeps on a loop (a server's sockets) that the loop must close when
/// the runtime shuts down. Subclass it and override `closeForShutdown`.
@_spi(Engine) open class EngineSocketOwner: SocketOwner, @unchecked Sendable {
    // Safe to share: no state of its own; subclasses state their own invariant.
    public init() {}

    /// Loop thread, during the shutdown sweep: close at once.
    open func closeForShutdown() {}
}

extension Runtime {
    /// The loops, in index order. Any thread.
    @_spi(Engine) public var engineLoops: [EngineLoop] { loops.map(EngineLoop.init) }

    /// Throws `.invalidState` before `start()` and `.shutDown` once stopping, naming
    /// `operation`. Any thread.
    @_spi(Engine) public func requireRunning(_ operation: StaticString) throws(ChromaError) {
        try checkRunning(operation)
    }
}

/// A pthread mutex (`Lock`) for engines: unlike `Synchronization.Mutex`, ThreadSanitizer
/// sees it.
@_spi(Engine) public struct EngineLock: Sendable {
    private let lock = Lock()

    /// An unlocked lock.
    public init() {}

    /// Runs `body` with the lock held. Any thread; not reentrant.
    public func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        try lock.withLock(body)
    }
}

/// An IPv4 or IPv6 socket address to listen on, parsed as `listen` parses it.
@_spi(Engine) public struct ListenAddress: Sendable {
    private var address: SocketAddress

    /// nil unless `host` is an IPv4 or IPv6 literal.
    public init?(host: String, port: UInt16) {
        guard let address = SocketAddress(host: host, port: port) else { return nil }
        self.address = address
    }

    /// The port, in host byte order.
    public var port: UInt16 {
        get { address.port }
        set { address.port = newValue }
    }

    /// Lends the address as a `sockaddr` and its length to `body`.
    public func withSockaddr<R, E: Error>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws(E) -> R) throws(E) -> R {
        try address.withSockaddr(body)
    }

    /// The port socket `fd` is bound to (the real one after binding port 0); 0 if unknown.
    public static func boundPort(of fd: Int32) -> UInt16 {
        localPort(of: fd)
    }
}

/// The blocking file calls of `Files`, for engines' pool jobs: each retries on EINTR and
/// throws a `FileError` naming the operation and the path or descriptor.
@_spi(Engine) public enum EngineFileCalls {
    /// Opens `path` with `flags` (`O_CLOEXEC` is always added), read-only unless the flags
    /// say otherwise.
    public static func open(_ path: FilePath, _ flags: Int32, operation: String) throws(FileError) -> FileDescriptor {
        try FileCalls.open(path, flags, nil, operation: operation)
    }

    /// `fstat` of `fd`; errors name `path` (the descriptor being the caller's own).
    public static func stat(_ fd: FileDescriptor, operation: String, path: FilePath) throws(FileError) -> Glibc.stat {
        try FileCalls.rawStat(fd, operation: operation, path: path, reportFD: false)
    }

    /// Reads `count` bytes of `fd` from `offset` into a new array, fewer if the file ends
    /// first (an empty array for none); errors name `path`.
    public static func read(_ fd: FileDescriptor, count: Int, offset: Int64, operation: String, path: FilePath) throws(FileError) -> [UInt8] {
        // (Capacity 0 would write the shared empty array's count: a race TSan reports.)
        guard count > 0 else { return [] }
        var error: Int32 = 0
        let bytes = withUnsafeMutablePointer(to: &error) { error in
            ByteArray.make(count: count, FullRead(fd: fd, offset: offset, error: error))
        }
        if error != 0 { throw FileCalls.fail(operation, path: path, errno: error) }
        return bytes
    }
}

/// A blocking `pread` of the whole count (or to end of file) into a new array; the errno of
/// a failure goes to `error`.
private struct FullRead: ByteArraySource {
    let fd: FileDescriptor
    let offset: Int64
    let error: UnsafeMutablePointer<Int32>

    func write(into start: UnsafeMutableRawPointer, count: Int) -> Int {
        FileCalls.preadFully(fd, into: UnsafeMutableRawBufferPointer(start: start, count: count), offset: offset, errno: &error.pointee)
    }
}
