import CChroma
import Glibc
import Synchronization
import SystemPackage

/// Why a connection closed; passed once to the `onClose` handler.
public enum CloseReason: Sendable, Equatable {
    /// The peer closed its side (end of input), and everything queued was written.
    case peerClosed
    /// `close()` was called, and everything queued was written.
    case closedLocally
    /// Nothing arrived within the read timeout (the idle timeout).
    case readTimeout
    /// Queued output could not be written within the write timeout.
    case writeTimeout
    /// A line grew past the `onLines` limit without an end of line.
    case lineTooLong
    /// The socket failed (a reset peer gives `ECONNRESET` or `EPIPE`).
    case error(Errno)
    /// The runtime shut down.
    case shutdown
}

/// A TCP connection on libevent's bufferevents: created, used and freed on the loop that
/// owns its color. Every handler runs on the connection's color, so one connection's
/// handlers never overlap, and different connections (different colors) run in parallel.
///
/// ```swift
/// try runtime.listen(port: 7000) { connection in
///     connection.setTimeouts(read: .seconds(30))          // idle timeout
///     connection.onLines { line in connection.write(line + [UInt8(ascii: "\n")]) }
/// }
/// ```
///
/// Threading: every method may be called from any thread; from anywhere but the
/// connection's color it is queued to that color (so calls keep their order). Set the
/// handlers in the accept handler (which runs on the color) so no input is missed; input
/// that arrives before a reader is set waits in the buffer.
///
/// Backpressure: `write` queues bytes in the output buffer and never blocks. When the
/// buffer holds `highWatermark` bytes or more, `isWritable` is false; `onWritable` runs once
/// it has drained to `lowWatermark`. Reading stops while unread input exceeds
/// `highWatermark` (a slow handler is not flooded).
public final class Connection: @unchecked Sendable {
    // Safe to share: every mutable field is read and written only on the connection's color
    // (its owning loop's thread, running as the color); public methods called from
    // elsewhere are queued to the color first.
    /// The connection's color: its handlers run as this color.
    public let color: Color
    /// The runtime the connection lives on.
    public let runtime: Runtime
    /// The peer's address, "host:port".
    public let peer: String
    /// The loop the socket lives on, which pins the color (see `Placement.pin`).
    let loop: Loop
    private var socket: SocketBuffer?
    private var reader: Reader = .none
    private var writableHandler: (@Sendable () -> Void)?
    private var closeHandler: (@Sendable (CloseReason) -> Void)?
    private var closing: CloseReason?
    private var shutdownWriteRequested = false
    private var closed = false
    /// Output bytes above which `isWritable` is false (default 1 MiB).
    public private(set) var highWatermark = 1 << 20
    /// Output bytes at or below which `onWritable` runs again (default 64 KiB).
    public private(set) var lowWatermark = 64 << 10

    private enum Reader {
        case none
        case bytes(@Sendable ([UInt8]) -> Void)
        case lines(maxLength: Int, @Sendable ([UInt8]) -> Void)
        /// An async sequence pulls: input waits in the buffer (and the socket stops being
        /// read past the high watermark) until the consumer asks for more.
        case pull(lines: Bool, maxLength: Int, waiter: (@Sendable ([UInt8]?) -> Void)?)
    }
    /// The peer closed its side: buffered input is still delivered; then callback readers
    /// close the connection, async readers end their sequence (the connection stays open
    /// for writing until `close()`).
    private(set) var inputEnded = false
    /// Reading is paused because unread input reached `readLimit`.
    private var readPaused = false
    /// `onWritable` is due: the output went above the high watermark since it last ran.
    private var writeBlocked = false
    /// `send` callers waiting for the output to drain, with their cancellation tokens.
    private var drainWaiters: [(token: CancelToken, done: @Sendable (Bool) -> Void)] = []

    /// Loop thread: wraps an accepted or connected socket.
    init(runtime: Runtime, loop: Loop, color: Color, socket: SocketBuffer, peer: String) {
        self.runtime = runtime
        self.loop = loop
        self.color = color
        self.socket = socket
        self.peer = peer
        socket.onRead = { [unowned self] in Callback.run(as: color) { self.readAvailable() } }
        socket.onWriteDrained = { [unowned self] in Callback.run(as: color) { self.outputDrained() } }
        socket.onEvent = { [unowned self] what in Callback.run(as: color) { self.socketEvent(what) } }
        socket.setWriteLowWatermark(lowWatermark)
    }

