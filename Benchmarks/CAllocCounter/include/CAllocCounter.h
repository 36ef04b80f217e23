#ifndef CHROMA_CALLOCCOUNTER_H
#define CHROMA_CALLOCCOUNTER_H
#include <stdint.h>
/// malloc calls made so far by the calling thread (the linking binary interposes malloc).
uint64_t chroma_bench_thread_mallocs(void);
/// 1 when malloc is interposed and counted; 0 in a sanitizer build, where the sanitizer
/// owns malloc and the count stays 0.
int chroma_alloc_counter_is_active(void);
#endif
