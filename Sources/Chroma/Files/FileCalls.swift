import Glibc
import SystemPackage

/// The blocking system calls behind `Files`, run on pool workers. Each retries on EINTR
/// (except `close`, which Linux must not retry) and throws a `FileError` naming the
/// operation and its path or descriptor.
enum FileCalls {
    /// Reads of at most this many bytes count as short (see `BlockingLane`).
    static let shortLaneBytes = 1 << 20

    static func fail(_ operation: String, path: FilePath? = nil, fd: FileDescriptor? = nil, errno code: Int32 = Glibc.errno) -> FileError {
        FileError(operation: operation, path: path, descriptor: fd, code: .system(Errno(rawValue: code)))
    }

    /// Calls `body` until it stops failing with EINTR.
    @inline(__always) static func retrying<T: BinaryInteger>(_ body: () -> T) -> T {
        while true {
            let rc = body()
            if rc >= 0 || Glibc.errno != EINTR { return rc }
        }
    }

    static func open(_ path: FilePath, _ flags: Int32, _ permissions: FilePermissions?, operation: String,
                     reportedPath: FilePath? = nil) throws(FileError) -> FileDescriptor {
        let mode = permissions?.rawValue ?? 0o644
        let fd = path.withPlatformString { name in retrying { Glibc.open(name, flags | O_CLOEXEC, mode) } }
        if fd < 0 { throw fail(operation, path: reportedPath ?? path) }
        return FileDescriptor(rawValue: fd)
    }

    static func close(_ fd: FileDescriptor, operation: String = "close", path: FilePath? = nil, reportFD: Bool = true) throws(FileError) {
        if Glibc.close(fd.rawValue) != 0 && Glibc.errno != EINTR { throw fail(operation, path: path, fd: reportFD ? fd : nil) }
    }

    /// Reads into `buffer` at `offset` until it is full or the file ends; returns the bytes
    /// read, or sets `errno` (then the return value is meaningless).
    @inline(__always)
    static func preadFully(_ fd: FileDescriptor, into buffer: UnsafeMutableRawBufferPointer, offset: Int64, errno error: inout Int32) -> Int {
        var filled = 0
        while filled < buffer.count {
            let n = retrying { Glibc.pread(fd.rawValue, buffer.baseAddress! + filled, buffer.count - filled, off_t(offset) + off_t(filled)) }
            if n < 0 {
                error = Glibc.errno
                return filled
            }
            if n == 0 { break }
            filled += n
        }
        return filled
    }

