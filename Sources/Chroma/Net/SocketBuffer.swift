import CLibevent
import Glibc

// The file that wraps libevent's bufferevents; their `OpaquePointer`s stay private to it.

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

    /// A bufferevent on `fd` (or, with -1, one that `connect` will give a socket), on
    /// `base`. Loop thread only.
    convenience init(base: EventBase, fd: Int32) throws(ChromaError) {
        let bev = try base.withRawBase { raw throws(ChromaError) in
            guard let bev = bufferevent_socket_new(raw, fd, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue)) else {
                throw .system(operation: "connection", call: "bufferevent_socket_new", errno: errno)
            }
            return bev
        }
        self.init(raw: bev)
        connected = fd >= 0
    }

    private init(raw: OpaquePointer) {
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
        var r = read.map(\.timeval), w = write.map(\.timeval)
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

    /// Whether the unread input, which holds no line end, is already longer than a line of
    /// at most `maxLength` bytes: `maxLength` bytes and a CR may still be a line, the CR
    /// starting its CRLF, so the verdict never depends on where the reads cut the input.
    func unendedLineExceeds(_ maxLength: Int) -> Bool {
        guard let raw else { return false }
        let input = bufferevent_get_input(raw)
        let length = evbuffer_get_length(input)
        if length <= maxLength { return false }
        if length > maxLength + 1 { return true }
        var last = evbuffer_ptr()
        var byte: UInt8 = 0
        guard evbuffer_ptr_set(input, &last, length - 1, EVBUFFER_PTR_SET) == 0,
              evbuffer_copyout_from(input, &last, &byte, 1) == 1 else { return true }
        return byte != 0x0D
    }

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
        let line = length == 0 ? [] : ByteArray.make(count: length, BufferedBytes(input: input))
        evbuffer_drain(input, eolLength)
        return line
    }

    /// Removes and returns everything buffered.
    func readAll() -> [UInt8] {
        guard let raw else { return [] }
        let input = bufferevent_get_input(raw)
        let length = evbuffer_get_length(input)
        guard length > 0 else { return [] }
        return ByteArray.make(count: length, BufferedBytes(input: input))
    }

    /// Writes `bytes`: straight to the socket when nothing is queued before them (one
    /// `send`, as Redis and SwiftNIO write, with no wait for the next readiness report and
    /// no write event to arm and disarm), and what the kernel does not take, or everything
    /// while output is queued, to the output buffer for libevent to write once the socket is
    /// writable. An error on the direct send leaves the bytes to the buffer, whose write
    /// then reports it as usual.
    func write(_ bytes: UnsafeRawBufferPointer) {
        guard let raw, bytes.count > 0 else { return }
        var sent = 0
        if connected, evbuffer_get_length(bufferevent_get_output(raw)) == 0 {
            let n = Glibc.send(bufferevent_getfd(raw), bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            if n > 0 { sent = n }
            if sent == bytes.count { return }
        }
        _ = bufferevent_write(raw, bytes.baseAddress! + sent, bytes.count - sent)
    }

    /// True once the socket is connected: from the start for an accepted socket, after the
    /// connect completes for one `connect` started. Before, writes only queue.
    private var connected = false

    fileprivate func markConnected() { connected = true }

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
    let buffer = Unmanaged<SocketBuffer>.fromOpaque(context!).takeUnretainedValue()
    if event.connected { buffer.markConnected() }
    buffer.onEvent(event)
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

/// Bytes removed from the front of a bufferevent's input, into a new array.
private struct BufferedBytes: ByteArraySource {
    let input: OpaquePointer?

    func write(into start: UnsafeMutableRawPointer, count: Int) -> Int {
        max(0, Int(evbuffer_remove(input, start, count)))
    }
}
