/* uvcffi DNS: getaddrinfo and getnameinfo on libuv's thread pool.
 *
 * A lookup is a libuv request living in a slot.  Its completion is a UVC_EV_DNS event
 * (slot = request, a = status, b = bytes uvc_dns_take() will write); Python then calls
 * uvc_dns_take() once, which copies the packed result out and frees the request.
 *
 * Packed getaddrinfo result: b / UVC_AI_RECORD_SIZE records, then the canonical name of the
 * first entry (no terminator; empty when there is none) in what is left of the b bytes.
 * A record is int32 family, socktype, protocol; uint32 port, flowinfo, scope_id (native
 * byte order); then the numeric address text, NUL-padded to 48 bytes.
 * Packed getnameinfo result: host text, one NUL, service text.
 */
#ifndef UVC_DNS_H
#define UVC_DNS_H

#include "uvc_core.h"

/* cffi-begin */
enum {
    UVC_AI_RECORD_SIZE = 72
};

/* Start a getaddrinfo lookup (host or port may be NULL).  Returns the request's slot, or a
 * negative uv error: UV_EAI_NONAME (as the system resolver answers) for no host and no
 * port, an empty host, or a host libuv's IDNA conversion refuses. */
int uvc_getaddrinfo(uvc_loop_t *L, const char *host, const char *port,
                    int family, int socktype, int protocol, int flags);
/* Start a getnameinfo lookup of the address `addr` (4 bytes for AF_INET, 16 for AF_INET6,
 * as inet_pton gives it).  Returns the request's slot, or a negative uv error. */
int uvc_getnameinfo(uvc_loop_t *L, int family, const char *addr, int port,
                    unsigned int flowinfo, unsigned int scope_id, int flags);
/* Ask libuv to drop a lookup that has not started yet.  Its UVC_EV_DNS event still comes
 * (with UV_EAI_CANCELED when the cancel won). */
int uvc_dns_cancel(uvc_loop_t *L, int slot);
/* After the UVC_EV_DNS event: copy the packed result (at most cap bytes; out may be NULL
 * after an error) and free the request.  Returns the bytes written or a negative uv error. */
int64_t uvc_dns_take(uvc_loop_t *L, int slot, char *out, size_t cap);
/* The system EAI_* code a UV_EAI_* status stands for (0 if it is not a resolver error),
 * and the system's text for it. */
int uvc_gai_errno(int status);
const char *uvc_gai_strerror(int eai);
/* cffi-end */

#endif
