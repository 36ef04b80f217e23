#ifndef CHROMA_CCHROMA_H
#define CHROMA_CCHROMA_H
#include <stdint.h>

// What a thread's running callback is, in one thread-local block that other threads may read
// (the stall watchdog, through `chroma_thread_state_address`) and a fatal-signal handler reads
// on its own thread. Fields other threads read are accessed with relaxed atomic builtins: plain
// moves on the hot path, and no data race for the sanitizers.
//   color   the running callback's color word (a job's tagged word), UINT64_MAX outside callbacks
//   site    the running callback's enqueue site word (see `EnqueueSite`), 0 when unknown
//   starts  callbacks started on this thread: the watchdog's progress mark and a counter
//   passes  passes of callbacks ended (see `chroma_end_pass`); this thread only
//   chain   with chains on, the running callback's chain (see `struct chroma_chain`), in
//           memory that lives while the callback runs (its job record, or the stack of the
//           code running it); NULL when it has none. Read only on this thread: by the jobs
//           it queues, and by signal handlers (the crash handler, the watchdog's capture).
#define CHROMA_CHAIN_DEPTH 8
// A chain as a job keeps it (Swift's `Chain`): the sites that led to it, parent first;
// `sites` past `count` are undefined.
struct chroma_chain {
    uint64_t count;
    uint64_t sites[CHROMA_CHAIN_DEPTH];
};
struct chroma_thread_state {
    uint64_t color;
    uint64_t site;
    uint64_t starts;
    uint64_t passes;
    const struct chroma_chain *chain;
    // With chains on: this thread's free list of chained-job records (see Swift's
    // `ChainedJob`) and its length; this thread only. Here, so that a chained post and run
    // reach them from the block they already address.
    void *chain_free;
    long chain_free_count;
};

// Real C thread-locals: one variable per thread, defined once in CChroma.c (a `static` one in
// a header would be a different variable in every translation unit).
extern _Thread_local void *chroma_tls_loop;
extern _Thread_local struct chroma_thread_state chroma_tls_state;
// Non-zero on a blocking-pool worker thread.
extern _Thread_local int chroma_tls_pool_worker;
static inline void *chroma_chain_free_list(void) { return chroma_tls_state.chain_free; }
static inline long chroma_chain_free_count(void) { return chroma_tls_state.chain_free_count; }
static inline void chroma_set_chain_free_list(void *head, long count) {
    chroma_tls_state.chain_free = head;
    chroma_tls_state.chain_free_count = count;
}

static inline void *chroma_current_loop(void) { return chroma_tls_loop; }
static inline void chroma_set_current_loop(void *loop) { chroma_tls_loop = loop; }
static inline uint64_t chroma_current_color(void) { return __atomic_load_n(&chroma_tls_state.color, __ATOMIC_RELAXED); }
static inline void chroma_set_current_color(uint64_t color) { __atomic_store_n(&chroma_tls_state.color, color, __ATOMIC_RELAXED); }
static inline uint64_t chroma_current_site(void) { return __atomic_load_n(&chroma_tls_state.site, __ATOMIC_RELAXED); }
static inline void chroma_set_current_site(uint64_t site) { __atomic_store_n(&chroma_tls_state.site, site, __ATOMIC_RELAXED); }
// A callback starts: its color and site become current, and the start count moves on (a
// relaxed load and store, which compile to one add: only this thread writes it).
static inline void chroma_begin_callback(uint64_t color, uint64_t site) {
    __atomic_store_n(&chroma_tls_state.color, color, __ATOMIC_RELAXED);
    __atomic_store_n(&chroma_tls_state.site, site, __ATOMIC_RELAXED);
    __atomic_store_n(&chroma_tls_state.starts, __atomic_load_n(&chroma_tls_state.starts, __ATOMIC_RELAXED) + 1,
                     __ATOMIC_RELAXED);
}
// Ends a pass of callbacks (a drain's batch of jobs, or one callback libevent made; Swift's
// `Callback` calls it): no color is current any more, and the pass count moves on, so work
// budgeted per pass (reads served from the page cache on the loop) sees a new pass begin.
static inline void chroma_end_pass(void) {
    __atomic_store_n(&chroma_tls_state.color, UINT64_MAX, __ATOMIC_RELAXED);
    chroma_tls_state.passes++;
}
// How many passes of callbacks have ended on this thread; changes when a new one begins.
static inline uint64_t chroma_current_pass(void) { return chroma_tls_state.passes; }
// Callbacks started on this thread so far.
static inline uint64_t chroma_current_starts(void) { return __atomic_load_n(&chroma_tls_state.starts, __ATOMIC_RELAXED); }
// The calling thread's state block, for other threads to read while this thread lives.
static inline struct chroma_thread_state *chroma_thread_state_address(void) { return &chroma_tls_state; }
// Another thread's fields, read with relaxed loads.
static inline uint64_t chroma_state_color(const struct chroma_thread_state *s) { return __atomic_load_n(&s->color, __ATOMIC_RELAXED); }
static inline uint64_t chroma_state_site(const struct chroma_thread_state *s) { return __atomic_load_n(&s->site, __ATOMIC_RELAXED); }
static inline uint64_t chroma_state_starts(const struct chroma_thread_state *s) { return __atomic_load_n(&s->starts, __ATOMIC_RELAXED); }
uint64_t chroma_task_site(const void *task);

