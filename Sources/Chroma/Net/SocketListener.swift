import CLibevent
import Glibc

// The file that wraps libevent's listeners (evconnlistener); their `OpaquePointer`s stay
// private to it.

/// A libevent listener (evconnlistener). Accepts come on the loop's thread.
final class SocketListener: @unchecked Sendable {
    // Safe to send: `raw` is set before the listener is enabled (see `make`) and
    // afterwards used and freed only on the owning loop's thread; callers off that thread
    // only hold the object to hand it back there.
    fileprivate var raw: OpaquePointer?
    fileprivate let onAccept: (Int32) -> Void
    fileprivate let onError: (SocketListener, Int32) -> Void

    private init(onAccept: @escaping (Int32) -> Void, onError: @escaping (SocketListener, Int32) -> Void) {
        self.onAccept = onAccept
        self.onError = onError
    }

    /// A listening socket on `address` with SO_REUSEPORT, so one per loop can share a port.
    /// Any thread (the base is locked); free it on the loop's thread.
    static func make(on base: EventBase, address: UnsafePointer<sockaddr>, length: socklen_t, backlog: Int32,
                     onAccept: @escaping (Int32) -> Void, onError: @escaping (SocketListener, Int32) -> Void) throws(ChromaError) -> SocketListener {
        let listener = SocketListener(onAccept: onAccept, onError: onError)
        let context = Unmanaged.passUnretained(listener).toOpaque()
        let raw = try base.withRawBase { base throws(ChromaError) in
            guard let raw = evconnlistener_new_bind(base, listenerAcceptCallback, context, chroma_lev_options(), backlog, address, Int32(length)) else {
                throw .system(operation: "listen", call: "evconnlistener_new_bind", errno: errno)
            }
            return raw
        }
        evconnlistener_set_error_cb(raw, listenerErrorCallback)
        // Created disabled: `raw` is set before the first accept can read it, and enabling
        // takes the base's lock, which orders the two for the loop thread.
        listener.raw = raw
        evconnlistener_enable(raw)
        return listener
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
