/* uvcffi UDP: see uvc_udp.h. */
#include "uvc_udp.h"

#include "uvc_fdguard.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The largest UDP payload over IPv6 (65527) fits, so a datagram is never truncated. */
#define UVC_UDP_MAX_DATAGRAM 65536

typedef struct {
    uvc_base_t base;
    uv_udp_t udp;
} uvc_udp_t;

/* A queued datagram: the request, how many bytes it carries, then the bytes. */
typedef struct {
    uv_udp_send_t req;
    size_t len;
    char data[];
} uvc_udp_send_t;

static void udp_alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
    uvc_base_t *b = handle->data;
    uvc_loop_t *L = b->loop;
    (void)suggested;
    buf->base = L->arena + L->arena_used;
    /* Hand out room for the biggest datagram and its sender (each rounded up to a cache
     * line by uvc_arena_claim), or nothing: a datagram read into less would be cut.  With
     * nothing, libuv reports UV_ENOBUFS and the socket is read again on the next iteration
     * (the poll is level-triggered). */
    if (L->arena_size - L->arena_used >= UVC_UDP_MAX_DATAGRAM + UVC_SOCKADDR_SIZE + 128)
        buf->len = UVC_UDP_MAX_DATAGRAM;
    else
        buf->len = 0;
}

static void udp_recv_cb(uv_udp_t *udp, ssize_t nread, const uv_buf_t *buf,
                        const struct sockaddr *addr, unsigned flags) {
    uvc_base_t *b = udp->data;
    uvc_loop_t *L = b->loop;
    (void)flags;
    if (nread < 0) {
        /* Only a stray close reaches libuv's duplicate, and it leaves the socket's file open
         * (the caller's fd): epoll keeps reporting it under the closed number, where every
         * receive fails.  The handle has lost its fd: as a closed fd the guard meets.  (A
         * number reused by another socket is not seen here: that one's receives succeed.) */
        if ((nread == UV_EBADF || nread == UV_ENOTSOCK) && uvc_fdguard_lost(L, b, UV_EBADF))
            return;
        if (nread != UV_ENOBUFS)
            uvc_emit(L, UVC_EV_READ_ERROR, b->slot, nread, 0, 0);
        return;
    }
    if (addr == NULL)
        return; /* nothing (more) to read; an empty datagram comes with its sender */
    int64_t off = buf->base - L->arena;
    L->stats.bytes_read += (uint64_t)nread;
    uvc_arena_claim(L, (size_t)nread);
    char sa[UVC_SOCKADDR_SIZE];
    size_t salen = addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                : sizeof(struct sockaddr_in);
    memset(sa, 0, sizeof sa);
    memcpy(sa, addr, salen);
    /* alloc_cb kept room for it */
    int64_t sa_off = uvc_arena_put(L, sa, sizeof sa);
    uvc_emit(L, UVC_EV_UDP_RECV, b->slot, off, nread, sa_off);
}

static void udp_send_cb(uv_udp_send_t *req, int status) {
    uvc_udp_send_t *s = (uvc_udp_send_t *)req;
    uvc_base_t *b = req->handle->data;
    if (status == 0)
        b->loop->stats.bytes_written += s->len;
    uvc_emit(b->loop, UVC_EV_UDP_SEND, b->slot, status, (int64_t)s->len, 0);
    free(s);
}

int uvc_udp_open(uvc_loop_t *L, int fd) {
    /* libuv closes the fd it was given when the handle closes, while Python's socket object
     * closes its own whenever it is collected: each gets an fd of its own (the same socket),
     * so neither can ever close an fd number the other has meanwhile seen reused. */
    int dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dupfd < 0)
        return uv_translate_sys_error(errno);
    uvc_udp_t *h = uvc_handle_alloc(L, sizeof *h, offsetof(uvc_udp_t, udp));
    if (h == NULL) {
        close(dupfd);
        return UV_ENOMEM;
    }
    int r = uv_udp_init(&L->uv, &h->udp);
    if (r < 0) {
        close(dupfd);
        uvc_handle_discard(h);
        return r;
    }
    h->udp.data = h;
    /* uv_udp_open turns on SO_REUSEADDR (SO_REUSEPORT off Linux), which would let another
     * socket bind the same port and take its datagrams: asyncio never sets them unasked,
     * so put back what the socket had. */
    int reuseaddr = 0, reuseport = 0;
    socklen_t optlen = sizeof reuseaddr;
    getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuseaddr, &optlen);
#ifdef SO_REUSEPORT
    optlen = sizeof reuseport;
    getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &reuseport, &optlen);
#endif
    /* The duplicate may take the number of a handle whose fd was closed under it. */
    uvc_fdguard_claim(L, dupfd);
    r = uv_udp_open(&h->udp, dupfd);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuseaddr, sizeof reuseaddr);
