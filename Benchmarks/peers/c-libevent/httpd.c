// Raw-C libevent evhttp server, the peer for `chroma-bench http`, built by `make peers`.
//
//   c-httpd PORT THREADS ROOT
//
// One event_base + evhttp per thread, each bound to its own evconnlistener on 127.0.0.1:PORT
// (SO_REUSEPORT, so the kernel spreads connections over the threads). GET /hello answers
// "Hello, World!"; any other GET serves the file under ROOT with sendfile (403 for a path
// with "..", 404 for a missing or non-regular file). Prints one line once every thread
// listens; SIGINT or SIGTERM stops every loop and exits 0.
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char hello[] = "Hello, World!";

static int port;
static const char *root;
static size_t root_len;

struct worker {
    pthread_t thread;
    struct event_base *base;
    struct evhttp *http;
};

static void hello_cb(struct evhttp_request *req, void *ctx) {
    (void)ctx;
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
        evhttp_send_error(req, 405, NULL);
        return;
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
    // The body is a constant: reference it instead of copying it; evhttp adds Content-Length.
    evbuffer_add_reference(evhttp_request_get_output_buffer(req), hello, sizeof hello - 1, NULL, NULL);
    evhttp_send_reply(req, 200, "OK", NULL);
}

static void file_cb(struct evhttp_request *req, void *ctx) {
    (void)ctx;
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
        evhttp_send_error(req, 405, NULL);
        return;
    }
    const char *raw = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (raw == NULL || raw[0] != '/') {
        evhttp_send_error(req, 400, NULL);
        return;
    }
    // Judge the decoded path, so "%2e%2e" counts as ".." and an embedded NUL is refused.
    size_t len;
    char *path = evhttp_uridecode(raw, 0, &len);
    if (path == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    int code = 0;
    char file[PATH_MAX];
    if (strstr(path, "..") != NULL) code = 403;
    else if (len != strlen(path)) code = 400;
    else if (root_len + len + 1 > sizeof file) code = 414;
    else {
        memcpy(file, root, root_len);
        memcpy(file + root_len, path, len + 1);
    }
    free(path);
    if (code != 0) {
        evhttp_send_error(req, code, NULL);
        return;
    }

    int fd = open(file, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int missing = fd < 0 && (errno == ENOENT || errno == ENOTDIR);
        if (fd >= 0) close(fd);
        evhttp_send_error(req, fd < 0 && !missing ? 403 : 404, NULL);
        return;
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/octet-stream");
    if (st.st_size == 0) close(fd);
    // evbuffer_add_file owns fd from here on (closes it, even on failure) and sends it with
    // sendfile(2) when the output is a socket.
    else if (evbuffer_add_file(evhttp_request_get_output_buffer(req), fd, 0, st.st_size) != 0) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evhttp_send_reply(req, 200, "OK", NULL);
}

static void *thread_main(void *arg) {
    struct worker *w = arg;
    event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

// Runs on the calling thread; the loop thread starts only after its listener is bound.
static void worker_start(struct worker *w) {
    // The same libevent configuration as Chroma's loops: epoll interest changes batched per
    // loop iteration (evhttp toggles read and write interest around every request).
    struct event_config *config = event_config_new();
    event_config_set_flag(config, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    w->base = event_base_new_with_config(config);
    event_config_free(config);
    w->http = w->base ? evhttp_new(w->base) : NULL;
    if (!w->http) { fprintf(stderr, "c-httpd: event_base_new/evhttp_new failed\n"); exit(1); }
    evhttp_set_cb(w->http, "/hello", hello_cb, NULL);
    evhttp_set_gencb(w->http, file_cb, NULL);

    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = inet_addr("127.0.0.1");
    struct evconnlistener *l = evconnlistener_new_bind(w->base, NULL, NULL,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT, 1024, (struct sockaddr *)&sin, sizeof sin);
    if (!l) { perror("c-httpd: evconnlistener_new_bind"); exit(1); }
    // evhttp_bind_listener takes over the accept callback, so set TCP_NODELAY on the listening
    // socket instead: Linux copies it to every accepted socket.
    int one = 1;
    setsockopt(evconnlistener_get_fd(l), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!evhttp_bind_listener(w->http, l)) { fprintf(stderr, "c-httpd: evhttp_bind_listener failed\n"); exit(1); }

    if (pthread_create(&w->thread, NULL, thread_main, w) != 0) { perror("c-httpd: pthread_create"); exit(1); }
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s PORT THREADS ROOT\n", argv[0]); return 2; }
    port = atoi(argv[1]);
    int threads = atoi(argv[2]);
    if (port <= 0 || port > 65535 || threads <= 0) { fprintf(stderr, "usage: %s PORT THREADS ROOT\n", argv[0]); return 2; }
    root = argv[3];
    root_len = strlen(root);
    while (root_len > 1 && root[root_len - 1] == '/') root_len--;  // the request path brings its own '/'

    // Block the stop signals in every thread (the mask is inherited); main takes them with sigwait.
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    evthread_use_pthreads();  // before any base: event_base_loopbreak below crosses threads
    struct worker *workers = calloc(threads, sizeof *workers);
    for (int i = 0; i < threads; i++) worker_start(&workers[i]);
    printf("c-httpd listening on port %d (%d threads)\n", port, threads);
    fflush(stdout);

    int sig;
    sigwait(&stop, &sig);
    for (int i = 0; i < threads; i++) event_base_loopbreak(workers[i].base);
    for (int i = 0; i < threads; i++) {
        pthread_join(workers[i].thread, NULL);
        evhttp_free(workers[i].http);  // closes its listener (LEV_OPT_CLOSE_ON_FREE) and connections
        event_base_free(workers[i].base);
    }
    free(workers);
    return 0;
}
