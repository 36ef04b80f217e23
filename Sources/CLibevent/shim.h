#ifndef CHROMA_CLIBEVENT_SHIM_H
#define CHROMA_CLIBEVENT_SHIM_H
// System headers first: event2/event-config.h defines _GNU_SOURCE, which renames fd_set's
// fields; any target that also imports Foundation or Dispatch then fails to build.
#include <sys/types.h>
#include <sys/select.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

// EV_* flags are macros Swift imports as Int32; events take short.
static inline short chroma_ev_read(void) { return EV_READ; }
static inline short chroma_ev_write(void) { return EV_WRITE; }
static inline short chroma_ev_persist(void) { return EV_PERSIST; }
static inline short chroma_ev_signal(void) { return EV_SIGNAL; }

// bufferevent event bits (macros).
static inline short chroma_bev_writing(void) { return BEV_EVENT_WRITING; }
static inline short chroma_bev_eof(void) { return BEV_EVENT_EOF; }
static inline short chroma_bev_error(void) { return BEV_EVENT_ERROR; }
static inline short chroma_bev_timeout(void) { return BEV_EVENT_TIMEOUT; }
static inline short chroma_bev_connected(void) { return BEV_EVENT_CONNECTED; }

// evconnlistener options (macros).
static inline unsigned chroma_lev_options(void) {
    return LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_DISABLED;
}

// evhttp header lists are TAILQs (macros): walk them through these.
static inline struct evkeyval *chroma_evkeyval_first(struct evkeyvalq *headers) { return headers->tqh_first; }
static inline struct evkeyval *chroma_evkeyval_next(struct evkeyval *header) { return header->next.tqe_next; }


#endif
