import CLibevent
import Glibc

// The file that wraps libevent's core handles (bases, events, bufferevents, listeners);
// `OpaquePointer`s stay private to it. One exception: `withRawBase` lends the base to
// `Net/HTTPEngine.swift`, which wraps evhttp the same way.

/// libevent must be told to use pthreads locks once, before the first `event_base`.
private let libeventThreadsEnabled: Bool = {
    evthread_use_pthreads() == 0
}()

/// One `event_base`, created and freed on its loop's thread.
final class EventBase {
    private let raw: OpaquePointer

    /// Creates the base on the calling thread, which must be the loop's own thread.
    ///
    /// Everything Chroma registers runs at one priority (`.io`): sockets, timers, signals,
    /// the queue's wakeup and its continuation. Fairness comes from the drain's budget and
    /// its continuation waiting for the next poll (see `Loop.drain`), not from priorities:
    /// with the drain below I/O, busy sockets starved the queue completely.
    init() throws(ChromaError) {
        guard libeventThreadsEnabled else {
            throw .system(operation: "Runtime.start", call: "evthread_use_pthreads", errno: errno)
        }
        guard let config = event_config_new() else {
            throw .system(operation: "Runtime.start", call: "event_config_new", errno: errno)
        }
        defer { event_config_free(config) }
        // Precise timers: the coarse monotonic clock would wake timers up to 4 ms late.
        event_config_set_flag(config, Int32(EVENT_BASE_FLAG_PRECISE_TIMER.rawValue))
        // Interest changes are batched per loop iteration: a connection that stops reading
        // and starts writing in one callback costs one epoll_ctl, not two, and a change
        // undone in the same iteration costs none. evhttp toggles read and write interest
        // around every request: this made /hello 15-20% faster (BENCHMARKS.md). libevent's
        // caveat: a descriptor watched while a dup() of it is closed can miss events;
        // `watch` documents it.
        event_config_set_flag(config, Int32(EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST.rawValue))
        guard let base = event_base_new_with_config(config) else {
            throw .system(operation: "Runtime.start", call: "event_base_new_with_config", errno: errno)
        }
        raw = base
    }

    /// The base has one priority, so everything runs at it, including the events libevent
    /// makes itself (listeners, bufferevents): no kind of work can starve another.
    enum Priority: Int32 {
        case io = 0
    }

    /// Runs the loop until `breakLoop()`; call on the owning thread only.
    func dispatch() -> Int32 {
        event_base_loop(raw, EVLOOP_NO_EXIT_ON_EMPTY)
    }

    /// Runs what is ready now (and pending finalizers) without waiting; owning thread only,
    /// outside `dispatch()`.
    func runPending() {
        _ = event_base_loop(raw, EVLOOP_NONBLOCK)
    }

    /// Makes `dispatch()` return after the current callback; owning thread only.
    func breakLoop() {
        event_base_loopbreak(raw)
    }

    /// Lends the raw `event_base` to `body`, for `HTTPEngine.swift`'s `evhttp_new` (an evhttp
    /// keeps the pointer: it must be freed on this loop before the base is). Any thread while
    /// the loop is open, like `makeListener`.
    func withRawBase<R>(_ body: (OpaquePointer) throws(ChromaError) -> R) throws(ChromaError) -> R {
        try body(raw)
    }

    /// Creates a persistent event on this base. Any thread (libevent locks the base).
    func makeEvent(fd: Int32, flags: Int16, priority: Priority = .io, handler: @escaping (Int16) -> Void)
        throws(ChromaError) -> PersistentEvent
    {
        let event = PersistentEvent(handler: handler)
        let context = Unmanaged.passUnretained(event).toOpaque()
        guard let ev = event_new(raw, fd, flags | chroma_ev_persist(), persistentEventCallback, context) else {
            throw .system(operation: "event_new", call: "event_new", errno: errno)
        }
        event_priority_set(ev, priority.rawValue)
        event.raw = ev
        return event
    }

    deinit {
        event_base_free(raw)
    }
}

