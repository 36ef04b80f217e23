#ifndef CHROMA_CLIBEVENT_OPENSSL_SHIM_H
#define CHROMA_CLIBEVENT_OPENSSL_SHIM_H
// System headers first, as in CLibevent's shim: event2/event-config.h defines _GNU_SOURCE.
#include <sys/types.h>
#include <sys/select.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

// Declared in event2/bufferevent.h, which CLibevent's module may own: this module's own copy.
static inline int chroma_tls_bev_close_on_free(void) { return BEV_OPT_CLOSE_ON_FREE; }

// OpenSSL's setters below are macros over SSL_CTX_ctrl, which Swift does not import.
static inline int chroma_ssl_ctx_set_min_tls12(SSL_CTX *ctx) {
    return (int)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
}
// Partial writes and a moving write buffer are what a bufferevent's chained output needs.
static inline void chroma_ssl_ctx_set_modes(SSL_CTX *ctx) {
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
}

#endif
