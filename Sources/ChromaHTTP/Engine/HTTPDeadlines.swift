@_spi(Engine) import Chroma
import CLibevent
import Glibc

// The request and idle deadlines of a loop's connections, kept by a sweep rather than by
// evhttp (see `HTTPLoopServer.enable`), and the 408 and 413 written straight to the socket.

extension HTTPLoopServer {
    /// Deadlines, every sweep: a request not whole `requestTimeout` after its first byte
    /// gets 408 and a close; a connection waiting for a request with nothing sent for
    /// `idleTimeout`, or whose answer made no progress for that long (a client that does
    /// not read), is closed quietly. Handlers have no deadline here.
    func sweep() {
        guard !closed else { return }
        accessLines?.flush()
        let now = coarseMonotonicNanoseconds()
        let requestLimit = limits.requestTimeout.chromaNanoseconds ?? .max
        let idleLimit = limits.idleTimeout.chromaNanoseconds ?? .max
        var late: [HTTPConnectionState] = []
        var idle: [HTTPConnectionState] = []
        for connection in connections.all {
            switch connection.phase {
            case .waiting:
                if connection.requestStarted || inputLength(connection.raw) > 0 {
                    if now &- connection.requestStartedAt >= requestLimit { late.append(connection) }
                } else if now &- connection.requestStartedAt >= idleLimit {
                    idle.append(connection)
                }
            case .writing:
                let length = outputLength(connection.raw)
                // Nothing waiting to be written is no fault of the client's: a stream
                // between two pieces (an event stream's quiet minute, say).
                if length != connection.lastOutputLength || length == 0 {
                    connection.lastOutputLength = length
                    connection.lastProgressAt = now
                } else if now &- connection.lastProgressAt >= idleLimit {
                    idle.append(connection)
                }
            case .handling:
                break
            }
        }
        for connection in late { timeOut(connection) }
        for connection in idle { evhttp_connection_free(connection.raw) }
    }

    private func outputLength(_ evcon: OpaquePointer) -> Int {
        guard let bev = evhttp_connection_get_bufferevent(evcon) else { return 0 }
        return evbuffer_get_length(bufferevent_get_output(bev))
    }

    private func inputLength(_ evcon: OpaquePointer) -> Int {
        guard let bev = evhttp_connection_get_bufferevent(evcon) else { return 0 }
        return evbuffer_get_length(bufferevent_get_input(bev))
    }

    private func timeOut(_ connection: HTTPConnectionState) {
        counters.requestTimeouts.add(1, ordering: .relaxed)
        counters.noteRejection(status: 408)
        answerAndClose(connection, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    }

    /// The most input a connection may buffer while its answer is written: a whole next
    /// request (head and body) and some slack.
    var inputLimitWhileWriting: Int {
        let (sum, overflow) = limits.maxHeaderBytes.addingReportingOverflow(limits.maxBodyBytes)
        return overflow ? Int.max : sum &+ 64 * 1024
    }

    /// A client that kept sending while not reading its answer (loop thread, from the
    /// connection's read anchor, outside evhttp's callbacks).
    func closeFlooding(_ connection: HTTPConnectionState) {
        guard connections[UnsafeMutableRawPointer(connection.raw)] === connection else { return }
        counters.noteRejection(status: 0)
        evhttp_connection_free(connection.raw)
    }

    /// Closes `connection` now, whatever it is doing (an aborted stream), if still open.
    func closeConnection(_ connection: HTTPConnectionState) {
        guard !closed, connections[UnsafeMutableRawPointer(connection.raw)] === connection else { return }
        evhttp_connection_free(connection.raw)
    }

    /// Queues the 413 for a head that outgrew the limit before it ended.
    func answerHeadTooLarge(_ connection: HTTPConnectionState) {
        try? runtime.execute(on: loopColor) { [self] in
            guard !closed, connections[UnsafeMutableRawPointer(connection.raw)] === connection,
                  connection.phase == .waiting, connection.head.isTooLarge else { return }
            counters.noteRejection(status: 413)
            answerAndClose(connection, "HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        }
    }

    /// Writes `answer` straight to the socket and frees the connection. Only for a
    /// connection in `.waiting`: nothing else is being written then, so the short answer
    /// fits the empty socket buffer. Under TLS it goes through the session, which then has
    /// no write of its own pending.
    private func answerAndClose(_ connection: HTTPConnectionState, _ answer: StaticString) {
        if let bev = evhttp_connection_get_bufferevent(connection.raw) {
            let fd = bufferevent_getfd(bev)
            if isTLS {
                HTTPSConfiguration.writeNow(bev, UnsafeRawBufferPointer(start: answer.utf8Start, count: answer.utf8CodeUnitCount))
            } else if fd >= 0 {
                _ = Glibc.send(fd, answer.utf8Start, answer.utf8CodeUnitCount, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
        }
        evhttp_connection_free(connection.raw)  // calls `connectionClosed`, which drains
    }
}
