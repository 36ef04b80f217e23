// What the diagnostics need from C: a stack captured inside a signal handler, a crash
// report written with async-signal-safe calls only, and the table of async task sites both
// read. No Swift runs in any handler here.
#define _GNU_SOURCE
#include <errno.h>
#include <execinfo.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "CChroma.h"

// MARK: Stack capture

// One capture at a time (the watchdog serializes): the target thread's handler writes the
// frames here and then sets `capture_done` with a release store.
static void **capture_frames;
static struct chroma_chain *capture_chain;
static int capture_capacity;
static int capture_count;
static int capture_done;

int chroma_stall_signal(void) { return SIGRTMIN + 7; }

static void capture_handler(int sig, siginfo_t *info, void *context) {
    (void)sig; (void)info; (void)context;
    int saved = errno;
    void **frames = __atomic_load_n(&capture_frames, __ATOMIC_ACQUIRE);
    if (frames) {
        // backtrace() is safe here once libgcc's unwinder is loaded (done at install).
        capture_count = backtrace(frames, capture_capacity);
        // The running callback's chain lives while it runs, and this handler runs inside it.
        chroma_chain_of_this_thread(capture_chain);
        __atomic_store_n(&capture_done, 1, __ATOMIC_RELEASE);
    }
    errno = saved;
}

int chroma_install_stack_capture(void) {
    static int installed;
    if (__atomic_exchange_n(&installed, 1, __ATOMIC_ACQ_REL)) return 0;
    void *warm[4];
    // The first backtrace() loads the unwinder with dlopen (which allocates): never in a handler.
    (void)backtrace(warm, 4);
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_sigaction = capture_handler;
    action.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&action.sa_mask);
    return sigaction(chroma_stall_signal(), &action, NULL) == 0 ? 0 : errno;
}

int chroma_capture_stack(unsigned long thread, void **frames, int capacity, struct chroma_chain *chain, int timeout_ms) {
    chain->count = 0;
    capture_chain = chain;
    capture_capacity = capacity;
    capture_count = 0;
    __atomic_store_n(&capture_done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&capture_frames, frames, __ATOMIC_RELEASE);
    int result = -1;
    if (pthread_kill((pthread_t)thread, chroma_stall_signal()) == 0) {
        struct timespec step = { 0, 1000000 };
        for (int waited = 0; waited <= timeout_ms; waited++) {
            if (__atomic_load_n(&capture_done, __ATOMIC_ACQUIRE)) { result = capture_count; break; }
            nanosleep(&step, NULL);
        }
    }
    // A late handler finds no buffer and writes nothing.
    __atomic_store_n(&capture_frames, NULL, __ATOMIC_RELEASE);
    if (result < 0 && __atomic_load_n(&capture_done, __ATOMIC_ACQUIRE)) result = capture_count;
    return result;
}

char **chroma_frame_symbols(void *const *frames, int count) {
    return backtrace_symbols(frames, count);
}

void chroma_free_frame_symbols(char **symbols) { free(symbols); }

// MARK: Async task sites

// Tasks started by `Runtime.spawn`, with the site of the call: an open-addressed table of
// (task, site) pairs, written with compare-exchange and read without locks, so a signal
// handler can look a task up. A full table just leaves a task's site unknown.
#define TASK_SLOTS 4096
static uintptr_t task_keys[TASK_SLOTS];
static uint64_t task_sites[TASK_SLOTS];

static unsigned task_hash(uintptr_t task) { return (unsigned)((task >> 4) * 0x9E3779B1u) & (TASK_SLOTS - 1); }

