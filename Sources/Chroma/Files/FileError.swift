import Glibc
import SystemPackage

/// Why a file operation failed: the operation, what it was applied to (a path, a
/// descriptor, or both), and the reason: the system's `errno`, or the pool's verdict.
///
/// ```swift
/// runtime.files.read("/etc/missing") { result in
///     if case .failure(let error) = result, error.errno == .noSuchFileOrDirectory { … }
/// }
/// ```
public struct FileError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The reason a file operation failed.
    public enum Code: Equatable, Sendable {
        /// The system call failed with this errno.
        case system(Errno)
        /// The blocking pool's queue was full; the operation did not run.
        case overloaded
        /// The operation was cancelled while queued (by its `BlockingJob`, or shutdown).
        case cancelled
        /// The arguments were refused before any call: a negative offset or count.
        case invalidArgument(String)
    }

    /// The operation, by the name of the `Files` method ("open", "read", "write", "stat"…)
    /// or, for a step inside a compound operation, that step ("write.fsync", "write.rename").
    public let operation: String
    /// The path the operation was applied to, if any.
    public let path: FilePath?
    /// The descriptor the operation was applied to, if any.
    public let descriptor: FileDescriptor?
    /// Why it failed.
    public let code: Code

    /// Creates an error; Chroma makes these, tests and wrappers may too.
    public init(operation: String, path: FilePath? = nil, descriptor: FileDescriptor? = nil, code: Code) {
        self.operation = operation
        self.path = path
        self.descriptor = descriptor
        self.code = code
    }

    /// The errno, when the system refused the call.
    public var errno: Errno? {
        if case .system(let errno) = code { return errno }
        return nil
    }

    /// "read /var/data/x: No such file or directory (ENOENT)" and the like.
    public var description: String {
        var subject = ""
        if let path { subject += " \(path)" }
        if let descriptor { subject += " fd \(descriptor.rawValue)" }
        let reason: String
        switch code {
        case .system(let errno): reason = "\(String(cString: strerror(errno.rawValue))) (errno \(errno.rawValue))"
        case .overloaded: reason = "the blocking pool's queue is full"
        case .cancelled: reason = "cancelled before it ran"
        case .invalidArgument(let detail): reason = detail
        }
        return "\(operation)\(subject): \(reason)"
    }
}
