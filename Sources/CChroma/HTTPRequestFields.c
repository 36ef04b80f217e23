// What Swift would read of an evhttp request slowly or not at all, kept in C so Swift never
// sees the structs (to Swift, a request stays an opaque pointer): the HTTP version (no
// accessor in libevent 2.1) and one pass over the input headers for the conditional and
// range headers (from Swift, each absent header is a lookup plus a C string made from a
// Swift one, on every file request).
#include <strings.h>
#include <sys/queue.h>
#include <sys/types.h>
#include <sys/time.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>
#include "CChroma.h"

int chroma_http_request_version(const void *request) {
    const struct evhttp_request *r = request;
    return r->major * 10 + r->minor;
}

int chroma_http_request_conditions(const void *request) {
    const struct evhttp_request *r = request;
    int found = 0;
    const struct evkeyval *header;
    TAILQ_FOREACH(header, r->input_headers, next) {
        const char *key = header->key;
        if ((key[0] == 'I' || key[0] == 'i') && (key[1] == 'F' || key[1] == 'f') && key[2] == '-') {
            found |= CHROMA_HTTP_HAS_IF;
        } else if (strcasecmp(key, "Range") == 0) {
            found |= CHROMA_HTTP_HAS_RANGE;
        }
    }
    return found;
}
