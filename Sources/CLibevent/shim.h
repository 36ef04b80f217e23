#ifndef CHROMA_CLIBEVENT_SHIM_H
#define CHROMA_CLIBEVENT_SHIM_H
// System headers first: event2/event-config.h defines _GNU_SOURCE, which renames fd_set's
// fields; any target that also imports Foundation or Dispatch then fails to build.
#include <sys/types.h>
#include <sys/select.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <event2/event.h>
#include <event2/thread.h>

// EV_* flags are macros Swift imports as Int32; events take short.
static inline short chroma_ev_read(void) { return EV_READ; }
static inline short chroma_ev_write(void) { return EV_WRITE; }
static inline short chroma_ev_persist(void) { return EV_PERSIST; }
static inline short chroma_ev_signal(void) { return EV_SIGNAL; }
static inline short chroma_ev_timeout(void) { return EV_TIMEOUT; }

#endif
