import Glibc

/// A mutex over `pthread_mutex_t`.
///
/// Not `Synchronization.Mutex`: on Linux that locks with a raw futex ThreadSanitizer cannot
/// see, so correct code guarded by it draws false race reports under `--sanitize=thread`.
final class Lock: @unchecked Sendable {
    // Safe to share: the pthread mutex is the synchronization; the pointer never changes.
    fileprivate let mutex: UnsafeMutablePointer<pthread_mutex_t>

    /// With `adaptive`, a thread that finds the lock held spins briefly before sleeping in
    /// the kernel (`PTHREAD_MUTEX_ADAPTIVE_NP`): right for locks held for a few
    /// instructions by threads on other cores, such as the blocking pool's queue lock.
    init(adaptive: Bool = false) {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        var attributes = pthread_mutexattr_t()
        pthread_mutexattr_init(&attributes)
        if adaptive { pthread_mutexattr_settype(&attributes, Int32(PTHREAD_MUTEX_ADAPTIVE_NP)) }
        let rc = pthread_mutex_init(mutex, &attributes)
        pthread_mutexattr_destroy(&attributes)
        precondition(rc == 0, "pthread_mutex_init failed: \(rc)")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    @inline(__always) func lock() { pthread_mutex_lock(mutex) }
    @inline(__always) func unlock() { pthread_mutex_unlock(mutex) }

    /// Runs `body` with the lock held.
    @inline(__always) func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}

/// A condition variable used with one `Lock` (`pthread_cond_t`, which ThreadSanitizer sees).
/// `signal()` wakes one waiter: the blocking pool gives each worker its own condition so a
/// new job wakes exactly the worker chosen for it.
final class Condition: @unchecked Sendable {
    // Safe to share: a pthread condition variable; the pointer never changes.
    private let cond: UnsafeMutablePointer<pthread_cond_t>

    /// `monotonic`: timed waits measure the monotonic clock (wall-clock jumps do not
    /// shorten or stretch them).
    init(monotonic: Bool = false) {
        cond = .allocate(capacity: 1)
        cond.initialize(to: pthread_cond_t())
        if monotonic {
            var attributes = pthread_condattr_t()
            pthread_condattr_init(&attributes)
            pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
            pthread_cond_init(cond, &attributes)
            pthread_condattr_destroy(&attributes)
        } else {
            pthread_cond_init(cond, nil)
        }
    }

    deinit {
        pthread_cond_destroy(cond)
        cond.deallocate()
    }

    /// Waits for a signal or until the monotonic clock reads `deadline` (ns; the condition
    /// must be `monotonic`), with `lock` held as for `wait`.
    func wait(_ lock: Lock, untilMonotonic deadline: UInt64) {
        var time = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        _ = pthread_cond_timedwait(cond, lock.mutex, &time)
    }

    /// Waits for a signal; `lock` must be held, and is held again on return. Wakeups may be
    /// spurious: wait in a loop on the guarded state.
    func wait(_ lock: Lock) { pthread_cond_wait(cond, lock.mutex) }
    func signal() { pthread_cond_signal(cond) }
    func broadcast() { pthread_cond_broadcast(cond) }
}

/// A one-shot latch that blocks threads until `open()`; a pthread condition variable, so
/// ThreadSanitizer sees the happens-before edge.
final class Latch: @unchecked Sendable {
    // Safe to share: `isOpen` and `whenOpen` are only read or written with `mutex` held.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let cond: UnsafeMutablePointer<pthread_cond_t>
    private var isOpen = false
    private var whenOpen: [@Sendable () -> Void] = []

    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        cond = .allocate(capacity: 1)
        cond.initialize(to: pthread_cond_t())
        pthread_cond_init(cond, nil)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    func open() {
        pthread_mutex_lock(mutex)
        isOpen = true
        let waiting = whenOpen
        whenOpen = []
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
        for body in waiting { body() }
    }

    /// Runs `body` once the latch is open: now, on this thread, if it is; else on the
    /// thread that opens it, after the latch's lock is released.
    func onOpen(_ body: @escaping @Sendable () -> Void) {
        pthread_mutex_lock(mutex)
        if isOpen {
            pthread_mutex_unlock(mutex)
            body()
            return
        }
        whenOpen.append(body)
        pthread_mutex_unlock(mutex)
    }

    func wait() {
        pthread_mutex_lock(mutex)
        while !isOpen { pthread_cond_wait(cond, mutex) }
        pthread_mutex_unlock(mutex)
    }
}
