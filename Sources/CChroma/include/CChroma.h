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

static inline void *chroma_current_loop(void) { return chroma_tls_loop; }
static inline void chroma_set_current_loop(void *loop) { chroma_tls_loop = loop; }
static inline uint64_t chroma_current_color(void) { return chroma_tls_color; }
static inline void chroma_set_current_color(uint64_t color) { chroma_tls_color = color; }
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

#endif
