import CChroma

/// Where a callback was queued: the `#fileID` and `#line` of the `execute`, `schedule`,
/// `watch`, `onSignal`, `blocking`, `files` or `spawn` call that queued it. Every such call
/// takes them as default arguments, so recording a site costs one constant word per job and
/// no allocation: the file name is the compiler's static text.
///
/// Stall reports, crash reports and `Runtime.currentSite` name callbacks by their sites.
///
/// The word: bits 0–47 the address of the NUL-terminated `#fileID` text (static data, which
/// lies below 2⁴⁸ in user space on the platforms Chroma runs on), bits 48–62 the line
/// (lines past 32,767 read as 32,767), and bit 63 marking an async task's job, whose site
/// is looked up in the table `spawn` fills. Zero: unknown.
public struct EnqueueSite: Sendable, Hashable, CustomStringConvertible {
    /// The packed word (see the type's comment).
    @usableFromInline let word: UInt64

    @usableFromInline static var addressMask: UInt64 { (1 << 48) - 1 }
    @usableFromInline static var maxLine: UInt { 0x7FFF }
    @usableFromInline static var taskBit: UInt64 { 1 << 63 }

    /// The site of the caller (or of `fileID`/`line`).
    @inlinable @inline(__always)
    public init(fileID: StaticString = #fileID, line: UInt = #line) {
        word = EnqueueSite.word(fileID, line)
    }

    @usableFromInline init(word: UInt64) { self.word = word }

    /// The word for `fileID` and `line`: for a literal, a constant address and a shift.
    @inlinable @inline(__always)
    static func word(_ fileID: StaticString, _ line: UInt) -> UInt64 {
        guard fileID.hasPointerRepresentation else { return 0 }
        return UInt64(UInt(bitPattern: fileID.utf8Start)) | UInt64(min(line, maxLine)) &<< 48
    }

    /// A site word with an async task's job resolved to the site of its `spawn` (0 when the
    /// task was not spawned by Chroma, or has ended).
    static func resolved(_ word: UInt64) -> UInt64 {
        guard word & taskBit != 0 else { return word }
        return chroma_task_site(UnsafeRawPointer(bitPattern: UInt(word & addressMask)))
    }

    /// The site `word` names, or nil for an unknown one.
    static func named(_ word: UInt64) -> EnqueueSite? {
        let site = resolved(word)
        return site & addressMask == 0 ? nil : EnqueueSite(word: site)
    }

    /// The `#fileID` of the call, such as `MyApp/Server.swift`.
    public var fileID: String {
        guard let text = UnsafePointer<CChar>(bitPattern: UInt(word & EnqueueSite.addressMask)) else { return "?" }
        return String(cString: text)
    }

    /// The line of the call.
    public var line: Int { Int((word &>> 48) & UInt64(EnqueueSite.maxLine)) }

    /// `File.swift:42`, with the module: `MyApp/Server.swift:42`.
    public var description: String { "\(fileID):\(line)" }
}