    /// Writes all of `bytes` at `offset`.
    static func pwrite(_ bytes: [UInt8], _ fd: FileDescriptor, offset: Int64, operation: String = "write", path: FilePath? = nil,
                       reportFD: Bool = true) throws(FileError) {
        var failure: Int32 = 0
        bytes.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = retrying { Glibc.pwrite(fd.rawValue, raw.baseAddress! + done, raw.count - done, off_t(offset) + off_t(done)) }
                if n < 0 { failure = Glibc.errno; return }
                done += n
            }
        }
        if failure != 0 { throw fail(operation, path: path, fd: reportFD ? fd : nil, errno: failure) }
    }

    static func rawStat(_ fd: FileDescriptor, operation: String, path: FilePath? = nil, reportFD: Bool = true) throws(FileError) -> Glibc.stat {
        var st = Glibc.stat()
        if Glibc.fstat(fd.rawValue, &st) != 0 { throw fail(operation, path: path, fd: reportFD ? fd : nil) }
        return st
    }

    static func info(_ path: FilePath, followLinks: Bool, operation: String) throws(FileError) -> FileInfo {
        var st = Glibc.stat()
        let rc: Int32 = path.withPlatformString { name -> Int32 in
            if followLinks { return stat(name, &st) }
            return lstat(name, &st)
        }
        if rc != 0 { throw fail(operation, path: path) }
        return FileInfo(st)
    }

    /// Reads what is left of `fd` to its end, `sizeHint` bytes expected, straight into the
    /// returned array. Only a file that grows while it is read costs a copy (appending).
    /// More than `limit` bytes fail with EFBIG.
    static func readToEnd(_ fd: FileDescriptor, sizeHint: Int, limit: Int, path: FilePath, operation: String = "read") throws(FileError) -> [UInt8] {
        var outcome = ReadToSize.Outcome()
        // Errors name the path only: the descriptor is the read's own, never the caller's.
        var bytes = sizeHint == 0 ? [] : withUnsafeMutablePointer(to: &outcome) { outcome in
            ByteArray.make(count: sizeHint, ReadToSize(fd: fd, outcome: outcome))
        }
        let failure = outcome.failure, reachedEnd = outcome.reachedEnd
        if failure != 0 { throw fail(operation, path: path, errno: failure) }
        if reachedEnd { return bytes }
        // Files whose size stat does not know (procfs, devices) or that grew: read on in chunks.
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { raw in retrying { Glibc.read(fd.rawValue, raw.baseAddress!, raw.count) } }
            if n < 0 { throw fail(operation, path: path) }
            if n == 0 { return bytes }
            if bytes.count + n > limit { throw fail(operation, path: path, errno: EFBIG) }
            bytes.append(contentsOf: chunk[..<n])
        }
    }

    static func fsync(_ fd: FileDescriptor, dataOnly: Bool, operation: String, path: FilePath? = nil, reportFD: Bool = true) throws(FileError) {
        let rc = retrying { dataOnly ? Glibc.fdatasync(fd.rawValue) : Glibc.fsync(fd.rawValue) }
        if rc != 0 { throw fail(operation, path: path, fd: reportFD ? fd : nil) }
    }

    static func list(_ path: FilePath) throws(FileError) -> [DirectoryEntry] {
        guard let dir = path.withPlatformString({ opendir($0) }) else { throw fail("list", path: path) }
        defer { closedir(dir) }
        var entries: [DirectoryEntry] = []
        while true {
            Glibc.errno = 0
            guard let entry = readdir(dir) else {
                if Glibc.errno != 0 { throw fail("list", path: path) }
                return entries
            }
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            entries.append(DirectoryEntry(name: name, kind: FileKind(directoryEntryType: entry.pointee.d_type)))
        }
    }

    static func makeDirectory(_ path: FilePath, permissions: FilePermissions, withIntermediates: Bool) throws(FileError) {
        let rc = path.withPlatformString { Glibc.mkdir($0, permissions.rawValue) }
        if rc == 0 { return }
        let code = Glibc.errno
        if withIntermediates {
            if code == EEXIST, (try? info(path, followLinks: true, operation: "makeDirectory"))?.kind == .directory { return }
            if code == ENOENT, let parent = parentOf(path) {
                try makeDirectory(parent, permissions: permissions, withIntermediates: true)
                let again = path.withPlatformString { Glibc.mkdir($0, permissions.rawValue) }
                if again == 0 || Glibc.errno == EEXIST { return }
                throw fail("makeDirectory", path: path)
            }
        }
        throw fail("makeDirectory", path: path, errno: code)
    }

    static func parentOf(_ path: FilePath) -> FilePath? {
        let parent = path.removingLastComponent()
        return parent.isEmpty || parent == path ? nil : parent
    }

    /// Removes a file, or an empty directory.
    static func remove(_ path: FilePath) throws(FileError) {
        let rc = path.withPlatformString { unlink($0) }
        if rc == 0 { return }
        guard Glibc.errno == EISDIR else { throw fail("remove", path: path) }
        if path.withPlatformString({ rmdir($0) }) != 0 { throw fail("remove", path: path) }
    }

    static func rename(_ from: FilePath, to: FilePath, operation: String = "rename") throws(FileError) {
        let rc = from.withPlatformString { a in to.withPlatformString { b in Glibc.rename(a, b) } }
        if rc != 0 { throw fail(operation, path: from) }
    }

    static func truncate(_ path: FilePath, to size: Int64) throws(FileError) {
        let rc = path.withPlatformString { name in retrying { Glibc.truncate(name, off_t(size)) } }
        if rc != 0 { throw fail("truncate", path: path) }
    }

    static func truncate(_ fd: FileDescriptor, to size: Int64) throws(FileError) {
        if retrying({ ftruncate(fd.rawValue, off_t(size)) }) != 0 { throw fail("truncate", fd: fd) }
    }

    // MARK: Whole-file writes

    /// Steps of an atomic write where a test may inject a failure (see `FileFailpoints`).
    enum AtomicWriteStep: Sendable { case afterTempWrite }

    /// Writes `bytes` to `path`. Plain: create or truncate, write, close. Atomic: write a
    /// temporary file beside it, fsync it, rename it over `path`, fsync the directory; a
    /// failure at any step removes the temporary file and leaves `path` as it was.
    static func writeFile(_ bytes: [UInt8], to path: FilePath, atomic: Bool, permissions: FilePermissions) throws(FileError) {
        guard atomic else {
            let fd = try open(path, O_WRONLY | O_CREAT | O_TRUNC, permissions, operation: "write")
            do throws(FileError) {
                try pwrite(bytes, fd, offset: 0, path: path, reportFD: false)
            } catch {
                _ = Glibc.close(fd.rawValue)
                throw error
            }
            try close(fd, operation: "write.close", path: path, reportFD: false)
            return
        }
        guard let name = path.lastComponent else {
            throw FileError(operation: "write", path: path, code: .invalidArgument("an atomic write needs a file name"))
        }
        let directory = parentOf(path) ?? FilePath(".")
        // An existing file keeps its permission bits (owner and ACLs are not carried over).
        var existing = Glibc.stat()
        let mode = path.withPlatformString { stat($0, &existing) } == 0
            ? FilePermissions(rawValue: existing.st_mode & 0o7777) : permissions
        let temp = directory.appending(".\(name).chroma-\(getpid())-\(UInt32.random(in: 0 ... .max))")
        // Errors name `path`, the file the caller asked for, with the step that failed.
        let fd = try open(temp, O_WRONLY | O_CREAT | O_EXCL, mode, operation: "write.create-temp", reportedPath: path)
        func discardTemp() { _ = temp.withPlatformString { unlink($0) } }
        do throws(FileError) {
            // open(2) applies the umask; the old file's bits are what readers expect.
            if fchmod(fd.rawValue, mode.rawValue) != 0 { throw fail("write.chmod", path: path) }
            try pwrite(bytes, fd, offset: 0, operation: "write.temp", path: path, reportFD: false)
            try fsync(fd, dataOnly: false, operation: "write.fsync", path: path, reportFD: false)
            try FileFailpoints.hit(.afterTempWrite, path: path)
        } catch {
            _ = Glibc.close(fd.rawValue)
            discardTemp()
            throw error
        }
        do throws(FileError) {
            // Closed once whatever happens: a failed close(2) still frees the number, and
            // closing it again could close another thread's new descriptor.
            try close(fd, operation: "write.close", path: path, reportFD: false)
        } catch {
            discardTemp()
            throw error
        }
        // The directory is opened before the rename, so every failure up to the rename
        // leaves `path` untouched.
        let dirFD: FileDescriptor
        do throws(FileError) {
            dirFD = try open(directory, O_RDONLY | O_DIRECTORY, nil, operation: "write.open-directory", reportedPath: path)
        } catch {
            discardTemp()
            throw error
        }
        defer { _ = Glibc.close(dirFD.rawValue) }
        let renamed = temp.withPlatformString { a in path.withPlatformString { b in Glibc.rename(a, b) } }
        if renamed != 0 {
            let error = fail("write.rename", path: path)
            discardTemp()
            throw error
        }
        // The new content is in place; this makes the rename durable. A failure here is
        // reported as "write.fsync-directory": the file was replaced, durability unknown.
        try fsync(dirFD, dataOnly: false, operation: "write.fsync-directory", path: path, reportFD: false)
    }
}

