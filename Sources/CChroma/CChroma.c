#define _GNU_SOURCE
#include <sys/epoll.h>
#include <errno.h>
#include <unistd.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include "CChroma.h"

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
// linux/openat2.h's `struct open_how` and flag, spelled here so older headers build.
struct chroma_open_how {
    uint64_t flags;
    uint64_t mode;
    uint64_t resolve;
};
#define CHROMA_RESOLVE_CACHED 0x20

_Thread_local void *chroma_tls_loop = 0;
_Thread_local struct chroma_thread_state chroma_tls_state = { .color = UINT64_MAX };
_Thread_local int chroma_tls_pool_worker = 0;

int chroma_pin_current_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int chroma_name_current_thread(const char *name) {
    return pthread_setname_np(pthread_self(), name);
}

int chroma_epoll_refusal(int fd) {
    int probe = epoll_create1(EPOLL_CLOEXEC);
    if (probe < 0) return 0;  // cannot tell: let libevent find out
    struct epoll_event event = { .events = EPOLLIN };
    int refusal = epoll_ctl(probe, EPOLL_CTL_ADD, fd, &event) == 0 ? 0 : errno;
    close(probe);
    return refusal;
}

int chroma_tcp_nodelay(int fd) {
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0 ? 0 : errno;
}

long chroma_pread_nowait(int fd, void *buffer, unsigned long count, void *extra, unsigned long extraCount,
                         int64_t offset) {
    struct iovec parts[2] = { { buffer, count }, { extra, extraCount } };
#if defined(__LP64__) && defined(SYS_preadv2)
    // The system call itself: glibc's `preadv2` is a cancellation point and pays for that
    // bookkeeping on every call. (On 64-bit kernels the offset's high half is unused.)
    long n = syscall(SYS_preadv2, fd, parts, extraCount > 0 ? 2 : 1, (long)offset, 0L, RWF_NOWAIT);
#else
    ssize_t n = preadv2(fd, parts, extraCount > 0 ? 2 : 1, offset, RWF_NOWAIT);
#endif
    return n < 0 ? -errno : n;
}

int chroma_open_cached(const char *path, int flags) {
    struct chroma_open_how how = { .flags = (uint64_t)(unsigned)flags, .mode = 0, .resolve = CHROMA_RESOLVE_CACHED };
    long fd = syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof(how));
    return fd < 0 ? -errno : (int)fd;
}

int chroma_pread_nowait_supported(void) {
    int ends[2];
    if (pipe2(ends, O_CLOEXEC | O_NONBLOCK) != 0) return 0;
    char byte;
    struct iovec part = { &byte, 1 };
    // Offset -1: the pipe's current position (a pipe has no other).
    ssize_t n = preadv2(ends[0], &part, 1, -1, RWF_NOWAIT);
    int supported = n < 0 && errno == EAGAIN;
    close(ends[0]);
    close(ends[1]);
    if (supported) return 1;
    // Pipes take RWF_NOWAIT only from Linux 5.8; before that they refuse it while regular
    // files take it. The running executable is a regular file on a real file system.
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    n = preadv2(fd, &part, 1, 0, RWF_NOWAIT);
    supported = n >= 0 || errno == EAGAIN;
    close(fd);
    return supported;
}

int chroma_drop_cached_pages(int fd) {
    return posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
}
