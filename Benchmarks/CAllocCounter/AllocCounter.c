// Interposes malloc in chroma-bench only, counting calls per thread, so the dispatch
// scenario can report allocations per callback without a profiler. The count is a plain
// thread-local: no atomics, so it costs one increment per allocation.
#include <stddef.h>
#include <stdint.h>
#include "CAllocCounter.h"

extern void *__libc_malloc(size_t size);
static _Thread_local uint64_t mallocs;

void *malloc(size_t size) {
    mallocs++;
    return __libc_malloc(size);
}

uint64_t chroma_bench_thread_mallocs(void) { return mallocs; }
