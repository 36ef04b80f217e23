import Glibc

// Every clock read and time conversion in Chroma. Deadlines are nanoseconds on
// CLOCK_MONOTONIC, the clock libevent's precise timers use; libevent takes `timeval`s.

/// Nanoseconds on the monotonic clock (precise): timer deadlines.
@inline(__always) func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Nanoseconds on CLOCK_MONOTONIC_COARSE: a few milliseconds of resolution, plenty for
/// request deadlines and cache ages, at a fraction of the precise clock's cost.
@_spi(Engine) public func coarseMonotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now)
    return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
}

/// Seconds since the Unix epoch on CLOCK_REALTIME_COARSE: for a `Date` header remade once
/// a second.
@_spi(Engine) public func coarseRealtimeSeconds() -> Int {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME_COARSE, &now)
    return now.tv_sec
}

extension Duration {
    /// The duration in whole nanoseconds, or nil when negative or beyond UInt64.
    @_spi(Engine) public var chromaNanoseconds: UInt64? {
        let (seconds, attoseconds) = components
        guard seconds >= 0, attoseconds >= 0 else { return nil }
        let (s, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return nil }
        let (total, overflow2) = s.addingReportingOverflow(UInt64(attoseconds / 1_000_000_000))
        return overflow2 ? nil : total
    }

    /// The duration as a `timeval` (microseconds; finer parts are dropped).
    var timeval: Glibc.timeval {
        let (seconds, attoseconds) = components
        return Glibc.timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }
}

extension timeval {
    /// `nanoseconds` as a `timeval` (microseconds; finer parts are dropped).
    init(nanoseconds ns: UInt64) {
        self.init(tv_sec: Int(ns / 1_000_000_000), tv_usec: Int((ns % 1_000_000_000) / 1000))
    }
}
