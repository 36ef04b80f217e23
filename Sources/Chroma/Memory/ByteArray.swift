/// Makes `[UInt8]` values whose bytes are written in place by a C call (a read, an
/// `evbuffer_remove`), about a third cheaper than `[UInt8](unsafeUninitializedCapacity:)`.
///
/// Why: that initializer allocates through a standard-library function that is not
/// inlinable, so it runs unspecialized and looks up the metadata of
/// `_ContiguousArrayStorage<UInt8>` in the runtime's generic cache on every call (about 350
/// instructions, more than `malloc` and `free` together). `reserveCapacity` on an empty
/// array allocates through code specialized in the caller, which uses a cached metadata
/// accessor; `append(contentsOf:)` then hands the reserved, uninitialized capacity to the
/// appended sequence's `_copyContents(initializing:)`, where the source writes its bytes.
/// Should a standard library ever append without calling it, `make` notices (nothing was
/// written, not even a count) and falls back to the initializer: slower, never wrong.
///
/// Threading: none of its own; the source runs on the calling thread, inside `make`.
@_spi(Engine) public enum ByteArray {
    /// A byte array of at most `count` bytes (`count` > 0): `source` writes into
    /// uninitialized memory of at least `count` bytes and returns how many it wrote, from 0
    /// to `count`. Called exactly once.
    @inlinable @inline(__always)
    public static func make<Source: ByteArraySource>(count: Int, _ source: Source) -> [UInt8] {
        // Capacity 0 would write the shared empty array's count: a race ThreadSanitizer reports.
        precondition(count > 0, "ByteArray.make: count must be positive")
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        var written = -1
        withUnsafeMutablePointer(to: &written) { report in
            bytes.append(contentsOf: ByteArrayFill(count: count, source: source, written: report))
        }
        guard written >= 0 else {
            return [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
                initialized = source.write(into: UnsafeMutableRawPointer(buffer.baseAddress!), count: count)
            }
        }
        return bytes
    }
}

/// What writes a `ByteArray`'s bytes: a value, not a closure, so that making the array
/// allocates nothing else (a closure kept for the appended sequence would be boxed).
@_spi(Engine) public protocol ByteArraySource {
    /// Writes up to `count` bytes at `start` (uninitialized memory) and returns how many,
    /// 0...`count`.
    func write(into start: UnsafeMutableRawPointer, count: Int) -> Int
}

/// The sequence `ByteArray.make` appends: it has no elements of its own to iterate, and
/// initializes the array's reserved capacity through its source instead.
/// (Not for use outside `make`: SPI only because `make` is inlined into its callers.)
@_spi(Engine) public struct ByteArrayFill<Source: ByteArraySource>: Sequence {
    public typealias Element = UInt8
    public typealias Iterator = EmptyCollection<UInt8>.Iterator
    @usableFromInline let count: Int
    @usableFromInline let source: Source
    /// Where the written count is reported (it stays -1 if `_copyContents` never ran).
    @usableFromInline let written: UnsafeMutablePointer<Int>

    @inlinable public init(count: Int, source: Source, written: UnsafeMutablePointer<Int>) {
        self.count = count
        self.source = source
        self.written = written
    }

    /// No elements: appending this sequence writes through `_copyContents` alone.
    @inlinable public func makeIterator() -> Iterator { Iterator() }

    /// Zero, so `append` trusts the count `_copyContents` returns and reserves nothing more.
    @inlinable public var underestimatedCount: Int { 0 }

    /// Has the source write into the array's reserved capacity.
    @inlinable public func _copyContents(initializing buffer: UnsafeMutableBufferPointer<UInt8>) -> (Iterator, Int) {
        precondition(buffer.count >= count, "ByteArray: less capacity than reserved")
        let n = source.write(into: UnsafeMutableRawPointer(buffer.baseAddress!), count: count)
        precondition(n >= 0 && n <= count, "ByteArraySource wrote \(n) of at most \(count) bytes")
        written.pointee = n
        return (Iterator(), n)
    }
}
