import CLibevent
import Glibc

// The file that wraps libevent's base and its events; `OpaquePointer`s stay private to it.
// `withRawBase` lends the base, for the length of one call, to the files that wrap the
// handles made from it: `Net/SocketBuffer.swift`, `Net/SocketListener.swift` and the HTTP
// engine.

/// libevent must be told to use pthreads locks once, before the first `event_base`.
private let libeventThreadsEnabled: Bool = {
    evthread_use_pthreads() == 0
}()

/// One `event_base`, created and freed on its loop's thread.
final class EventBase {
    private let raw: OpaquePointer

    /// Creates the base on the calling thread, which must be the loop's own thread. The base
    /// has libevent's default single priority, which every event shares (why: `Loop.drain`).
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
        // undone in the same iteration costs none (evhttp toggles read and write interest
        // around every request). libevent's caveat: a descriptor watched while a dup() of it is closed can miss events;
        // `watch` documents it.
        event_config_set_flag(config, Int32(EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST.rawValue))
        guard let base = event_base_new_with_config(config) else {
            throw .system(operation: "Runtime.start", call: "event_base_new_with_config", errno: errno)
        }
        raw = base
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

    /// Lends the raw `event_base` to `body`, to create a handle on it (a bufferevent, a
    /// listener, an evhttp; such a handle keeps the pointer, so it must be freed on this loop
    /// before the base is). Any thread while the loop is open.
    func withRawBase<R>(_ body: (OpaquePointer) throws(ChromaError) -> R) throws(ChromaError) -> R {
        try body(raw)
    }

    /// Creates a persistent event on this base. Any thread (libevent locks the base).
    func makeEvent(fd: Int32, flags: Int16, handler: @escaping (Int16) -> Void)
        throws(ChromaError) -> PersistentEvent
    {
        let event = PersistentEvent(handler: handler)
        let context = Unmanaged.passUnretained(event).toOpaque()
        guard let ev = event_new(raw, fd, flags | chroma_ev_persist(), persistentEventCallback, context) else {
            throw .system(operation: "event_new", call: "event_new", errno: errno)
        }
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
            var tv = timeval(nanoseconds: ns)
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
