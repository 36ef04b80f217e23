#define _GNU_SOURCE
#include <sys/epoll.h>
#include <errno.h>
#include <unistd.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include "CChroma.h"

_Thread_local void *chroma_tls_loop = 0;
_Thread_local uint64_t chroma_tls_color = UINT64_MAX;
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
