@_spi(Engine) import Chroma
import CLibevent
import Glibc

// evhttp's and libevent's callbacks into the engine, and the registry the accept-error
// callback finds its server in.

extension HTTPLoopServer {
    /// Accept failed: counted, and out of descriptors the socket pauses (`AcceptBackoff`).
    func acceptFailed(_ error: Int32) {
        counters.acceptFailures.add(1, ordering: .relaxed)
        guard let listener else { return }
        AcceptBackoff.acceptFailed(error, runtime: runtime, loopColor: loopColor, pause: { evconnlistener_disable(listener) }) { [self] in
            if !closed, let listener = self.listener { evconnlistener_enable(listener) }
        }
    }

    /// Servers by their evhttp, for the accept-error callback (whose argument is evhttp's).
    static let registry = HTTPServerRegistry()
}

/// Loop servers by their evhttp's address.
final class HTTPServerRegistry: @unchecked Sendable {
    // Safe to share: `servers` is only touched with `lock` held.
    private let lock = EngineLock()
    private var servers: [UInt: HTTPLoopServer] = [:]

    func insert(_ server: HTTPLoopServer, for http: OpaquePointer) {
        lock.withLock { servers[UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(http)))] = server }
    }

    func remove(_ http: OpaquePointer) {
        lock.withLock { _ = servers.removeValue(forKey: UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(http)))) }
    }

    func server(for http: OpaquePointer) -> HTTPLoopServer? {
        lock.withLock { servers[UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(http)))] }
    }
}

// MARK: C entry points (loop thread)

func httpRequestCallback(_ request: OpaquePointer?, _ context: UnsafeMutableRawPointer?) {
    Unmanaged<HTTPLoopServer>.fromOpaque(context!).takeUnretainedValue().handle(request!)
}

func httpNewConnectionCallback(_ base: OpaquePointer?, _ context: UnsafeMutableRawPointer?) -> OpaquePointer? {
    Unmanaged<HTTPLoopServer>.fromOpaque(context!).takeUnretainedValue().newcomer(base: base!)
}

func httpConnectionClosedCallback(_ evcon: OpaquePointer?, _ context: UnsafeMutableRawPointer?) {
    Unmanaged<HTTPLoopServer>.fromOpaque(context!).takeUnretainedValue().connectionClosed(evcon!)
}

func httpRequestCompleteCallback(_ request: OpaquePointer?, _ context: UnsafeMutableRawPointer?) {
    Unmanaged<HTTPConnectionState>.fromOpaque(context!).takeUnretainedValue().answerWritten()
}

func httpInputCallback(_ buffer: OpaquePointer?, _ info: UnsafePointer<evbuffer_cb_info>?, _ context: UnsafeMutableRawPointer?) {
    guard let info, info.pointee.n_added > 0 else { return }
    Unmanaged<HTTPConnectionState>.fromOpaque(context!).takeUnretainedValue().bytesArrived(buffer!, added: info.pointee.n_added)
}

func httpReadAnchorCallback(_ fd: Int32, _ what: Int16, _ context: UnsafeMutableRawPointer?) {
    Unmanaged<HTTPConnectionState>.fromOpaque(context!).takeUnretainedValue().anchorFired()
}

func httpAcceptErrorCallback(_ listener: OpaquePointer?, _ context: UnsafeMutableRawPointer?) {
    let error = errno
    guard let context else { return }
    HTTPLoopServer.registry.server(for: OpaquePointer(context))?.acceptFailed(error)
}