    /// Loop thread: starts reading and writing.
    func start() {
        socket?.enable(read: true, write: true)
    }

    // MARK: Handlers

    /// Delivers input as it arrives, in chunks of whatever size the socket gave.
    public func onBytes(_ handler: @escaping @Sendable ([UInt8]) -> Void) {
        onColor { [self] in
            guard !closed else { return }  // kept, it would hold the connection forever
            reader = .bytes(handler)
            readAvailable()
        }
    }

    /// Delivers input one line at a time (ending in LF or CRLF, which is removed). A partial
    /// line waits for the rest. A line longer than `maxLength` closes the connection with
    /// `.lineTooLong`; input that ends without a final newline is delivered as a last line
    /// (held to the same limit). Where reads happen to cut the input never changes the lines.
    public func onLines(maxLength: Int = 64 << 10, _ handler: @escaping @Sendable ([UInt8]) -> Void) {
        onColor { [self] in
            guard !closed else { return }
            reader = .lines(maxLength: maxLength, handler)
            readAvailable()
        }
    }

    /// Runs when the output buffer drains to `lowWatermark` after `isWritable` went false.
    public func onWritable(_ handler: @escaping @Sendable () -> Void) {
        onColor { [self] in
            guard !closed else { return }
            writableHandler = handler
        }
    }

    /// Runs once when the connection closes, with the reason.
    public func onClose(_ handler: @escaping @Sendable (CloseReason) -> Void) {
        onColor { [self] in
            if closed {
                handler(closing ?? .closedLocally)
            } else {
                closeHandler = handler
            }
        }
    }

    // MARK: Settings

    /// Read (idle) and write timeouts; nil turns one off. The read timeout closes a
    /// connection that sends nothing for that long: a client that sends half a line and
    /// stalls cannot hold its connection open (CS:APP 12.2.2's attack on event-driven
    /// servers).
    public func setTimeouts(read: Duration? = nil, write: Duration? = nil) {
        onColor { [self] in socket?.setTimeouts(read: read, write: write) }
    }

    /// Output watermarks (see the type's documentation). `low` must not exceed `high`.
    public func setWatermarks(low: Int, high: Int) {
        precondition(low >= 0 && low <= high && high > 0, "watermarks need 0 <= low <= high, high > 0")
        onColor { [self] in
            lowWatermark = low
            highWatermark = high
            if closing == nil { socket?.setWriteLowWatermark(low) }
            updateReading()
        }
    }

    /// False while the output buffer holds `highWatermark` bytes or more. Read it on the
    /// connection's color only (in its handlers): elsewhere it would race the loop.
    public var isWritable: Bool {
        preconditionOnColor("isWritable")
        return (socket?.outputLength ?? 0) < highWatermark
    }

    /// Bytes waiting in the output buffer. On the connection's color only.
    public var pendingOutput: Int {
        preconditionOnColor("pendingOutput")
        return socket?.outputLength ?? 0
    }

    private func preconditionOnColor(_ what: String) {
        precondition(isOnColor, "Connection.\(what) is read on the connection's color (\(color)), in its handlers")
    }

    private var isOnColor: Bool { loop.isCurrent && Color.currentRawValue == color.rawValue }

    // MARK: Writing and closing

    /// Queues `bytes` for the peer. Never blocks; see `isWritable` for backpressure.
    /// Writes after `close()` or `shutdownWrite()` are dropped.
    public func write(_ bytes: [UInt8]) {
        // On the color (the usual case: a handler replying), write directly: building the
        // escaping closure for `onColor` would allocate on every write.
        if isOnColor {
            writeNow(bytes)
        } else {
            onColor { [self] in writeNow(bytes) }
        }
    }

    private func writeNow(_ bytes: [UInt8]) {
        guard closing == nil, !shutdownWriteRequested, let socket else { return }
        bytes.withUnsafeBytes { socket.write($0) }
        if socket.outputLength >= highWatermark { writeBlocked = true }
    }

