// Raw-C libevent baseline for `chroma-bench dispatch`, built by `make bench` with cc.
//
//   c-dispatch local THREADS SECONDS   one event_base per thread, one EV_PERSIST event
//                                      re-activated from its own callback
//   c-dispatch cross LOOPS SECONDS     one producer thread per loop posting {fn, arg} items
//                                      into a mutex-guarded mailbox; only the push that finds
//                                      it empty calls event_active; the loop swaps the array
//   c-dispatch captured THREADS SECONDS  one event_base per thread and a chain of callbacks
//                                      that carry state: each callback frees its malloc'd
//                                      {state pointer, counter} item and queues a new one on
//                                      the loop's run queue (a ring of {fn, arg}, drained by
//                                      one event, at most 4096 items a pass)
//
// Prints one line: "ops_per_s <float>".
#include <sys/types.h>
#include <sys/time.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int stop_flag;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

// ---- local ----
struct local_loop {
    struct event_base *base;
    struct event *ev;
    uint64_t count;
    char pad[64];
};

static void local_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd; (void)what;
    struct local_loop *l = arg;
    l->count++;
    if (atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        event_base_loopbreak(l->base);
        return;
    }
    event_active(l->ev, 0, 0);
}

static void *local_thread(void *arg) {
    struct local_loop *l = arg;
    l->base = event_base_new();
    l->ev = event_new(l->base, -1, EV_PERSIST, local_cb, l);
    event_add(l->ev, NULL);
    event_active(l->ev, 0, 0);
    event_base_loop(l->base, EVLOOP_NO_EXIT_ON_EMPTY);
    event_free(l->ev);
    event_base_free(l->base);
    return NULL;
}

// ---- cross ----
struct item { void (*fn)(void *); void *arg; };

struct cross_loop {
    struct event_base *base;
    struct event *ev;
    pthread_mutex_t lock;
    struct item *items, *spare;
    size_t count, cap, spare_cap;
    uint64_t consumed;            // loop thread only
    _Atomic uint64_t published;   // consumed, published every 1024 items for flow control
    atomic_int ready;
    char pad[64];
};

static void count_item(void *arg) {
    struct cross_loop *l = arg;
    if ((++l->consumed & 1023) == 0)
        atomic_store_explicit(&l->published, l->consumed, memory_order_relaxed);
}

static void cross_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd; (void)what;
    struct cross_loop *l = arg;
    for (;;) {
        pthread_mutex_lock(&l->lock);
        size_t n = l->count;
        if (n == 0) { pthread_mutex_unlock(&l->lock); break; }
        struct item *batch = l->items; size_t batch_cap = l->cap;
        l->items = l->spare; l->cap = l->spare_cap;
        l->spare = batch; l->spare_cap = batch_cap;
        l->count = 0;
        pthread_mutex_unlock(&l->lock);
        for (size_t i = 0; i < n; i++) batch[i].fn(batch[i].arg);
    }
    atomic_store_explicit(&l->published, l->consumed, memory_order_relaxed);
}

static void cross_push(struct cross_loop *l, struct item it) {
    pthread_mutex_lock(&l->lock);
    if (l->count == l->cap) {
        l->cap *= 2;
        l->items = realloc(l->items, l->cap * sizeof(struct item));
    }
    l->items[l->count++] = it;
    int was_empty = l->count == 1;
    pthread_mutex_unlock(&l->lock);
    if (was_empty) event_active(l->ev, 0, 0);
}

static void *cross_loop_thread(void *arg) {
    struct cross_loop *l = arg;
    event_base_loop(l->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

struct producer { struct cross_loop *l; uint64_t posted; };

static void *producer_thread(void *arg) {
    struct producer *p = arg;
    struct item it = { count_item, p->l };
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        for (int i = 0; i < 1024; i++) cross_push(p->l, it);
        p->posted += 1024;
        // Flow control: at most 256k items outstanding, as chroma-bench does.
        while (p->posted - atomic_load_explicit(&p->l->published, memory_order_relaxed) > (1 << 18))
            sched_yield();
    }
    return NULL;
}

// ---- captured ----
// What a C program writes for a callback with state: a heap item per post pointing at the
// chain's state, with a counter; the loop's own FIFO of {fn, arg}, touched only by its thread.
#define CAPTURED_BUDGET 4096

struct captured_loop;

struct chain {
    struct captured_loop *loop;
    uint64_t handled;
};

struct step {
    struct chain *chain;
    uint64_t n;
};

struct captured_loop {
    struct event_base *base;
    struct event *ev;
    struct item *ring;
    size_t mask, head, tail;      // head and tail grow; restart at 0 whenever the ring empties
    int draining;
    struct chain chain;
    char pad[64];
};

static void captured_push(struct captured_loop *l, struct item it) {
    if (l->tail - l->head > l->mask) {
        size_t cap = (l->mask + 1) * 2, n = l->tail - l->head;
        struct item *ring = malloc(cap * sizeof *ring);
        for (size_t i = 0; i < n; i++) ring[i] = l->ring[(l->head + i) & l->mask];
        free(l->ring);
        l->ring = ring; l->mask = cap - 1; l->head = 0; l->tail = n;
    }
    l->ring[l->tail++ & l->mask] = it;
    // A push from inside the drain is run by that drain; only the first push from outside wakes it.
    if (!l->draining && l->tail - l->head == 1) event_active(l->ev, 0, 0);
}

static void captured_step(void *arg) {
    struct step *s = arg;
    struct chain *c = s->chain;
    uint64_t n = s->n;
    free(s);
    c->handled = n + 1;
    if (atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        event_base_loopbreak(c->loop->base);
        return;
    }
    struct step *next = malloc(sizeof *next);
    next->chain = c;
    next->n = n + 1;
    captured_push(c->loop, (struct item){ captured_step, next });
}

static void captured_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd; (void)what;
    struct captured_loop *l = arg;
    l->draining = 1;
    for (int budget = CAPTURED_BUDGET; budget > 0 && l->head != l->tail; budget--) {
        struct item it = l->ring[l->head++ & l->mask];
        if (l->head == l->tail) l->head = l->tail = 0;
        it.fn(it.arg);
    }
    l->draining = 0;
    // Work left after the budget: run it after libevent's next pass.
    if (l->head != l->tail) event_active(l->ev, 0, 0);
}

