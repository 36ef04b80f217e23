/// A directory served over HTTP (see `HTTPRoutes.files(at:_:)`).
///
/// Files are opened and read on the blocking pool, never on a loop (or on the loop itself
/// when the page cache holds them, which costs no wait). Small files (up to
/// `cacheMaxFileSize`) are kept in memory, one cache per loop so no lock is taken, least
/// recently used out first, and revalidated with `stat` (size, modification time, inode)
/// once they are older than `revalidateAfter`: until then a cached file is answered
/// straight from the loop, with no pool job at all. Larger files are sent from the page
/// cache with `sendfile` (a libevent file segment); as in nginx without `aio`, a read of
/// pages not yet in memory then blocks the loop for the disk.
///
/// What a browser, a CDN or a download manager expects of a file server (RFC 9110):
/// - every answer carries `Last-Modified`, a strong `ETag` (from inode, size and
///   modification time) and `Accept-Ranges: bytes`;
/// - `If-None-Match` and `If-Modified-Since` answer 304; `If-Match` and
///   `If-Unmodified-Since` answer 412;
/// - a GET with one `Range` answers 206 with that slice (sendfile for big files), with
///   several a `multipart/byteranges` 206 (the whole file instead when they overlap or are
///   more than 16), and with none that starts inside the file 416; `If-Range` is honoured.
///
/// Paths are percent-decoded before they are checked: a `..` segment gets 403, a NUL
/// byte or a bad escape 400. Symbolic links under `root` are followed. A path ending in `/`
/// serves that directory's `index.html`; without one, a listing when `directoryListing` is
/// on, else 404.
public struct StaticFiles: Sendable {
    /// The directory served.
    public var root: String
    /// Files up to this size are cached in memory (default 256 KiB).
    public var cacheMaxFileSize: Int = 256 * 1024
    /// Bytes of file content the cache holds at most, all loops together (default 64 MiB):
    /// each loop keeps its share, `cacheCapacity / loops`, and drops its least recently
    /// used files to stay within it.
    public var cacheCapacity: Int = 64 << 20
    /// How old a cached file may get before a request checks it with `stat` (default 1 s;
    /// `.zero` checks on every request).
    public var revalidateAfter: Duration = .seconds(1)
    /// Whether a directory without `index.html` is answered with an HTML list of its
    /// entries (default off: 404, as nginx without `autoindex`).
    public var directoryListing = false

    /// Files under `root` (a trailing `/` is ignored), with the settings above.
    public init(root: String, cacheMaxFileSize: Int = 256 * 1024, cacheCapacity: Int = 64 << 20,
                revalidateAfter: Duration = .seconds(1), directoryListing: Bool = false) {
        self.root = root.count > 1 && root.hasSuffix("/") ? String(root.dropLast()) : root
        self.cacheMaxFileSize = cacheMaxFileSize
        self.cacheCapacity = cacheCapacity
        self.revalidateAfter = revalidateAfter
        self.directoryListing = directoryListing
    }
}