// The chain of a job this thread queues now: the running callback's site (an async task's
// resolved to the site of its `spawn`), then the running callback's chain, cut at the depth.
// Empty outside callbacks or under a callback of unknown site.
static inline void chroma_chain_for_child(struct chroma_chain *out) {
    struct chroma_thread_state *s = &chroma_tls_state;
    uint64_t parent = s->site;
    if (s->color == UINT64_MAX) parent = 0;
    if (parent >> 63) parent = chroma_task_site((const void *)(uintptr_t)(parent & ((1ull << 48) - 1)));
    if (parent == 0) {
        out->count = 0;
        return;
    }
    out->sites[0] = parent;
    const struct chroma_chain *chain = s->chain;
    if (!chain) {
        out->count = 1;
        return;
    }
    // All seven words, whatever the count (the ones past it are undefined either way): a
    // fixed-size copy is a few vector moves, a counted loop a branch per site.
    __builtin_memcpy(&out->sites[1], chain->sites, sizeof(uint64_t) * (CHROMA_CHAIN_DEPTH - 1));
    out->count = 1 + (chain->count < CHROMA_CHAIN_DEPTH - 1 ? chain->count : CHROMA_CHAIN_DEPTH - 1);
}
// Makes `chain` this thread's while a chained callback runs; returns the one it replaced,
// for `chroma_chain_restore` (a chained job run inside another callback puts the enclosing
// callback's back).
static inline const struct chroma_chain *chroma_chain_install(const struct chroma_chain *chain) {
    const struct chroma_chain *previous = chroma_tls_state.chain;
    __atomic_store_n(&chroma_tls_state.chain, chain, __ATOMIC_RELAXED);
    return previous;
}
static inline void chroma_chain_restore(const struct chroma_chain *previous) {
    __atomic_store_n(&chroma_tls_state.chain, previous, __ATOMIC_RELAXED);
}
// This thread's chain, copied into `out`.
static inline void chroma_chain_of_this_thread(struct chroma_chain *out) {
    const struct chroma_chain *chain = chroma_tls_state.chain;
    uint64_t n = chain ? chain->count : 0;
    if (n > CHROMA_CHAIN_DEPTH) n = CHROMA_CHAIN_DEPTH;
    for (uint64_t i = 0; i < n; i++) out->sites[i] = chain->sites[i];
    out->count = n;
}

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

// MARK: Diagnostics (CChroma/Diagnostics.c)

// The signal the stall watchdog sends a stalled loop thread to capture its stack
// (SIGRTMIN + 7: a real-time signal nothing else in the process is expected to use).
int chroma_stall_signal(void);

// Installs the capture handler (once per process; loads the unwinder first, so the
// handler itself never allocates). Returns 0 or an errno.
int chroma_install_stack_capture(void);

// Asks thread `thread` (a pthread_t) to capture its stack into `frames` (at most `capacity`
// return addresses) and its running callback's chain into `chain`, then waits up to
// `timeout_ms` for it. Returns the frames captured, or -1 when the thread did not answer in
// time (it is inside a system call that blocks signals, say). One capture at a time per
// process: the caller serializes.
int chroma_capture_stack(unsigned long thread, void **frames, int capacity, struct chroma_chain *chain, int timeout_ms);

// The frames as text (backtrace_symbols: one malloc'd block, freed with
// chroma_free_frame_symbols); NULL when out of memory. Not for signal handlers.
char **chroma_frame_symbols(void *const *frames, int count);
void chroma_free_frame_symbols(char **symbols);

// Installs fatal-signal handlers (SIGSEGV, SIGBUS, SIGILL, SIGTRAP, SIGFPE, SIGABRT) that,
// on a thread running a Chroma callback, write the callback's color, loop, enqueue site and
// chain to stderr with async-signal-safe writes, then hand the signal to the handler that
// was there before (Swift's backtracer, say) or to the default action. Once per process.
int chroma_install_crash_context(void);

// Gives the calling thread an alternate signal stack, so the crash handler can report a stack
// overflow too. Loop threads call it at start. Returns 0 or an errno.
int chroma_use_alternate_signal_stack(void);

// Drops the alternate signal stack `chroma_use_alternate_signal_stack` gave this thread.
void chroma_release_alternate_signal_stack(void);

// The sites of running async tasks (`Runtime.spawn`), by task address, readable from signal
// handlers. Insert returns 0 when the table is full (the task's site stays unknown).
int chroma_task_site_insert(const void *task, uint64_t site);
void chroma_task_site_remove(const void *task);
uint64_t chroma_task_site(const void *task);

// Sets the calling loop thread's index, for the crash handler's report.
void chroma_set_loop_index(int index);

// An evhttp request's HTTP version as major * 10 + minor (11 for HTTP/1.1). `request` is a
// `struct evhttp_request *`; loop thread, while the request lives.
int chroma_http_request_version(const void *request);

// Which of the headers a file route looks at an evhttp request carries, in one pass over its
// input headers: CHROMA_HTTP_HAS_IF for any `If-…` header (the conditional ones and
// `If-Range`), CHROMA_HTTP_HAS_RANGE for `Range`. Same rules as above.
#define CHROMA_HTTP_HAS_IF 1
#define CHROMA_HTTP_HAS_RANGE 2
int chroma_http_request_conditions(const void *request);

#endif
