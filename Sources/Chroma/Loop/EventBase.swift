import CLibevent
import Glibc

// The only file that touches libevent handles. `OpaquePointer`s stay private to it.

/// libevent must be told to use pthreads locks once, before the first `event_base`.
private let libeventThreadsEnabled: Bool = {
    evthread_use_pthreads() == 0
}()

/// One `event_base`, created and freed on its loop's thread.
final class EventBase {
    private let raw: OpaquePointer

    /// Creates the base on the calling thread, which must be the loop's own thread.
    ///
    /// Two priorities: I/O, timers and signals at `.io` (0), the run queue's wakeup at
    /// `.queue` (1). libevent runs every active `.io` event before a `.queue` one, and after
    /// ONE `.queue` callback it polls for I/O again (`max_dispatch_interval` enforced from
    /// priority 1 up). The drain re-activates itself when its budget runs out; without this
    /// libevent would keep running it in the same pass (a test measured 32 drains, 131k
    /// callbacks, before a ready fd was served with the limit at 32 for all priorities).
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
        event_config_set_max_dispatch_interval(config, nil, 1, Priority.queue.rawValue)
        guard let base = event_base_new_with_config(config) else {
            throw .system(operation: "Runtime.start", call: "event_base_new_with_config", errno: errno)
        }
        guard event_base_priority_init(base, 2) == 0 else {
            event_base_free(base)
            throw .system(operation: "Runtime.start", call: "event_base_priority_init", errno: errno)
        }
        raw = base
    }

    /// Event priorities: lower runs first.
    enum Priority: Int32 {
        case io = 0
        case queue = 1
    }

    /// Runs the loop until `breakLoop()`; call on the owning thread only.
    func dispatch() -> Int32 {
        event_base_loop(raw, EVLOOP_NO_EXIT_ON_EMPTY)
    }

    /// Makes `dispatch()` return after the current callback; owning thread only.
    func breakLoop() {
        event_base_loopbreak(raw)
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
