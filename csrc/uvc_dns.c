/* uvcffi DNS: see uvc_dns.h for the contract with Python. */
#define _GNU_SOURCE /* EAI_ADDRFAMILY, EAI_NODATA, EAI_CANCELED are GNU extensions */
#include "uvc_dns.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define HOST_TEXT 48 /* INET6_ADDRSTRLEN (46) rounded up */

typedef struct {
    int32_t family, socktype, protocol;
    uint32_t port, flowinfo, scope_id;
    char host[HOST_TEXT];
} ai_record_t;

_Static_assert(sizeof(ai_record_t) == UVC_AI_RECORD_SIZE, "record layout is part of the ABI");

typedef struct {
    uvc_base_t base;
    union {
        uv_req_t any;
        uv_getaddrinfo_t ai;
        uv_getnameinfo_t ni;
    } req;
    int is_nameinfo;
    int status;
    struct addrinfo *res; /* getaddrinfo: owned until uvc_dns_take() */
} dns_req_t;

static dns_req_t *dns_get(uvc_loop_t *L, int slot) {
    uvc_base_t *b = uvc_slot_get(L, slot);
    return (dns_req_t *)b;
}

static int64_t addrinfo_size(const struct addrinfo *res) {
    int64_t n = 0;
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
            n += UVC_AI_RECORD_SIZE;
    }
    if (res != NULL && res->ai_canonname != NULL)
        n += (int64_t)strlen(res->ai_canonname);
    return n;
}

static void getaddrinfo_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    dns_req_t *r = req->data;
    /* Completed while uvc_loop_close runs: nobody can take it now (it frees r itself). */
    if (r->base.loop->closed) { uv_freeaddrinfo(res); return; }
    r->status = status;
    r->res = res;
    uvc_emit(r->base.loop, UVC_EV_DNS, r->base.slot, status, status < 0 ? 0 : addrinfo_size(res), 0);
}

static void getnameinfo_cb(uv_getnameinfo_t *req, int status, const char *host, const char *service) {
    dns_req_t *r = req->data;
    int64_t n = 0;
    r->status = status;
    if (status == 0)
        n = (int64_t)(strlen(req->host) + 1 + strlen(req->service));
    uvc_emit(r->base.loop, UVC_EV_DNS, r->base.slot, status, n, 0);
}

static dns_req_t *dns_new(uvc_loop_t *L) {
    /* `data` is the first member of every uv request, as it is of every uv handle, so the
     * core's slot allocator can point it back at the struct. */
    return uvc_handle_alloc(L, sizeof(dns_req_t), offsetof(dns_req_t, req));
}

int uvc_getaddrinfo(uvc_loop_t *L, const char *host, const char *port,
                    int family, int socktype, int protocol, int flags) {
    struct addrinfo hints;
    if ((host == NULL && port == NULL) || (host != NULL && host[0] == '\0'))
        return UV_EAI_NONAME;
    dns_req_t *r = dns_new(L);
    if (r == NULL)
        return UV_ENOMEM;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = family;
    hints.ai_socktype = socktype;
    hints.ai_protocol = protocol;
    hints.ai_flags = flags;
    int err = uv_getaddrinfo(&L->uv, &r->req.ai, getaddrinfo_cb, host, port, &hints);
    if (err < 0) {
        uvc_handle_discard(r);
        return err == UV_EINVAL ? UV_EAI_NONAME : err;
    }
    return r->base.slot;
}

int uvc_getnameinfo(uvc_loop_t *L, int family, const char *addr, int port,
                    unsigned int flowinfo, unsigned int scope_id, int flags) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        memcpy(&sin->sin_addr, addr, 4);
    } else if (family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        sin6->sin6_flowinfo = htonl(flowinfo);
        sin6->sin6_scope_id = scope_id;
        memcpy(&sin6->sin6_addr, addr, 16);
    } else {
        return UV_EAI_FAMILY;
    }
    dns_req_t *r = dns_new(L);
    if (r == NULL)
        return UV_ENOMEM;
    r->is_nameinfo = 1;
    int err = uv_getnameinfo(&L->uv, &r->req.ni, getnameinfo_cb, (struct sockaddr *)&ss, flags);
    if (err < 0) {
        uvc_handle_discard(r);
        return err;
    }
    return r->base.slot;
}

