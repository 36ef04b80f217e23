// Raw-C libevent line echo server, the peer for `chroma-bench echo`, built by `make bench`.
//
//   c-echo PORT THREADS
//
// One event_base per thread, each with its own evconnlistener on PORT (SO_REUSEPORT), a
// bufferevent per connection, lines echoed with evbuffer_readln. Prints "listening PORT"
// once every thread listens; runs until killed.
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void read_cb(struct bufferevent *bev, void *ctx) {
    (void)ctx;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n;
    char *line;
    while ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF)) != NULL) {
        line[n] = '\n';  // readln's buffer has room for the NUL it wrote
        bufferevent_write(bev, line, n + 1);
        free(line);
    }
}

static void event_cb(struct bufferevent *bev, short what, void *ctx) {
    (void)ctx;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) bufferevent_free(bev);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *a, int len, void *ctx) {
    (void)a; (void)len; (void)ctx;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct bufferevent *bev = bufferevent_socket_new(evconnlistener_get_base(l), fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(bev, read_cb, NULL, event_cb, NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static int port;
static pthread_barrier_t ready;

static void *thread_main(void *arg) {
    (void)arg;
    struct event_base *base = event_base_new();
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = inet_addr("127.0.0.1");
    struct evconnlistener *l = evconnlistener_new_bind(base, accept_cb, NULL,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT, 1024, (struct sockaddr *)&sin, sizeof sin);
    if (!l) { perror("evconnlistener_new_bind"); exit(1); }
    pthread_barrier_wait(&ready);
    event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s PORT THREADS\n", argv[0]); return 2; }
    port = atoi(argv[1]);
    int threads = atoi(argv[2]);
    evthread_use_pthreads();
    pthread_barrier_init(&ready, NULL, threads + 1);
    for (int i = 0; i < threads; i++) { pthread_t t; pthread_create(&t, NULL, thread_main, NULL); }
    pthread_barrier_wait(&ready);
    printf("listening %d\n", port);
    fflush(stdout);
    pause();
    return 0;
}