/// The C entry point of every Chroma event. `nonisolated` code: a main-actor check here
/// would crash on loop threads.
private func persistentEventCallback(_ fd: Int32, _ what: Int16, _ context: UnsafeMutableRawPointer?) {
    let event = Unmanaged<PersistentEvent>.fromOpaque(context!).takeUnretainedValue()
    event.handler(what)
}

/// A libevent event created with `EV_PERSIST`: it stays registered until `free()`, so no
/// callback pays for `event_add`/`event_del` (libevent 2.1 writes a process-global on every
/// add and delete, which stops non-persistent events from scaling across threads).
///
/// Threading: `add` and `activate` may be called from any thread (libevent locks the base).
/// `remove` and `free` only on the owning loop's thread, or after that thread has exited:
/// deleting from another thread races the loop (libevent bugs #512, #1311, #1530).
@usableFromInline
final class PersistentEvent: @unchecked Sendable {
    // Safe to send: `raw` is written once before the event is shared; afterwards only
    // thread-safe libevent calls (`event_active`, `event_add`) run off the owning thread.
    fileprivate var raw: OpaquePointer?
    fileprivate let handler: (Int16) -> Void

    fileprivate init(handler: @escaping (Int16) -> Void) {
        self.handler = handler
    }

    /// Registers the event, with a timeout when `after` is given; re-adding replaces the timeout.
    func add(afterNanoseconds: UInt64? = nil) throws(ChromaError) {
        guard let raw else { throw .invalidState(operation: "event_add", reason: "the event was freed") }
        let rc: Int32
        if let ns = afterNanoseconds {
            var tv = timeval(tv_sec: Int(ns / 1_000_000_000), tv_usec: Int((ns % 1_000_000_000) / 1000))
            rc = event_add(raw, &tv)
        } else {
            rc = event_add(raw, nil)
        }
        if rc != 0 { throw .system(operation: "event_add", call: "event_add", errno: errno) }
    }

    /// Makes the event run once on its loop as soon as possible. Any thread.
    @usableFromInline func activate() {
        event_active(raw, 0, 0)
    }

    /// Unregisters the event but keeps it for a later `add`. Owning thread only.
    func remove() {
        if let raw { event_del(raw) }
    }

    /// Unregisters and frees the event. Owning thread only (or after it exited). Idempotent.
    func free() {
        if let raw {
            event_free(raw)
            self.raw = nil
        }
    }

    deinit {
        // Reached only once the owner dropped the event; the owner frees it on its thread
        // first, so this is a backstop for events whose loop never started.
        if let raw { event_free(raw) }
    }
}

// MARK: Sockets

extension EventBase {
    /// A bufferevent on `fd` (or, with -1, one that `connect` will give a socket). Loop
    /// thread only.
    func makeSocketBuffer(fd: Int32) throws(ChromaError) -> SocketBuffer {
        guard let bev = bufferevent_socket_new(raw, fd, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue)) else {
            throw .system(operation: "connection", call: "bufferevent_socket_new", errno: errno)
        }
        return SocketBuffer(raw: bev)
    }

    /// A listening socket on `address` with SO_REUSEPORT, so one per loop can share a port.
    /// Any thread (the base is locked); free it on the loop's thread.
    func makeListener(address: UnsafePointer<sockaddr>, length: socklen_t, backlog: Int32,
                      onAccept: @escaping (Int32) -> Void, onError: @escaping (SocketListener, Int32) -> Void) throws(ChromaError) -> SocketListener {
        let listener = SocketListener(onAccept: onAccept, onError: onError)
        let context = Unmanaged.passUnretained(listener).toOpaque()
        guard let raw = evconnlistener_new_bind(raw, listenerAcceptCallback, context, chroma_lev_options(), backlog, address, Int32(length)) else {
            throw .system(operation: "listen", call: "evconnlistener_new_bind", errno: errno)
        }
        evconnlistener_set_error_cb(raw, listenerErrorCallback)
        // Created disabled: `raw` is set before the first accept can read it, and enabling
        // takes the base's lock, which orders the two for the loop thread.
        listener.raw = raw
        evconnlistener_enable(raw)
        return listener
    }
}