int uvc_dns_cancel(uvc_loop_t *L, int slot) {
    dns_req_t *r = dns_get(L, slot);
    if (r == NULL)
        return UV_EBADF;
    return uv_cancel(&r->req.any);
}

static int64_t pack_addrinfo(const struct addrinfo *res, char *out, size_t cap) {
    size_t used = 0;
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        ai_record_t rec;
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue; /* getaddrinfo gives no other families for IP lookups */
        if (cap - used < sizeof rec)
            return UV_ENOBUFS;
        memset(&rec, 0, sizeof rec);
        rec.family = ai->ai_family;
        rec.socktype = ai->ai_socktype;
        rec.protocol = ai->ai_protocol;
        if (ai->ai_family == AF_INET) {
            const struct sockaddr_in *sin = (const struct sockaddr_in *)ai->ai_addr;
            rec.port = ntohs(sin->sin_port);
            inet_ntop(AF_INET, &sin->sin_addr, rec.host, sizeof rec.host);
        } else {
            const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ai->ai_addr;
            rec.port = ntohs(sin6->sin6_port);
            rec.flowinfo = ntohl(sin6->sin6_flowinfo);
            rec.scope_id = sin6->sin6_scope_id;
            inet_ntop(AF_INET6, &sin6->sin6_addr, rec.host, sizeof rec.host);
        }
        memcpy(out + used, &rec, sizeof rec);
        used += sizeof rec;
    }
    if (res != NULL && res->ai_canonname != NULL) {
        size_t n = strlen(res->ai_canonname);
        if (cap - used < n)
            return UV_ENOBUFS;
        memcpy(out + used, res->ai_canonname, n);
        used += n;
    }
    return (int64_t)used;
}

int64_t uvc_dns_take(uvc_loop_t *L, int slot, char *out, size_t cap) {
    dns_req_t *r = dns_get(L, slot);
    int64_t n = 0;
    if (r == NULL)
        return UV_EBADF;
    if (r->status == 0 && out != NULL) {
        if (r->is_nameinfo) {
            size_t h = strlen(r->req.ni.host), s = strlen(r->req.ni.service);
            if (h + 1 + s > cap) {
                n = UV_ENOBUFS;
            } else {
                memcpy(out, r->req.ni.host, h);
                out[h] = '\0';
                memcpy(out + h + 1, r->req.ni.service, s);
                n = (int64_t)(h + 1 + s);
            }
        } else {
            n = pack_addrinfo(r->res, out, cap);
        }
    }
    if (r->res != NULL)
        uv_freeaddrinfo(r->res);
    uvc_handle_discard(r);
    return n;
}

int uvc_gai_errno(int status) {
    switch (status) {
#ifdef EAI_ADDRFAMILY
    case UV_EAI_ADDRFAMILY: return EAI_ADDRFAMILY;
#endif
    case UV_EAI_AGAIN: return EAI_AGAIN;
    case UV_EAI_BADFLAGS: return EAI_BADFLAGS;
#ifdef EAI_CANCELED
    case UV_EAI_CANCELED: return EAI_CANCELED;
#endif
    case UV_EAI_FAIL: return EAI_FAIL;
    case UV_EAI_FAMILY: return EAI_FAMILY;
    case UV_EAI_MEMORY: return EAI_MEMORY;
#ifdef EAI_NODATA
    case UV_EAI_NODATA: return EAI_NODATA;
#endif
    case UV_EAI_NONAME: return EAI_NONAME;
    case UV_EAI_OVERFLOW: return EAI_OVERFLOW;
    case UV_EAI_SERVICE: return EAI_SERVICE;
    case UV_EAI_SOCKTYPE: return EAI_SOCKTYPE;
    default: return 0;
    }
}

const char *uvc_gai_strerror(int eai) { return gai_strerror(eai); }
