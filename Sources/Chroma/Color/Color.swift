import CChroma

/// A color, as in libasync-smp: callbacks of one color never overlap and run in the order
/// one thread queued them; callbacks of different colors may run in parallel.
///
/// Each color is run by one loop at a time, all of its work there, so serialization needs no
/// lock per color; which loop (and, with stealing on, when a color moves to an idle loop
/// between two of its callbacks), and which numbers are handed out fresh or reserved, is
/// decided in one place, `Placement`. Two colors on one loop also serialize with each other: that costs
/// parallelism, never correctness. `Color.main` (0) is the default everywhere, so a program
/// that never names a color runs everything on loop 0, one callback at a time.
///
/// Colors you write by hand (`Color(7)`) are small numbers; `Runtime.makeColor()` hands out
/// fresh ones far above them, so the two never collide.
public struct Color: Hashable, Sendable, CustomStringConvertible {
    /// The color's number.
    public let rawValue: UInt64

    /// A color with the given number, below 2⁶² (Chroma keeps the top two bits of a queued
    /// job's color word to tell its three kinds of job apart; see `Job`).
    public init(_ rawValue: UInt64) {
        precondition(rawValue < 1 << 62, "Color(\(rawValue)): colors are below 2^62")
        self.rawValue = rawValue
    }

    @usableFromInline init(unchecked rawValue: UInt64) { self.rawValue = rawValue }

    /// The default color: everything uncolored serializes on it.
    public static let main = Color(unchecked: 0)

    /// The color of the callback running on this thread, or `nil` outside Chroma callbacks.
    @inlinable public static var current: Color? {
        let raw = currentRawValue
        return raw == noneRawValue ? nil : Color(unchecked: raw)
    }

    /// The running callback's color number, or `noneRawValue` outside callbacks. The
    /// thread-local may hold a queued job's whole tagged word (see `Callback.run(job:)`);
    /// the tag bits are cleared here. (`noneRawValue` has both tag bits set, which no job
    /// has, so it cannot be mistaken for a job's word.)
    @inlinable @inline(__always) static var currentRawValue: UInt64 {
        let raw = chroma_current_color()
        return raw == noneRawValue ? raw : raw & Job.colorMask
    }

    /// `Color(n)`.
    public var description: String { "Color(\(rawValue))" }

    @usableFromInline static var noneRawValue: UInt64 { .max }
}