    /// Queues `text` as UTF-8.
    public func write(_ text: String) {
        write(Array(text.utf8))
    }

    /// Half-close: once queued output is written, sends FIN (`shutdown(SHUT_WR)`); the peer
    /// can still send, and reading goes on.
    public func shutdownWrite() {
        onColor { [self] in
            guard closing == nil, !shutdownWriteRequested, let socket else { return }
            shutdownWriteRequested = true
            if socket.outputLength == 0 { _ = Glibc.shutdown(socket.fd, Int32(SHUT_WR)) }
        }
    }

    /// Graceful close: stops reading, writes what is queued, then closes and reports
    /// `.closedLocally`.
    public func close() {
        onColor { [self] in beginClose(.closedLocally) }
    }

    // MARK: Internals (on the color)

    /// Runs `body` on the connection's color (now, if already there). If it cannot be
    /// queued (the runtime is stopping), runs `refused` instead, on the calling thread.
    fileprivate func onColor(_ body: @escaping @Sendable () -> Void, refused: () -> Void = {}) {
        if isOnColor {
            body()
        } else {
            do {
                try runtime.execute(on: color, body)
            } catch {
                refused()
            }
        }
    }

    /// The unread input at which reading pauses: the high watermark, and always more than
    /// a line may hold with its CRLF (else a line of exactly `maxLength` bytes would wait
    /// for its LF with reading paused).
    private var readLimit: Int {
        if case .lines(let maxLength, _) = reader { return max(highWatermark, maxLength.addingReportingOverflow(2).overflow ? .max : maxLength + 2) }
        if case .pull(true, let maxLength, _) = reader { return max(highWatermark, maxLength.addingReportingOverflow(2).overflow ? .max : maxLength + 2) }
        return highWatermark
    }

    /// Pauses reading while unread input is at the limit, resumes below it.
    private func updateReading() {
        guard let socket, closing == nil, !inputEnded else { return }
        let full = socket.inputLength >= readLimit
        if full && !readPaused {
            readPaused = true
            socket.disableReading()
        } else if !full && readPaused {
            readPaused = false
            socket.enableReading()
        }
    }

    private func readAvailable() {
        consumeInput()
        updateReading()
        // Input ended before a callback reader took the rest: deliver it, then close.
        if inputEnded, closing == nil, let socket {
            switch reader {
            case .lines(let maxLength, let handler):
                // The last line, unended: held to the same limit as the others.
                if socket.inputLength > maxLength { return beginClose(.lineTooLong, flush: false) }
                let rest = socket.readAll()
                if !rest.isEmpty { handler(rest) }
                beginClose(closing ?? .peerClosed)
            case .bytes:
                beginClose(closing ?? .peerClosed)
            case .none, .pull:
                break
            }
        }
    }

    private func consumeInput() {
        guard closing == nil, let socket else { return }
        switch reader {
        case .none:
            return
        case .bytes(let handler):
            let bytes = socket.readAll()
            if !bytes.isEmpty { handler(bytes) }
        case .lines(let maxLength, let handler):
            while closing == nil, let line = socket.readLine() {
                if line.count > maxLength { return beginClose(.lineTooLong, flush: false) }
                handler(line)
            }
            if closing == nil && socket.unendedLineExceeds(maxLength) { beginClose(.lineTooLong, flush: false) }
        case .pull(let lines, let maxLength, let waiter):
            guard let waiter, let item = takeItem(lines: lines, maxLength: maxLength) else { return }
            reader = .pull(lines: lines, maxLength: maxLength, waiter: nil)
            waiter(item)
        }
    }

    /// For a pull reader: the next line or chunk buffered, or nil (too long a line closes).
    private func takeItem(lines: Bool, maxLength: Int) -> [UInt8]? {
        guard let socket else { return nil }
        defer { updateReading() }
        if !lines {
            let bytes = socket.readAll()
            return bytes.isEmpty ? nil : bytes
        }
        if let line = socket.readLine() {
            if line.count > maxLength { beginClose(.lineTooLong, flush: false); return nil }
            return line
        }
        if socket.unendedLineExceeds(maxLength) { beginClose(.lineTooLong, flush: false) }
        return nil
    }