#ifdef SO_REUSEPORT
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &reuseport, sizeof reuseport);
#endif
    if (r < 0) {
        /* libuv knows the handle now: it must go through uv_close (nobody owns the slot's
         * CLOSED event).  libuv did not take the fd. */
        close(dupfd);
        uv_close((uv_handle_t *)&h->udp, uvc_close_cb);
        return r;
    }
    /* Only a stray close reaches libuv's duplicate (a socket object closed twice, the number
     * taken by the duplicate in between); libuv would abort at the next epoll_ctl on it and
     * close the number with the handle, whoever has it by then (see uvc_fdguard.h). */
    uvc_fdguard_add_io(L, &h->base, &h->udp.io_watcher);
    return h->base.slot;
}

/* The UDP handle of a slot, or NULL if there is none or its fd was closed under it. */
static uv_udp_t *udp_of(uvc_loop_t *L, int slot) {
    uvc_base_t *b = uvc_slot_get(L, slot);
    if (b == NULL || b->handle->type != UV_UDP || b->faulted)
        return NULL;
    return (uv_udp_t *)b->handle;
}

int uvc_udp_recv(uvc_loop_t *L, int slot, int on) {
    uv_udp_t *udp = udp_of(L, slot);
    if (udp == NULL)
        return UV_EBADF;
    if (on)
        return uv_udp_recv_start(udp, udp_alloc_cb, udp_recv_cb);
    return uv_udp_recv_stop(udp);
}

int uvc_udp_send(uvc_loop_t *L, int slot, const char *data, size_t len, const char *addr,
                 int queued) {
    uv_udp_t *udp = udp_of(L, slot);
    if (udp == NULL)
        return UV_EBADF;
    struct sockaddr_storage ss;
    const struct sockaddr *sa = NULL;
    if (addr != NULL) {
        memcpy(&ss, addr, UVC_SOCKADDR_SIZE); /* Python's bytes need not be aligned */
        sa = (const struct sockaddr *)&ss;
    }
    /* uv_buf_t's length is an unsigned int and a datagram is one buffer: a longer one
     * would go out cut to its length modulo 2**32.  No UDP datagram is that big (IP caps
     * one at 64 KiB), and the kernel refuses any longer than that with EMSGSIZE, which is
     * the error here too, before any copy of it is made. */
    if (len > UINT_MAX)
        return UV_EMSGSIZE;
    uv_buf_t buf = uv_buf_init((char *)data, (unsigned int)len);
    int r;
    if (!queued) {
        /* Fails with UV_EAGAIN while earlier datagrams are queued, which keeps the order. */
        r = uv_udp_try_send(udp, &buf, 1, sa);
        if (r >= 0) {
            L->stats.bytes_written += len;
            return UVC_UDP_SENT;
        }
        if (r != UV_EAGAIN)
            return r;
    }
    uvc_udp_send_t *s = malloc(sizeof *s + len);
    if (s == NULL)
        return UV_ENOMEM;
    s->len = len;
    memcpy(s->data, data, len);
    buf = uv_buf_init(s->data, (unsigned int)len);
    r = uv_udp_send(&s->req, udp, &buf, 1, sa, udp_send_cb);
    if (r < 0) {
        free(s);
        return r;
    }
    return UVC_UDP_QUEUED;
}

int uvc_sockaddr_make(int family, const char *host, int port, unsigned int flowinfo,
                      unsigned int scope_id, char *out) {
    memset(out, 0, UVC_SOCKADDR_SIZE);
    /* uv_ip4_addr/uv_ip6_addr would keep the port's low 16 bits (70000 -> 4464): refuse
     * it instead.  Python checks it first, to raise what socket.sendto() raises. */
    if (port < 0 || port > 65535)
        return UV_EINVAL;
    if (family == AF_INET) {
        struct sockaddr_in sin;
        int r = uv_ip4_addr(host, port, &sin);
        if (r < 0)
            return r;
        memcpy(out, &sin, sizeof sin);
        return 0;
    }
    if (family == AF_INET6) {
        struct sockaddr_in6 sin6;
        int r = uv_ip6_addr(host, port, &sin6);
        if (r < 0)
            return r;
        sin6.sin6_flowinfo = htonl(flowinfo);
        if (scope_id != 0)
            sin6.sin6_scope_id = scope_id;
        memcpy(out, &sin6, sizeof sin6);
        return 0;
    }
    return UV_EAFNOSUPPORT;
}

int uvc_sockaddr_read(const char *sa, char *host, size_t hostlen, unsigned int *info) {
    struct sockaddr_storage ss;
    memcpy(&ss, sa, UVC_SOCKADDR_SIZE);
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        if (uv_ip4_name(sin, host, hostlen) < 0)
            return 0;
        info[0] = ntohs(sin->sin_port);
        info[1] = info[2] = 0;
        return AF_INET;
    }
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        /* inet_ntop, not uv_ip6_name's "%scope" form: Python gives the scope id apart */
        if (uv_inet_ntop(AF_INET6, &sin6->sin6_addr, host, hostlen) < 0)
            return 0;
        info[0] = ntohs(sin6->sin6_port);
        info[1] = ntohl(sin6->sin6_flowinfo);
        info[2] = sin6->sin6_scope_id;
        return AF_INET6;
    }
    return 0;
}