int chroma_task_site_insert(const void *task, uint64_t site) {
    uintptr_t key = (uintptr_t)task;
    unsigned start = task_hash(key);
    for (unsigned i = 0; i < 64; i++) {
        unsigned slot = (start + i) & (TASK_SLOTS - 1);
        uintptr_t empty = 0;
        if (__atomic_compare_exchange_n(&task_keys[slot], &empty, key, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            __atomic_store_n(&task_sites[slot], site, __ATOMIC_RELEASE);
            return 1;
        }
    }
    return 0;
}

void chroma_task_site_remove(const void *task) {
    uintptr_t key = (uintptr_t)task;
    unsigned start = task_hash(key);
    for (unsigned i = 0; i < 64; i++) {
        unsigned slot = (start + i) & (TASK_SLOTS - 1);
        if (__atomic_load_n(&task_keys[slot], __ATOMIC_ACQUIRE) == key) {
            __atomic_store_n(&task_sites[slot], 0, __ATOMIC_RELAXED);
            __atomic_store_n(&task_keys[slot], 0, __ATOMIC_RELEASE);
            return;
        }
    }
}

uint64_t chroma_task_site(const void *task) {
    uintptr_t key = (uintptr_t)task;
    unsigned start = task_hash(key);
    for (unsigned i = 0; i < 64; i++) {
        unsigned slot = (start + i) & (TASK_SLOTS - 1);
        if (__atomic_load_n(&task_keys[slot], __ATOMIC_ACQUIRE) == key) return __atomic_load_n(&task_sites[slot], __ATOMIC_ACQUIRE);
    }
    return 0;
}

// MARK: Crash context

static _Thread_local int tls_loop_index = -1;
void chroma_set_loop_index(int index) { tls_loop_index = index; }

static const int fatal_signals[] = { SIGSEGV, SIGBUS, SIGILL, SIGTRAP, SIGFPE, SIGABRT };
#define FATAL_COUNT (sizeof(fatal_signals) / sizeof(fatal_signals[0]))
static struct sigaction previous_actions[FATAL_COUNT];

static void put(const char *text, size_t length) {
    while (length > 0) {
        ssize_t n = write(STDERR_FILENO, text, length);
        if (n <= 0) { if (n < 0 && errno == EINTR) continue; return; }
        text += n;
        length -= (size_t)n;
    }
}
static void put_string(const char *text) { put(text, strlen(text)); }
static void put_number(uint64_t value) {
    char digits[24];
    int i = sizeof(digits);
    do { digits[--i] = (char)('0' + value % 10); value /= 10; } while (value && i > 0);
    put(digits + i, sizeof(digits) - (size_t)i);
}

// One site word (see `EnqueueSite`): bits 0-47 the `#fileID` text (NUL-terminated static
// data), bits 48-62 the line; bit 63 marks an async task job, whose site is looked up.
static void put_site(uint64_t word) {
    if (word >> 63) word = chroma_task_site((const void *)(uintptr_t)(word & ((1ULL << 48) - 1)));
    uintptr_t text = (uintptr_t)(word & ((1ULL << 48) - 1));
    if (!text) { put_string("(unknown site)"); return; }
    put_string((const char *)text);
    put_string(":");
    put_number((word >> 48) & 0x7FFF);
}

static void crash_handler(int sig, siginfo_t *info, void *context) {
    struct chroma_thread_state *s = &chroma_tls_state;
    uint64_t color = __atomic_load_n(&s->color, __ATOMIC_RELAXED);
    if (color != UINT64_MAX && chroma_tls_loop) {
        put_string("\nchroma: fatal signal ");
        put_number((uint64_t)sig);
        put_string(" in a callback on loop ");
        put_number((uint64_t)(tls_loop_index < 0 ? 0 : tls_loop_index));
        put_string(", color ");
        put_number(color & ((1ULL << 62) - 1));
        put_string("\nchroma:   queued at ");
        put_site(__atomic_load_n(&s->site, __ATOMIC_RELAXED));
        put_string("\n");
        const struct chroma_chain *chain = s->chain;
        for (uint64_t i = 0; chain && i < chain->count && i < CHROMA_CHAIN_DEPTH; i++) {
            put_string("chroma:   by a callback queued at ");
            put_site(chain->sites[i]);
            put_string("\n");
        }
    }
    // Hand the signal on: to the handler that was there before, else the default action.
    for (size_t i = 0; i < FATAL_COUNT; i++) {
        if (fatal_signals[i] != sig) continue;
        struct sigaction *before = &previous_actions[i];
        if ((before->sa_flags & SA_SIGINFO) && before->sa_sigaction) {
            before->sa_sigaction(sig, info, context);
            return;
        }
        if (before->sa_handler != SIG_DFL && before->sa_handler != SIG_IGN && before->sa_handler) {
            before->sa_handler(sig);
            return;
        }
        signal(sig, SIG_DFL);
        // A fault returns to the faulting instruction, which faults again under the default
        // action; a raised signal (abort) must be raised again.
        if (info == NULL || info->si_code <= 0) raise(sig);
        return;
    }
}

int chroma_install_crash_context(void) {
    static int installed;
    if (__atomic_exchange_n(&installed, 1, __ATOMIC_ACQ_REL)) return 0;
    for (size_t i = 0; i < FATAL_COUNT; i++) {
        struct sigaction action;
        memset(&action, 0, sizeof(action));
        action.sa_sigaction = crash_handler;
        action.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&action.sa_mask);
        if (sigaction(fatal_signals[i], &action, &previous_actions[i]) != 0) return errno;
    }
    return 0;
}

static _Thread_local void *tls_alternate_stack;

int chroma_use_alternate_signal_stack(void) {
    stack_t current;
    if (sigaltstack(NULL, &current) == 0 && !(current.ss_flags & SS_DISABLE)) return 0;  // has one
    size_t size = 64 * 1024;
    void *memory = malloc(size);
    if (!memory) return ENOMEM;
    stack_t stack = { .ss_sp = memory, .ss_flags = 0, .ss_size = size };
    if (sigaltstack(&stack, NULL) != 0) { int error = errno; free(memory); return error; }
    tls_alternate_stack = memory;
    return 0;
}

void chroma_release_alternate_signal_stack(void) {
    if (!tls_alternate_stack) return;
    stack_t off = { .ss_sp = NULL, .ss_flags = SS_DISABLE, .ss_size = 0 };
    if (sigaltstack(&off, NULL) == 0) {
        free(tls_alternate_stack);
        tls_alternate_stack = NULL;
    }
}
