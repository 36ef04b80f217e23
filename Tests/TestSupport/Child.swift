import CTestSupport
import Foundation

/// A child process for tests, started with `posix_spawn`.
///
/// Tests use this instead of Foundation's `Process`: on Linux, `Process.run()` copies a whole
/// `struct dirent` out of each `/proc/self/fd` entry `readdir` returns, which reads past the
/// end of glibc's buffer when an entry sits at its tail (AddressSanitizer reports it; without
/// it, an unlucky run crashes). The child inherits no descriptor but the three standard ones,
/// as with `Process`.
///
/// Not thread-safe: one thread at a time starts, reads, signals or waits for a child.
public final class Child {
    /// Where one of the child's output streams goes.
    public enum Output {
        /// `/dev/null`.
        case discard
        /// A pipe whose read end is `standardOutput` or `standardError`.
        case pipe
    }

    /// How the child ended.
    public enum Termination: Equatable {
        case exited(Int32)
        case signaled(Int32)
    }

    /// Why a child could not start.
    public struct Failure: Error, CustomStringConvertible {
        public let path: String
        public let operation: String
        public let code: Int32
        public var description: String { "\(operation) for \(path): \(String(cString: strerror(code)))" }
    }

    public let pid: pid_t
    /// The read end of the child's stdout pipe, when asked for (closed by `wait`).
    public let standardOutput: Int32?
    /// The read end of the child's stderr pipe, when asked for (closed by `wait`).
    public let standardError: Int32?
    public private(set) var termination: Termination?

    /// Starts `path` (looked up on PATH when it has no slash) with `arguments`; stdin is
    /// `/dev/null`. `environment` replaces this process's when given.
    public init(_ path: String, _ arguments: [String], environment: [String: String]? = nil,
                standardOutput stdout: Output = .discard, standardError stderr: Output = .discard) throws {
        var pipes: [Int32] = []
        func pipeEnds(_ output: Output) throws -> (read: Int32, write: Int32)? {
            guard case .pipe = output else { return nil }
            var ends: [Int32] = [-1, -1]
            guard chroma_test_pipe_cloexec(&ends) == 0 else { throw Failure(path: path, operation: "pipe2", code: errno) }
            pipes += ends
            return (ends[0], ends[1])
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        let outPipe: (read: Int32, write: Int32)?
        let errPipe: (read: Int32, write: Int32)?
        do {
            outPipe = try pipeEnds(stdout)
            errPipe = try pipeEnds(stderr)
        } catch {
            for fd in pipes { close(fd) }
            throw error
        }
        posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0)
        for (ends, target) in [(outPipe, STDOUT_FILENO), (errPipe, STDERR_FILENO)] {
            if let ends {
                posix_spawn_file_actions_adddup2(&actions, ends.write, target)
            } else {
                posix_spawn_file_actions_addopen(&actions, target, "/dev/null", O_WRONLY, 0)
            }
        }
        chroma_test_spawn_close_from(&actions, 3)
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for arg in argv { free(arg) } }
        let envp: [UnsafeMutablePointer<CChar>?]? = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer { for entry in envp ?? [] { free(entry) } }
        var pid = pid_t()
        let rc: Int32 = if let envp {
            envp.withUnsafeBufferPointer { posix_spawnp(&pid, path, &actions, nil, argv, $0.baseAddress) }
        } else {
            posix_spawnp(&pid, path, &actions, nil, argv, environ)
        }
        if let outPipe { close(outPipe.write) }
        if let errPipe { close(errPipe.write) }
        guard rc == 0 else {
            if let outPipe { close(outPipe.read) }
            if let errPipe { close(errPipe.read) }
            throw Failure(path: path, operation: "posix_spawn", code: rc)
        }
        self.pid = pid
        standardOutput = outPipe?.read
        standardError = errPipe?.read
    }

    /// Reads `fd` (one of this child's pipes) to its end: until the child and everything it
    /// started have closed it.
    public func readToEnd(_ fd: Int32) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                bytes += chunk[0..<n]
            } else if n < 0, errno == EINTR {
                continue
            } else {
                return bytes
            }
        }
    }

    /// Reads `fd` up to and including the first newline; nil if it ended before one.
    public func readLine(_ fd: Int32) -> String? {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let n = read(fd, &byte, 1)
            if n == 1 {
                line.append(byte)
                if byte == 10 { return String(decoding: line, as: UTF8.self) }
            } else if n < 0, errno == EINTR {
                continue
            } else {
                return nil
            }
        }
    }

    /// Sends `signal` to the child, unless it has already been waited for.
    public func send(_ signal: Int32) {
        if termination == nil { kill(pid, signal) }
    }

    /// Waits for the child to end (at once if it already has been waited for) and closes
    /// its pipes.
    @discardableResult
    public func wait() -> Termination {
        if let termination { return termination }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        // WIFEXITED / WTERMSIG, which Swift does not import as macros.
        let ended: Termination = status & 0x7f == 0 ? .exited((status >> 8) & 0xff) : .signaled(status & 0x7f)
        termination = ended
        if let standardOutput { close(standardOutput) }
        if let standardError { close(standardError) }
        return ended
    }

    deinit {
        if termination == nil {
            kill(pid, SIGKILL)
            wait()
        }
    }
}