/// A libevent bufferevent: a socket with input and output buffers. Everything on the
/// owning loop's thread: created, used and freed there (the callbacks come there too).
final class SocketBuffer {
    private var raw: OpaquePointer?
    /// Called with the readable data still in the input buffer; with `writeDrained` once the
    /// output buffer fell to the low watermark; with `event` for EOF, errors, timeouts and
    /// connection completion (`BEV_EVENT_*` bits).
    var onRead: () -> Void = {}
    var onWriteDrained: () -> Void = {}
    var onEvent: (SocketEvent) -> Void = { _ in }

    fileprivate init(raw: OpaquePointer) {
        self.raw = raw
        let context = Unmanaged.passUnretained(self).toOpaque()
        bufferevent_setcb(raw, socketReadCallback, socketWriteCallback, socketEventCallback, context)
    }

    var fd: Int32 { raw.map { bufferevent_getfd($0) } ?? -1 }

    func enable(read: Bool, write: Bool) {
        guard let raw else { return }
        let flags = (read ? chroma_ev_read() : 0) | (write ? chroma_ev_write() : 0)
        bufferevent_enable(raw, flags)
    }

    func disableReading() {
        if let raw { bufferevent_disable(raw, chroma_ev_read()) }
    }

    func enableReading() {
        if let raw { bufferevent_enable(raw, chroma_ev_read()) }
    }

    /// Read and write timeouts (nil: none). The read timeout fires when nothing arrives for
    /// that long while reading is enabled: an idle timeout.
    func setTimeouts(read: Duration?, write: Duration?) {
        guard let raw else { return }
        func timeval(_ d: Duration) -> Glibc.timeval {
            let (s, atto) = d.components
            return Glibc.timeval(tv_sec: Int(s), tv_usec: Int(atto / 1_000_000_000_000))
        }
        var r = read.map(timeval), w = write.map(timeval)
        withUnsafePointer(to: &r) { rp in
            withUnsafePointer(to: &w) { wp in
                let rptr = read == nil ? nil : UnsafeRawPointer(rp).assumingMemoryBound(to: Glibc.timeval.self)
                let wptr = write == nil ? nil : UnsafeRawPointer(wp).assumingMemoryBound(to: Glibc.timeval.self)
                _ = bufferevent_set_timeouts(raw, rptr, wptr)
            }
        }
    }

    /// Calls `onWriteDrained` when the output falls to `writeLow`. (No read watermark: with
    /// one, libevent 2.1.9+ re-runs the read callback at I/O priority for as long as the
    /// input stays above it, which starves everything below; `Connection` pauses reading
    /// itself instead.)
    func setWriteLowWatermark(_ writeLow: Int) {
        guard let raw else { return }
        bufferevent_setwatermark(raw, chroma_ev_write(), writeLow, 0)
    }

    var inputLength: Int { raw.map { evbuffer_get_length(bufferevent_get_input($0)) } ?? 0 }
    var outputLength: Int { raw.map { evbuffer_get_length(bufferevent_get_output($0)) } ?? 0 }

    /// Removes and returns one line (CRLF or LF ending, not included), or nil if no whole
    /// line is buffered yet. The line is copied once, from the buffer straight into the
    /// returned array (`evbuffer_readln` would malloc a C string to copy again).
    func readLine() -> [UInt8]? {
        guard let raw else { return nil }
        let input = bufferevent_get_input(raw)
        var eolLength = 0
        let end = evbuffer_search_eol(input, nil, &eolLength, EVBUFFER_EOL_CRLF)
        guard end.pos >= 0 else { return nil }
        let length = Int(end.pos)
        // (Capacity 0 would write the shared empty array's count: a race TSan reports.)
        let line = length == 0 ? [] : [UInt8](unsafeUninitializedCapacity: length) { buffer, count in
            count = max(0, Int(evbuffer_remove(input, buffer.baseAddress, length)))
        }
        evbuffer_drain(input, eolLength)
        return line
    }

    /// Removes and returns everything buffered.
    func readAll() -> [UInt8] {
        guard let raw else { return [] }
        let input = bufferevent_get_input(raw)
        let length = evbuffer_get_length(input)
        // Never ask for capacity 0: the stdlib then writes the shared empty array's count,
        // a benign race that ThreadSanitizer reports when two loops do it at once.
        guard length > 0 else { return [] }
        return [UInt8](unsafeUninitializedCapacity: length) { buffer, count in
            count = max(0, Int(evbuffer_remove(input, buffer.baseAddress, length)))
        }
    }

