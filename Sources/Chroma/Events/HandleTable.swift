import CLibevent
import Glibc

/// The runtime's registry of live watches: which fd is watched by which color for what,
/// and which watches each loop must free when it shuts down.
///
/// One lock for all of it: registering and cancelling watches is not a hot path, and the
/// lock is what makes "register" and "the loop closes for shutdown" mutually exclusive, so
/// no watch can be added to a loop that has already swept its own.
final class HandleTable: @unchecked Sendable {
    // Safe to share: every field is read and written with `lock` held.
    private let lock = Lock()
    private var fds: [Int32: (color: Color, interest: Interest)] = [:]
    private var watches: [[ObjectIdentifier: Watch]]
    private var closed: [Bool]

    init(loopCount: Int) {
        watches = Array(repeating: [:], count: loopCount)
        closed = Array(repeating: false, count: loopCount)
    }

    /// Registers `watch` and creates its persistent event on its loop. Any thread.
    func register(_ watch: Watch, operation: String) throws(ChromaError) {
        try lock.withLock { () throws(ChromaError) in
            let loop = watch.loop
            guard !closed[loop.index] else { throw .shutDown(operation: operation) }
            let flags: Int16
            switch watch.target {
            case .fd(let fd):
                if let existing = fds[fd] {
                    if existing.color != watch.color {
                        throw .alreadyWatched(operation: operation, fd: fd,
                            detail: "already watched by \(existing.color); all watches of one fd share a color")
                    }
                    if !existing.interest.isDisjoint(with: watch.interest) {
                        throw .alreadyWatched(operation: operation, fd: fd,
                            detail: "already watched for \(existing.interest.intersection(watch.interest).names)")
                    }
                }
                flags = watch.interest.libeventFlags
                watch.event = try loop.makeEvent(fd: fd, flags: flags) { [unowned watch] what in watch.fire(what) }
                fds[fd, default: (watch.color, [])].interest.formUnion(watch.interest)
            case .signal(let signal):
                watch.event = try loop.makeEvent(fd: signal, flags: chroma_ev_signal()) { [unowned watch] what in
                    watch.fire(what)
                }
            }
            do throws(ChromaError) {
                try watch.event!.add()
            } catch {
                // Never added, so freeing here cannot race the loop.
                watch.event!.free()
                watch.event = nil
                guard case .fd(let fd) = watch.target else { throw error }
                removeInterest(of: watch, fd: fd)
                // epoll refuses regular files and directories with EPERM: say which fd.
                if case .system(_, let call, let err) = error {
                    throw .unpollable(operation: operation, fd: fd, call: call, errno: err)
                }
                throw error
            }
            watches[loop.index][ObjectIdentifier(watch)] = watch
        }
    }

    /// Called by `Watch.cancel()` (any thread): forgets the fd's interest now, and frees the
    /// event on the watch's loop, right away when already there.
    func unregister(_ watch: Watch) {
        let loop = watch.loop
        lock.withLock {
            if case .fd(let fd) = watch.target { removeInterest(of: watch, fd: fd) }
        }
        if loop.isCurrent {
            releaseEvent(of: watch)
        } else {
            // If the loop already closed its mailbox, its shutdown sweep frees the event.
            _ = loop.enqueue(Job(color: watch.color.rawValue) { [self] in releaseEvent(of: watch) })
        }
    }

    /// Loop thread: frees the watch's event and forgets it.
    private func releaseEvent(of watch: Watch) {
        watch.loop.preconditionOnLoop("free a watch's event")  // libevent bugs #512, #1311, #1530
        lock.withLock {
            watch.event?.free()
            watch.event = nil
            watches[watch.loop.index][ObjectIdentifier(watch)] = nil
        }
    }

    private func removeInterest(of watch: Watch, fd: Int32) {
        guard var entry = fds[fd] else { return }
        entry.interest.subtract(watch.interest)
        fds[fd] = entry.interest.isEmpty ? nil : entry
    }

    /// Shutdown, on `loop`'s thread: refuses further watches there, cancels and frees every
    /// watch it holds. Returns how many were still live (not cancelled by their owner).
    func closeLoop(_ loop: Loop) -> Int {
        lock.withLock {
            closed[loop.index] = true
            var live = 0
            for watch in watches[loop.index].values {
                if watch.markCancelled() {
                    live += 1
                    if case .fd(let fd) = watch.target { removeInterest(of: watch, fd: fd) }
                }
                watch.event?.free()
                watch.event = nil
            }
            watches[loop.index] = [:]
            return live
        }
    }
}

extension Interest {
    var names: String {
        switch (contains(.readable), contains(.writable)) {
        case (true, true): return "readable and writable"
        case (true, false): return "readable"
        case (false, true): return "writable"
        case (false, false): return "nothing"
        }
    }
}