    /// On the color: hands the next line (or chunk) to `deliver`, at once if one is
    /// buffered, else when it arrives; nil once the connection is closed and drained.
    func next(lines: Bool, maxLength: Int, _ deliver: @escaping @Sendable ([UInt8]?) -> Void) {
        if case .pull(_, _, .some) = reader {
            preconditionFailure("two iterators are reading the connection to \(peer) at once")
        }
        if let item = takeItem(lines: lines, maxLength: maxLength) {
            reader = .pull(lines: lines, maxLength: maxLength, waiter: nil)
            return deliver(item)
        }
        if closed || closing != nil || inputEnded {
            // Input that ended without a final newline is the last line.
            if lines, let socket, socket.inputLength > 0 {
                if socket.inputLength > maxLength {
                    beginClose(.lineTooLong, flush: false)
                    return deliver(nil)
                }
                return deliver(socket.readAll())
            }
            return deliver(nil)
        }
        reader = .pull(lines: lines, maxLength: maxLength, waiter: deliver)
    }

    private func outputDrained() {
        guard let socket else { return }
        if let reason = closing {
            if socket.outputLength == 0 { finishClose(reason) }
            return
        }
        if shutdownWriteRequested && socket.outputLength == 0 { _ = Glibc.shutdown(socket.fd, Int32(SHUT_WR)) }
        if socket.outputLength <= lowWatermark {
            let waiters = drainWaiters
            drainWaiters.removeAll()
            for waiter in waiters { waiter.done(true) }
            if writeBlocked {
                writeBlocked = false
                writableHandler?()
            }
        }
    }

    private func socketEvent(_ event: SocketEvent) {
        guard let socket else { return }
        if event.endOfInput {
            // Input ended. Buffered input is still delivered: callback readers get it now
            // and the connection closes once the output is written; async readers (and a
            // reader not set yet) find it in the buffer, and the sequence ends after it.
            inputEnded = true
            socket.disableReading()
            switch reader {
            case .pull(let lines, let maxLength, let waiter?):
                reader = .pull(lines: lines, maxLength: maxLength, waiter: nil)
                next(lines: lines, maxLength: maxLength, waiter)
            case .lines, .bytes:
                readAvailable()
            case .none, .pull:
                break
            }
        } else if event.timeout {
            beginClose(event.whileWriting ? .writeTimeout : .readTimeout, flush: false)
        } else if event.error {
            beginClose(.error(Errno(rawValue: event.errno == 0 ? ECONNRESET : event.errno)), flush: false)
        }
    }

    /// Stops reading; closes now, or once the output is written when `flush`.
    private func beginClose(_ reason: CloseReason, flush: Bool = true) {
        guard !closed, let socket else { return }
        // A failure while flushing replaces a clean reason: "closed" promised the bytes out.
        switch reason {
        case .error, .writeTimeout, .readTimeout, .lineTooLong, .shutdown: closing = reason
        default: if closing == nil { closing = reason }
        }
        socket.disableReading()
        if !flush || socket.outputLength == 0 {
            finishClose(closing!)
        } else {
            socket.setWriteLowWatermark(0)
        }
    }

    private func finishClose(_ reason: CloseReason) {
        guard !closed else { return }
        closed = true
        closing = reason
        socket?.free()
        socket = nil
        loop.sockets.unregister(self)
        if case .pull(_, _, let waiter?) = reader { waiter(nil) }
        reader = .none
        writableHandler = nil
        let waiters = drainWaiters
        drainWaiters.removeAll()
        for waiter in waiters { waiter.done(false) }
        let handler = closeHandler
        closeHandler = nil
        handler?(reason)
    }
}

// MARK: Async

extension Connection {
    /// The connection's input as an async sequence of lines (without their LF or CRLF),
    /// ending when the connection closes or the peer closes its side (then the connection
    /// stays open for writing: call `close()` when done). Input is taken from the buffer only as the
    /// consumer asks, so a slow consumer slows the sender (the socket is not read past the
    /// high watermark). A line longer than `maxLength` closes the connection. One iterator
    /// at a time; don't combine with `onLines`/`onBytes`.
    public func lines(maxLength: Int = 64 << 10) -> Input { Input(connection: self, lines: true, maxLength: maxLength) }

