import Glibc

/// Why Chroma refused a request. Each case names the operation and the input it refused.
public enum ChromaError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The runtime is stopping or stopped; the work was not queued. `operation` is the call
    /// that was refused ("execute", "schedule", "watch", "onSignal").
    case shutDown(operation: String)
    /// The runtime has not been started, or was started twice.
    case invalidState(operation: String, reason: String)
    /// `fd` is negative or not open (`fcntl(F_GETFD)` failed with `errno`).
    case badDescriptor(operation: String, fd: Int32, errno: Int32)
    /// The kernel would not watch `fd` (`call` failed with `errno`): epoll refuses regular
    /// files and directories (EPERM); use the blocking pool for those.
    case unpollable(operation: String, fd: Int32, call: String, errno: Int32)
    /// `fd` is already watched for some of `interest`, or by another color.
    case alreadyWatched(operation: String, fd: Int32, detail: String)
    /// The argument is out of range: a signal number, an interval, a loop count.
    case invalidArgument(operation: String, detail: String)
    /// The blocking pool's queue was full (`capacity` jobs); the work did not run.
    case overloaded(operation: String, capacity: Int)
    /// The work was cancelled while queued (by its `BlockingJob`, or by shutdown).
    case cancelled(operation: String)
    /// libevent or the OS failed a call Chroma needed (`call` names it).
    case system(operation: String, call: String, errno: Int32)

    /// The operation, the input it refused, and why, in one line.
    public var description: String {
        switch self {
        case .shutDown(let op):
            return "\(op): the runtime is shut down"
        case .invalidState(let op, let reason):
            return "\(op): \(reason)"
        case .badDescriptor(let op, let fd, let err):
            return "\(op) fd \(fd): bad file descriptor (\(String(cString: strerror(err))))"
        case .unpollable(let op, let fd, let call, let err):
            return "\(op) fd \(fd): the kernel cannot watch this descriptor (\(call): \(String(cString: strerror(err))))"
        case .alreadyWatched(let op, let fd, let detail):
            return "\(op) fd \(fd): \(detail)"
        case .invalidArgument(let op, let detail):
            return "\(op): \(detail)"
        case .overloaded(let op, let capacity):
            return "\(op): the blocking pool's queue is full (\(capacity) jobs)"
        case .cancelled(let op):
            return "\(op): cancelled before it ran"
        case .system(let op, let call, let err):
            return "\(op): \(call) failed (\(String(cString: strerror(err))))"
        }
    }
}
