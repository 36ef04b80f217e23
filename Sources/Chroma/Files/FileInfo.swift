import Glibc
import SystemPackage

/// What kind of file a path names.
public enum FileKind: Sendable, Equatable {
    case regular, directory, symbolicLink, fifo, socket, characterDevice, blockDevice
    /// The file system did not say (a directory entry's `d_type` of `DT_UNKNOWN`).
    case unknown

    init(mode: mode_t) {
        switch mode & S_IFMT {
        case S_IFREG: self = .regular
        case S_IFDIR: self = .directory
        case S_IFLNK: self = .symbolicLink
        case S_IFIFO: self = .fifo
        case S_IFSOCK: self = .socket
        case S_IFCHR: self = .characterDevice
        case S_IFBLK: self = .blockDevice
        default: self = .unknown
        }
    }

    init(directoryEntryType type: UInt8) {
        switch Int32(type) {
        case Int32(DT_REG): self = .regular
        case Int32(DT_DIR): self = .directory
        case Int32(DT_LNK): self = .symbolicLink
        case Int32(DT_FIFO): self = .fifo
        case Int32(DT_SOCK): self = .socket
        case Int32(DT_CHR): self = .characterDevice
        case Int32(DT_BLK): self = .blockDevice
        default: self = .unknown
        }
    }
}

/// A file's metadata, from `stat`, `lstat` or `fstat`.
public struct FileInfo: Sendable, Equatable {
    /// A point in time as the file system records it: seconds and nanoseconds since the
    /// Unix epoch.
    public struct Timestamp: Sendable, Hashable, Comparable {
        /// Whole seconds since the epoch.
        public var seconds: Int64
        /// Nanoseconds within the second (0..<1,000,000,000).
        public var nanoseconds: Int32
        /// Earlier first.
        public static func < (a: Timestamp, b: Timestamp) -> Bool {
            (a.seconds, a.nanoseconds) < (b.seconds, b.nanoseconds)
        }
        init(_ ts: timespec) {
            seconds = Int64(ts.tv_sec)
            nanoseconds = Int32(ts.tv_nsec)
        }
    }

    /// Size in bytes.
    public var size: Int64
    /// Regular file, directory, link and so on.
    public var kind: FileKind
    /// The permission bits (including set-user-ID, set-group-ID and sticky).
    public var permissions: FilePermissions
    /// The inode number: with `device`, the file's identity.
    public var inode: UInt64
    /// The device the file lives on.
    public var device: UInt64
    /// Hard links to the inode.
    public var linkCount: Int
    /// The owner.
    public var userID: UInt32
    /// The group.
    public var groupID: UInt32
    /// Last data modification.
    public var modified: Timestamp
    /// Last access (as the mount's atime policy records it).
    public var accessed: Timestamp
    /// Last status change.
    public var changed: Timestamp

    init(_ st: stat) {
        size = Int64(st.st_size)
        kind = FileKind(mode: st.st_mode)
        permissions = FilePermissions(rawValue: st.st_mode & 0o7777)
        inode = UInt64(st.st_ino)
        device = UInt64(st.st_dev)
        linkCount = Int(st.st_nlink)
        userID = st.st_uid
        groupID = st.st_gid
        modified = Timestamp(st.st_mtim)
        accessed = Timestamp(st.st_atim)
        changed = Timestamp(st.st_ctim)
    }
}

/// One entry of a directory listing (never "." or "..").
public struct DirectoryEntry: Sendable, Equatable {
    /// The entry's name within its directory.
    public var name: String
    /// Its kind as the directory records it; `.unknown` on file systems that do not say
    /// (then `stat` the entry).
    public var kind: FileKind
}