/// Failure injection for tests: lets a test make an atomic write fail between writing the
/// temporary file and renaming it, as a crash or a full disk would. Off (nil) unless a test
/// sets it; checked once per atomic write, under a lock.
enum FileFailpoints {
    nonisolated(unsafe) private static var hook: (@Sendable (FileCalls.AtomicWriteStep, FilePath) -> Errno?)?
    private static let lock = Lock()

    /// Installs (or, with nil, removes) the hook: it returns the errno to fail with, or nil.
    static func set(_ newHook: (@Sendable (FileCalls.AtomicWriteStep, FilePath) -> Errno?)?) {
        lock.withLock { hook = newHook }
    }

    static func hit(_ step: FileCalls.AtomicWriteStep, path: FilePath) throws(FileError) {
        guard let hook = lock.withLock({ hook }) else { return }
        if let errno = hook(step, path) {
            throw FileError(operation: "write.injected", path: path, code: .system(errno))
        }
    }
}

/// `FileCalls.readToEnd`'s first read: up to the size stat gave, straight into the array.
private struct ReadToSize: ByteArraySource {
    struct Outcome {
        /// The errno of a failed read (0: none).
        var failure: Int32 = 0
        /// The file ended before the expected size.
        var reachedEnd = false
    }
    let fd: FileDescriptor
    let outcome: UnsafeMutablePointer<Outcome>

    func write(into start: UnsafeMutableRawPointer, count: Int) -> Int {
        var filled = 0
        while filled < count {
            let n = FileCalls.retrying { Glibc.read(fd.rawValue, start + filled, count - filled) }
            if n < 0 { outcome.pointee.failure = Glibc.errno; return filled }
            if n == 0 { outcome.pointee.reachedEnd = true; return filled }
            filled += n
        }
        return filled
    }
}