    /// Appends to the output buffer; libevent writes it when the socket is writable.
    func write(_ bytes: UnsafeRawBufferPointer) {
        guard let raw, bytes.count > 0 else { return }
        _ = bufferevent_write(raw, bytes.baseAddress, bytes.count)
    }

    /// Starts a non-blocking connect (for a buffer made with fd -1).
    func connect(_ address: UnsafePointer<sockaddr>, length: socklen_t) -> Bool {
        guard let raw else { return false }
        return bufferevent_socket_connect(raw, address, Int32(length)) == 0
    }

    /// Frees the bufferevent and closes the socket. Idempotent.
    func free() {
        if let raw {
            bufferevent_free(raw)
            self.raw = nil
        }
    }

    deinit { free() }
}

private func socketReadCallback(_ bev: OpaquePointer?, _ context: UnsafeMutableRawPointer?) {
    Unmanaged<SocketBuffer>.fromOpaque(context!).takeUnretainedValue().onRead()
}

private func socketWriteCallback(_ bev: OpaquePointer?, _ context: UnsafeMutableRawPointer?) {
    Unmanaged<SocketBuffer>.fromOpaque(context!).takeUnretainedValue().onWriteDrained()
}

private func socketEventCallback(_ bev: OpaquePointer?, _ what: Int16, _ context: UnsafeMutableRawPointer?) {
    let event = SocketEvent(endOfInput: what & chroma_bev_eof() != 0, error: what & chroma_bev_error() != 0,
                            timeout: what & chroma_bev_timeout() != 0, whileWriting: what & chroma_bev_writing() != 0,
                            connected: what & chroma_bev_connected() != 0, errno: errno)
    Unmanaged<SocketBuffer>.fromOpaque(context!).takeUnretainedValue().onEvent(event)
}

/// What a bufferevent reported (its `BEV_EVENT_*` bits), and errno at that moment.
struct SocketEvent {
    var endOfInput: Bool
    var error: Bool
    var timeout: Bool
    var whileWriting: Bool
    var connected: Bool
    var errno: Int32
}

/// A libevent listener (evconnlistener). Accepts come on the loop's thread.
final class SocketListener: @unchecked Sendable {
    // Safe to send: `raw` is set before the listener is enabled (see `makeListener`) and
    // afterwards used and freed only on the owning loop's thread; callers off that thread
    // only hold the object to hand it back there.
    fileprivate var raw: OpaquePointer?
    fileprivate let onAccept: (Int32) -> Void
    fileprivate let onError: (SocketListener, Int32) -> Void

    fileprivate init(onAccept: @escaping (Int32) -> Void, onError: @escaping (SocketListener, Int32) -> Void) {
        self.onAccept = onAccept
        self.onError = onError
    }

    /// The port the socket is bound to (the real one when asked for port 0).
    var port: UInt16 {
        guard let raw else { return 0 }
        return localPort(of: evconnlistener_get_fd(raw))
    }

    func enable() { if let raw { evconnlistener_enable(raw) } }
    func disable() { if let raw { evconnlistener_disable(raw) } }

    /// Frees the listener and closes its socket. On the loop's thread. Idempotent.
    func free() {
        if let raw {
            evconnlistener_free(raw)
            self.raw = nil
        }
    }
}

private func listenerAcceptCallback(_ listener: OpaquePointer?, _ fd: Int32, _ address: UnsafeMutablePointer<sockaddr>?,
                                    _ length: Int32, _ context: UnsafeMutableRawPointer?) {
    Unmanaged<SocketListener>.fromOpaque(context!).takeUnretainedValue().onAccept(fd)
}

private func listenerErrorCallback(_ listener: OpaquePointer?, _ context: UnsafeMutableRawPointer?) {
    let error = errno
    let listener = Unmanaged<SocketListener>.fromOpaque(context!).takeUnretainedValue()
    listener.onError(listener, error)
}
