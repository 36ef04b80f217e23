// Interposes malloc in chroma-bench and the test binary, counting calls per thread, so the
// dispatch scenario can report allocations per callback without a profiler and the
// allocation tests can hold the hot paths to a budget. The count is a plain thread-local:
// no atomics, so it costs one increment per allocation. Under a sanitizer, which owns
// malloc, nothing is interposed and the counter reports itself inactive.
#include <stddef.h>
#include <stdint.h>
#include "CAllocCounter.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CHROMA_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CHROMA_SANITIZED 1
#endif
#endif

static _Thread_local uint64_t mallocs;

#ifndef CHROMA_SANITIZED
extern void *__libc_malloc(size_t size);

void *malloc(size_t size) {
    mallocs++;
    return __libc_malloc(size);
}

int chroma_alloc_counter_is_active(void) { return 1; }
#else
int chroma_alloc_counter_is_active(void) { return 0; }
#endif

uint64_t chroma_bench_thread_mallocs(void) { return mallocs; }
