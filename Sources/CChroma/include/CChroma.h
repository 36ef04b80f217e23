#ifndef CHROMA_CCHROMA_H
#define CHROMA_CCHROMA_H
#include <stdint.h>

// The loop and color whose callback is running on this thread. Real C thread-locals: one
// variable per thread, defined once in CChroma.c (a `static` one in a header would be a
// different variable in every translation unit).
extern _Thread_local void *chroma_tls_loop;
extern _Thread_local uint64_t chroma_tls_color;
// Non-zero on a blocking-pool worker thread.
extern _Thread_local int chroma_tls_pool_worker;
// Passes of callbacks ended on this thread (see `chroma_end_pass`).
extern _Thread_local uint64_t chroma_tls_passes;

static inline void *chroma_current_loop(void) { return chroma_tls_loop; }
static inline void chroma_set_current_loop(void *loop) { chroma_tls_loop = loop; }
static inline uint64_t chroma_current_color(void) { return chroma_tls_color; }
static inline void chroma_set_current_color(uint64_t color) { chroma_tls_color = color; }
// Ends a pass of callbacks (a drain's batch of jobs, or one callback libevent made; Swift's
// `Callback` calls it): no color is current any more, and the pass count moves on, so work
// budgeted per pass (reads served from the page cache on the loop) sees a new pass begin.
static inline void chroma_end_pass(void) {
    chroma_tls_color = UINT64_MAX;
    chroma_tls_passes++;
}
// How many passes of callbacks have ended on this thread; changes when a new one begins.
static inline uint64_t chroma_current_pass(void) { return chroma_tls_passes; }
static inline int chroma_is_pool_worker(void) { return chroma_tls_pool_worker; }
static inline void chroma_set_pool_worker(int on) { chroma_tls_pool_worker = on; }

// A spin-wait hint (x86 `pause`, Arm `yield`): a loop polling a word another core is about to
// write lets that core's hyperthread sibling run, and leaves the spin without a
// memory-order misprediction. Swift has no spelling for it.
static inline void chroma_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/// Pins the calling thread to `cpu` (CPU_SET is a macro Swift cannot call). Returns 0 or an errno.
int chroma_pin_current_thread(int cpu);

/// Names the calling thread (pthread_setname_np needs _GNU_SOURCE). Returns 0 or an errno.
int chroma_name_current_thread(const char *name);

/// Turns Nagle's algorithm off on TCP socket `fd`, so a small answer leaves at once. Returns
/// 0 or an errno. (In C because Swift sees IPPROTO_TCP only through whichever Clang module
/// first included <netinet/in.h>, which made Swift files that name it fail to build now
/// and then.)
int chroma_tcp_nodelay(int fd);

/// The errno epoll refuses `fd` with (EPERM for regular files and directories), or 0 when
/// it accepts it; tried on a private epoll instance. (Swift's Glibc has no sys/epoll.h.)
int chroma_epoll_refusal(int fd);

/// `preadv2(2)` with `RWF_NOWAIT`: reads what the page cache holds of `count` bytes at
/// `offset` into `buffer`, then of `extraCount` bytes into `extra` (a second buffer, to
/// see past an expected end in the same call; may be empty), and fails with EAGAIN rather
/// than wait for the device. Returns the bytes read, or -errno. (Swift's Glibc lacks
/// `preadv2` and `RWF_NOWAIT`, which need _GNU_SOURCE.)
long chroma_pread_nowait(int fd, void *buffer, unsigned long count, void *extra, unsigned long extraCount,
                         int64_t offset);

/// `openat2(2)` of `path` (relative to the working directory) with `flags` and
/// `RESOLVE_CACHED`: fails with EAGAIN when the lookup would need the device. Returns the
/// descriptor, or -errno (ENOSYS before Linux 5.6, EINVAL before 5.12).
int chroma_open_cached(const char *path, int flags);

/// 1 when the kernel knows `RWF_NOWAIT` (an empty pipe read with it fails with EAGAIN, or,
/// on kernels whose pipes refuse it, a read of the running executable with it succeeds),
/// else 0. A few system calls, once per process.
int chroma_pread_nowait_supported(void);

/// Drops `fd`'s pages from the page cache (`posix_fadvise(POSIX_FADV_DONTNEED)`; dirty
/// pages are written back first only if `fdatasync` ran). Returns 0 or an errno.
int chroma_drop_cached_pages(int fd);

#endif