    /// The connection's input as an async sequence of byte chunks, as they arrive.
    public var bytes: Input { Input(connection: self, lines: false, maxLength: .max) }

    /// An async sequence over a connection's input (see `lines(maxLength:)`, `bytes`).
    public struct Input: AsyncSequence, Sendable {
        /// A line (without its end) or a chunk of bytes.
        public typealias Element = [UInt8]
        let connection: Connection
        let lines: Bool
        let maxLength: Int

        /// One iterator per sequence at a time: elements are consumed as they are read.
        public func makeAsyncIterator() -> Iterator { Iterator(input: self) }

        /// Reads the connection's input, one element per `next()`.
        public struct Iterator: AsyncIteratorProtocol {
            let input: Input
            /// The next line or chunk; nil at the end. An element already buffered is
            /// returned without suspending when the caller runs on the connection's color.
            /// Cancelling the task ends the sequence (nil); unread input stays buffered.
            public mutating func next() async -> [UInt8]? {
                let input = self.input
                let connection = input.connection
                let token = CancelToken()
                return await withTaskCancellationHandler {
                    await withCompletion { done in
                        connection.onColor({
                            if token.isCancelled { return done(nil) }
                            connection.next(lines: input.lines, maxLength: input.maxLength, done)
                        }, refused: { done(nil) })
                    }
                } onCancel: {
                    // The flag covers a cancellation that overtakes the request; the queued
                    // call ends a request already waiting.
                    token.cancel()
                    connection.onColor({ connection.cancelPendingNext() })
                }
            }
        }
    }

    /// Queues `bytes` and returns once the output buffer is below the high watermark: the
    /// async write that honors backpressure. Throws `ConnectionClosed` if the connection
    /// closed before the bytes could be queued or drained, and `CancellationError` if the
    /// task is cancelled while waiting (the bytes stay queued).
    public func send(_ bytes: [UInt8]) async throws {
        let token = CancelToken()
        let accepted: Bool = await withTaskCancellationHandler {
            await withCompletion { done in
                onColor({ [self] in
                    guard closing == nil, !shutdownWriteRequested, let socket else { return done(false) }
                    bytes.withUnsafeBytes { socket.write($0) }
                    if socket.outputLength < highWatermark || token.isCancelled { return done(true) }
                    writeBlocked = true
                    drainWaiters.append((token, done))
                }, refused: { done(false) })
            }
        } onCancel: {
            token.cancel()
            onColor({ [self] in cancelDrainWaiter(token) })
        }
        if !accepted { throw ConnectionClosed(peer: peer) }
        if token.isCancelled { throw CancellationError() }
    }

    /// On the color: ends a waiting `next()` with nil.
    fileprivate func cancelPendingNext() {
        if case .pull(let lines, let maxLength, let waiter?) = reader {
            reader = .pull(lines: lines, maxLength: maxLength, waiter: nil)
            waiter(nil)
        }
    }

    /// On the color: releases the `send` waiting with `token`.
    fileprivate func cancelDrainWaiter(_ token: CancelToken) {
        guard let index = drainWaiters.firstIndex(where: { $0.token === token }) else { return }
        drainWaiters.remove(at: index).done(true)
    }

    /// Queues `text` as UTF-8; see `send(_:)` for bytes.
    public func send(_ text: String) async throws {
        try await send(Array(text.utf8))
    }
}

/// A one-way cancellation flag shared by a waiting call and its cancellation handler.
final class CancelToken: Sendable {
    private let flag = Atomic<Bool>(false)
    var isCancelled: Bool { flag.load(ordering: .acquiring) }
    func cancel() { flag.store(true, ordering: .releasing) }
}

/// `send` on a connection that is closed or closing.
public struct ConnectionClosed: Error, Equatable, Sendable {
    /// The connection's peer.
    public let peer: String
}

extension Connection: SocketOwner {
    func closeForShutdown() {
        Callback.run(as: color) { beginClose(.shutdown, flush: false) }
    }
}
