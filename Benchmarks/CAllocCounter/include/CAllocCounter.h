#ifndef CHROMA_CALLOCCOUNTER_H
#define CHROMA_CALLOCCOUNTER_H
#include <stdint.h>
/// malloc calls made so far by the calling thread (chroma-bench interposes malloc).
uint64_t chroma_bench_thread_mallocs(void);
#endif
