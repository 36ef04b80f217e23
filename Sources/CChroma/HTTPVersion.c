// The one evhttp request field with no accessor in libevent 2.1: the request's HTTP
// version, for access logs. Kept in C so Swift never sees the struct (to Swift, a request
// stays an opaque pointer).
#include <sys/types.h>
#include <sys/time.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include "CChroma.h"

int chroma_http_request_version(const void *request) {
    const struct evhttp_request *r = request;
    return r->major * 10 + r->minor;
}
