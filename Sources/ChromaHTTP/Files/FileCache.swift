@_spi(Engine) import Chroma
import Synchronization

/// A file in a loop's cache: its bytes, its version, and the headers every answer with it
/// carries. Its loop's thread only.
final class CachedFile: @unchecked Sendable {
    // Safe to send: it only travels in pool completions that run on a color of its own
    // loop, the one thread that touches its mutable fields.
    let bytes: [UInt8]
    let identity: FileIdentity
    let validators: HTTPValidators
    /// Content-Type, ETag, Last-Modified, Accept-Ranges.
    let headers: [(name: String, value: String)]
    var checkedAt: UInt64
    var revalidating = false
    /// Neighbours in the cache's recency list (nil at its ends, and while not cached).
    fileprivate var newer: CachedFile?
    fileprivate var older: CachedFile?
    fileprivate var path = ""

    init(bytes: [UInt8], identity: FileIdentity, contentType: String) {
        self.bytes = bytes
        self.identity = identity
        self.validators = identity.validators
        self.headers = FileAnswer.headers(contentType: contentType, validators: validators)
        self.checkedAt = coarseMonotonicNanoseconds()
    }
}

/// One loop's counters of a file route's cache, read from any thread (relaxed: statistics).
final class FileCacheCounters: Sendable {
    let hits = Atomic<Int>(0)
    let misses = Atomic<Int>(0)
    let evictions = Atomic<Int>(0)
    let entries = Atomic<Int>(0)
    let bytes = Atomic<Int>(0)
}

/// One loop's cached files, by path below the root: least recently used out first, once
/// their bytes pass `capacity`. Its loop's thread only.
final class FileCache: @unchecked Sendable {
    // Safe to send: like `CachedFile`, only its own loop's thread touches it.
    private(set) var entries: [String: CachedFile] = [:]
    private var bytes = 0
    private var mostRecent: CachedFile?
    private var leastRecent: CachedFile?
    let capacity: Int
    let counters = FileCacheCounters()

    init(capacity: Int) {
        self.capacity = capacity
    }

    /// The entry for `path`, now the most recently used; nil when not cached.
    func lookUp(_ path: String) -> CachedFile? {
        guard let entry = entries[path] else { return nil }
        if entry !== mostRecent {
            unlink(entry)
            pushFront(entry)
        }
        return entry
    }

    /// Caches `entry` (replacing any entry for `path`), evicting the least recently used
    /// until it fits. One bigger than the whole capacity is not cached.
    func insert(_ entry: CachedFile, for path: String) {
        guard entry.bytes.count <= capacity else { return }
        if let old = entries[path] { remove(path, old) }
        while bytes + entry.bytes.count > capacity, let victim = leastRecent {
            remove(victim.path, victim)
            counters.evictions.add(1, ordering: .relaxed)
        }
        entry.path = path
        entries[path] = entry
        pushFront(entry)
        bytes += entry.bytes.count
        publish()
    }

    func remove(_ path: String, _ entry: CachedFile) {
        guard entries[path] === entry else { return }
        entries.removeValue(forKey: path)
        unlink(entry)
        bytes -= entry.bytes.count
        publish()
    }

    private func publish() {
        counters.entries.store(entries.count, ordering: .relaxed)
        counters.bytes.store(bytes, ordering: .relaxed)
    }

    private func pushFront(_ entry: CachedFile) {
        entry.older = mostRecent
        mostRecent?.newer = entry
        mostRecent = entry
        if leastRecent == nil { leastRecent = entry }
    }

    private func unlink(_ entry: CachedFile) {
        if let newer = entry.newer { newer.older = entry.older } else if mostRecent === entry { mostRecent = entry.older }
        if let older = entry.older { older.newer = entry.newer } else if leastRecent === entry { leastRecent = entry.newer }
        entry.newer = nil
        entry.older = nil
    }

    deinit {
        // The list's links are strong both ways: break them so the entries are freed.
        while let entry = mostRecent { unlink(entry) }
    }
}