static void *captured_thread(void *arg) {
    struct captured_loop *l = arg;
    l->base = event_base_new();
    l->ev = event_new(l->base, -1, EV_PERSIST, captured_cb, l);
    event_add(l->ev, NULL);
    l->mask = 1023;
    l->ring = malloc((l->mask + 1) * sizeof *l->ring);
    l->chain.loop = l;
    struct step *first = malloc(sizeof *first);
    first->chain = &l->chain;
    first->n = 0;
    captured_push(l, (struct item){ captured_step, first });
    event_base_loop(l->base, EVLOOP_NO_EXIT_ON_EMPTY);
    while (l->head != l->tail) free(l->ring[l->head++ & l->mask].arg);  // steps left unrun
    free(l->ring);
    event_free(l->ev);
    event_base_free(l->base);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s local|cross|captured THREADS SECONDS\n", argv[0]); return 2; }
    int n = atoi(argv[2]);
    double seconds = atof(argv[3]);
    evthread_use_pthreads();
    double start, elapsed;
    uint64_t total = 0;
    if (strcmp(argv[1], "local") == 0) {
        struct local_loop *loops = calloc(n, sizeof *loops);
        pthread_t *t = calloc(n, sizeof *t);
        start = now_s();
        for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, local_thread, &loops[i]);
        usleep((useconds_t)(seconds * 1e6));
        atomic_store(&stop_flag, 1);
        for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
        elapsed = now_s() - start;
        for (int i = 0; i < n; i++) total += loops[i].count;
    } else if (strcmp(argv[1], "captured") == 0) {
        struct captured_loop *loops = calloc(n, sizeof *loops);
        pthread_t *t = calloc(n, sizeof *t);
        start = now_s();
        for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, captured_thread, &loops[i]);
        usleep((useconds_t)(seconds * 1e6));
        atomic_store(&stop_flag, 1);
        for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
        elapsed = now_s() - start;
        for (int i = 0; i < n; i++) total += loops[i].chain.handled;
    } else if (strcmp(argv[1], "cross") == 0) {
        struct cross_loop *loops = calloc(n, sizeof *loops);
        pthread_t *t = calloc(n, sizeof *t), *pt = calloc(n, sizeof *pt);
        struct producer *ps = calloc(n, sizeof *ps);
        for (int i = 0; i < n; i++) {
            struct cross_loop *l = &loops[i];
            pthread_mutex_init(&l->lock, NULL);
            l->cap = l->spare_cap = 1024;
            l->items = malloc(l->cap * sizeof(struct item));
            l->spare = malloc(l->spare_cap * sizeof(struct item));
            l->base = event_base_new();
            l->ev = event_new(l->base, -1, EV_PERSIST, cross_cb, l);
            event_add(l->ev, NULL);
            pthread_create(&t[i], NULL, cross_loop_thread, l);
        }
        start = now_s();
        for (int i = 0; i < n; i++) { ps[i].l = &loops[i]; pthread_create(&pt[i], NULL, producer_thread, &ps[i]); }
        usleep((useconds_t)(seconds * 1e6));
        atomic_store(&stop_flag, 1);
        for (int i = 0; i < n; i++) pthread_join(pt[i], NULL);
        // Wait for every posted item to be consumed, then stop the loops.
        for (int i = 0; i < n; i++) {
            while (atomic_load_explicit(&loops[i].published, memory_order_relaxed) < ps[i].posted) {
                event_active(loops[i].ev, 0, 0);
                sched_yield();
            }
        }
        elapsed = now_s() - start;
        for (int i = 0; i < n; i++) {
            total += ps[i].posted;
            event_base_loopbreak(loops[i].base);
            pthread_join(t[i], NULL);
        }
    } else {
        fprintf(stderr, "unknown mode %s\n", argv[1]);
        return 2;
    }
    printf("ops_per_s %.0f\n", total / elapsed);
    return 0;
}
