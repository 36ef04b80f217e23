import Glibc

/// Why chroma-kv's data directory could not be read or written: the operation, the path, and
/// the system's reason (or what was wrong with the bytes found).
public struct KVStorageError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let path: String
    public let reason: String

    init(_ operation: String, _ path: String, errno code: Int32 = errno) {
        self.init(operation, path, reason: String(cString: strerror(code)))
    }

    init(_ operation: String, _ path: String, reason: String) {
        self.operation = operation
        self.path = path
        self.reason = reason
    }

    public var description: String { "chroma-kv: \(operation) \(path): \(reason)" }
}

/// The blocking file calls chroma-kv's log and snapshots make, each retried on EINTR and
/// throwing `KVStorageError` that names the path. Called only on pool workers and at
/// startup, never on a loop.
enum DataFile {
    static func open(_ path: String, flags: Int32, operation: String = "open") throws(KVStorageError) -> Int32 {
        while true {
            let fd = Glibc.open(path, flags | O_CLOEXEC, 0o644)
            if fd >= 0 { return fd }
            if errno != EINTR { throw KVStorageError(operation, path) }
        }
    }

    /// Writes all of `bytes` (short writes continue).
    static func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws(KVStorageError) {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw KVStorageError("write", path)
            }
            done += n
        }
    }

    static func write(_ fd: Int32, _ bytes: [UInt8], path: String) throws(KVStorageError) {
        guard !bytes.isEmpty else { return }
        var failure: KVStorageError?
        bytes.withUnsafeBytes { raw in
            do throws(KVStorageError) { try write(fd, raw, path: path) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    static func syncData(_ fd: Int32, path: String) throws(KVStorageError) {
        while fdatasync(fd) != 0 {
            if errno != EINTR { throw KVStorageError("fdatasync", path) }
        }
    }

    /// Makes a rename or a new file in `directory` durable.
    static func syncDirectory(_ directory: String) throws(KVStorageError) {
        let fd = try open(directory, flags: O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        while fsync(fd) != 0 {
            if errno != EINTR { throw KVStorageError("fsync", directory) }
        }
    }

    /// The whole file.
    static func read(_ path: String) throws(KVStorageError) -> [UInt8] {
        let fd = try open(path, flags: O_RDONLY)
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw KVStorageError("stat", path) }
        var bytes = [UInt8](repeating: 0, count: Int(status.st_size))
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                throw KVStorageError("read", path)
            }
            if n == 0 { break }
            done += n
        }
        if done < bytes.count { bytes.removeLast(bytes.count - done) }
        return bytes
    }

    /// Cuts the file to `length` bytes, durably.
    static func truncate(_ path: String, to length: Int) throws(KVStorageError) {
        let fd = try open(path, flags: O_WRONLY)
        defer { close(fd) }
        guard ftruncate(fd, off_t(length)) == 0 else { throw KVStorageError("truncate", path) }
        try syncData(fd, path: path)
    }

    static func rename(_ from: String, to: String) throws(KVStorageError) {
        guard Glibc.rename(from, to) == 0 else { throw KVStorageError("rename", "\(from) to \(to)") }
    }

    static func remove(_ path: String) throws(KVStorageError) {
        guard unlink(path) == 0 || errno == ENOENT else { throw KVStorageError("remove", path) }
    }

    /// Names of the entries of `directory`, created first if missing.
    static func list(_ directory: String) throws(KVStorageError) -> [String] {
        if mkdir(directory, 0o755) != 0 && errno != EEXIST { throw KVStorageError("create directory", directory) }
        guard let dir = opendir(directory) else { throw KVStorageError("open directory", directory) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}
