/* uvcffi stream handles: see uvc_stream.h. */
#define _GNU_SOURCE /* accept4 */
#include "uvc_stream.h"
#include "uvc_fdguard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Held writes (see uvc_write in uvc_stream.h).  asyncio's default high-water mark; the
 * pieces a stream holds at most (one more write sends them); the loop's hold buffer at most. */
#define UVC_HOLD_LIMIT 65536
#define UVC_HOLD_SEGS 8
#define UVC_HOLD_BUF_MAX (4u << 20)

typedef struct {
    uvc_base_t base;
    /* The error a write met, if it can have been the connection's own (see
     * remember_write_error); 0 while none has. */
    int write_error;
    uint32_t hold_limit;
    uint32_t held;                /* bytes held, in nsegs pieces of L->hold_buf */
    int nsegs;
    int listed;                   /* in L->hold_slots */
    int64_t unreported;           /* held bytes a flush queued, not handed over yet */
    int error;                    /* a flush outside uvc_run_once failed: told at the next */
    int64_t write_poll;           /* the iteration (L->polls) of its last held-mode write */
    int writes;                   /* its writes in that iteration (counted up to 2) */
    int multi;                    /* it wrote more than once in its last writing iteration */
    uint32_t seg_off[UVC_HOLD_SEGS], seg_len[UVC_HOLD_SEGS];
    /* An accepted TCP connection's peer address, as accept4 gave it (peer_len 0: none).
     * getpeername() fails once the peer has reset the connection, and a server asks for
     * the address after that too (its log line of the failed request): asyncio has it from
     * accept(), so it is kept here, at no syscall's cost. */
    socklen_t peer_len;
    struct sockaddr_in6 peer;     /* an AF_INET address fits too */
    union {
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } u;
} uvc_stream_t;

/* uv_buf_t's length is an unsigned int, which one buffer of a write of 4 GiB or more would
 * keep modulo 2**32 (losing the rest): libuv gets such a write as several buffers of at
 * most this many bytes. */
#define UVC_WRITE_CHUNK ((size_t)1 << 30)
/* Buffers a queued write describes without a malloc: up to 8 GiB. */
#define UVC_WRITE_BUFS 8

/* A queued write owns a copy of the bytes that did not go out at once. */
typedef struct {
    uv_write_t req;
    size_t len;
    char data[];
} uvc_write_req_t;

static uv_stream_t *stream_of(uvc_loop_t *L, int slot) {
    uvc_base_t *b = uvc_slot_get(L, slot);
    if (b == NULL)
        return NULL;
    uv_handle_type t = b->handle->type;
    if ((t != UV_TCP && t != UV_NAMED_PIPE && t != UV_TTY) || b->faulted)
        return NULL;
    return (uv_stream_t *)b->handle;
}

/* A socket's pending error (a reset: ECONNRESET; ETIMEDOUT, ...) is reported once, to
 * whichever call comes first, and a reset has shut the socket down: a read after a write
 * took the error finds 0, which looks like the peer's EOF.  libuv writes after it reads in
 * the same pass (uv__stream_io), but in read-into mode its read is only a readiness report,
 * and our read comes later, from Python: the write takes the reset first.  asyncio (and
 * libuv's own reads) would read ConnectionResetError there, with no EOF before it; so the
 * stream keeps the write's error for the read.  Not EPIPE, which takes no error a read
 * would have had: a reset after the peer's FIN makes it, and a read there finds that EOF
 * first, as asyncio's does (a Unix socket's write gets it when the peer has closed, and
 * the read then sees EOF or the reset itself).  Not ECANCELED: the stream's own close. */
static void remember_write_error(uvc_stream_t *h, int err) {
    if (h->write_error == 0 && err != UV_EPIPE && err != UV_ECANCELED)
        h->write_error = err;
}

static int stream_new(uvc_loop_t *L, int is_tcp, int ipc) {
    uvc_stream_t *h = uvc_handle_alloc(L, sizeof *h, offsetof(uvc_stream_t, u));
    if (h == NULL)
        return UV_ENOMEM;
    int r = is_tcp ? uv_tcp_init(&L->uv, &h->u.tcp) : uv_pipe_init(&L->uv, &h->u.pipe, ipc);
    if (r < 0) {
        uvc_handle_discard(h);
        return r;
    }
    h->u.stream.data = h;
    h->hold_limit = UVC_HOLD_LIMIT;
    return h->base.slot;
}

int uvc_tcp_new(uvc_loop_t *L) { return stream_new(L, 1, 0); }
int uvc_pipe_new(uvc_loop_t *L, int ipc) { return stream_new(L, 0, ipc); }

int uvc_stream_open(uvc_loop_t *L, int slot, int fd) {
    uv_stream_t *s = stream_of(L, slot);
    if (s == NULL)
        return UV_EBADF;
    uvc_fdguard_claim(L, fd);
    int r = s->type == UV_TCP ? uv_tcp_open((uv_tcp_t *)s, fd)
                              : uv_pipe_open((uv_pipe_t *)s, fd);
    if (r == 0)
        uvc_fdguard_add(L, s->data, s);
    return r;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    uvc_base_t *b = s->data;
    uvc_loop_t *L = b->loop;
    if (nread > 0) {
        /* alloc_cb handed out the arena from arena_used on: claim what was filled. */
        L->stats.bytes_read += (uint64_t)nread;
        uvc_emit(L, UVC_EV_READ, b->slot, buf->base - L->arena, nread, 0);
        uvc_arena_claim(L, (size_t)nread);
    } else if (nread == UV_EOF) {
        uvc_emit(L, UVC_EV_EOF, b->slot, 0, 0, 0);
    } else if (nread < 0 && nread != UV_ENOBUFS) {
        uvc_emit(L, UVC_EV_READ_ERROR, b->slot, nread, 0, 0);
    }
    /* 0 (EAGAIN) and UV_ENOBUFS (arena full: read again next iteration) are not events. */
}

int uvc_read_start(uvc_loop_t *L, int slot) {
    uv_stream_t *s = stream_of(L, slot);
    if (s == NULL)
        return UV_EBADF;
    return uv_read_start(s, uvc_arena_alloc_cb, read_cb);
}

/* Read-into mode: an empty buffer makes libuv skip its read and call readable_cb with
 * UV_ENOBUFS, every time the poll finds the fd readable (it watches level-triggered). */
static void readable_alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
    (void)handle;
    (void)suggested;
    buf->base = NULL;
    buf->len = 0;
}

static void readable_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    uvc_base_t *b = s->data;
    (void)buf;
    if (nread == UV_ENOBUFS)
        uvc_emit(b->loop, UVC_EV_READABLE, b->slot, 0, 0, 0);
}

int uvc_readable_start(uvc_loop_t *L, int slot) {
    uv_stream_t *s = stream_of(L, slot);
    if (s == NULL)
        return UV_EBADF;
    if (s->type == UV_NAMED_PIPE && ((uv_pipe_t *)s)->ipc)
        return UV_EINVAL;
    return uv_read_start(s, readable_alloc_cb, readable_cb);
}

int64_t uvc_read_into(uvc_loop_t *L, int slot, char *buf, size_t len) {
    uv_stream_t *s = stream_of(L, slot);
    if (s == NULL)
        return UV_EBADF;
    uv_os_fd_t fd;
    if (len == 0 || uv_fileno((uv_handle_t *)s, &fd) < 0)
        return UV_EINVAL;
    ssize_t n;
    do
        n = read(fd, buf, len);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        L->stats.bytes_read += (uint64_t)n;
        return n;
    }
    if (n == 0) /* EOF, unless a write took the connection's error (remember_write_error) */
        return ((uvc_stream_t *)s->data)->write_error;
    return errno == EAGAIN || errno == EWOULDBLOCK ? UV_EAGAIN : uv_translate_sys_error(errno);
}

int64_t uvc_stream_recv(uvc_loop_t *L, int slot) {
    char *buf = uvc_recv_buffer(L);
    L->last_recv = buf == NULL ? UV_ENOMEM : uvc_read_into(L, slot, buf, UVC_RECV_MAX);
    return L->last_recv;
}

int64_t uvc_stream_last_recv(uvc_loop_t *L) {
    return L->last_recv;
}

int uvc_read_stop(uvc_loop_t *L, int slot) {
    uv_stream_t *s = stream_of(L, slot);
    if (s == NULL)
        return UV_EBADF;
    return uv_read_stop(s);
}

static void write_cb(uv_write_t *req, int status) {
    uvc_write_req_t *w = (uvc_write_req_t *)req;
    uvc_base_t *b = req->handle->data;
    if (status == 0)
        b->loop->stats.bytes_written += w->len;
    else
        remember_write_error((uvc_stream_t *)b, status);
    uvc_emit(b->loop, UVC_EV_WRITE_DONE, b->slot, status, (int64_t)w->len, 0);
    free(w);
}

/* Queue the unsent tail of bufs (``done`` of their ``total`` bytes went out) as one write
 * request that owns a copy of it. */
static int queue_rest(uv_stream_t *s, const uv_buf_t *bufs, int nbufs, size_t done,
                      size_t total) {
    size_t rest = total - done;
    uvc_write_req_t *w = malloc(sizeof *w + rest);
    if (w == NULL)
        return UV_ENOMEM;
    char *p = w->data;
    for (int i = 0; i < nbufs; i++) {
        size_t len = bufs[i].len;
        if (done >= len) {
            done -= len;
            continue;
        }
        memcpy(p, bufs[i].base + done, len - done);
        p += len - done;
        done = 0;
    }
    w->len = rest;
    uv_buf_t buf = uv_buf_init(w->data, (unsigned int)rest);
    int r = uv_write(&w->req, s, &buf, 1, write_cb);
    if (r < 0)
        free(w);
    return r;
}

/* Send what h holds followed by data (len may be 0, and is UVC_WRITE_CHUNK at most: one
 * buffer, and what uv_try_write returns stays an int), in one writev, and queue the rest.
 * Returns the bytes of data written at once or a negative uv error; held bytes that had to
 * be queued are added to h->unreported.  Either way h holds nothing afterwards. */
static int64_t send_held(uvc_loop_t *L, uvc_stream_t *h, uv_stream_t *s, const char *data,
                         size_t len) {
    uv_buf_t bufs[UVC_HOLD_SEGS + 1];
    int nbufs = 0;
    for (int i = 0; i < h->nsegs; i++)
        bufs[nbufs++] = uv_buf_init(L->hold_buf + h->seg_off[i], h->seg_len[i]);
    if (len)
        bufs[nbufs++] = uv_buf_init((char *)data, (unsigned int)len);
    size_t held = h->held;
    size_t total = held + len;
    h->held = 0;
    h->nsegs = 0;
    size_t done = 0;
    if (s->write_queue_size == 0) {
        int r = uv_try_write(s, bufs, nbufs);
        if (r >= 0) {
            done = (size_t)r;
        } else if (r != UV_EAGAIN) {
            remember_write_error(h, r);
            return r;
        }
        L->stats.bytes_written += done;
    }
    if (done < total) {
        int r = queue_rest(s, bufs, nbufs, done, total);
        if (r < 0)
            return r;
    }
    if (done < held) {
        h->unreported += (int64_t)(held - done);
        return 0;
    }
    return (int64_t)(done - held);
}

static int hold(uvc_loop_t *L, uvc_stream_t *h, const char *data, size_t len) {
    size_t need = L->hold_used + len;
    if (need > L->hold_cap) {
        if (need > UVC_HOLD_BUF_MAX)
            return -1;
        size_t cap = L->hold_cap ? L->hold_cap : 16384;
        while (cap < need)
            cap *= 2;
        char *buf = realloc(L->hold_buf, cap);
        if (buf == NULL)
            return -1;
        L->hold_buf = buf;
        L->hold_cap = cap;
    }
    if (!h->listed) {
        if (L->nhold == L->hold_cap_slots) {
            int cap = L->hold_cap_slots ? 2 * L->hold_cap_slots : 64;
            int *slots = realloc(L->hold_slots, sizeof *slots * (size_t)cap);
            if (slots == NULL)
                return -1;
            L->hold_slots = slots;
            L->hold_cap_slots = cap;
        }
        L->hold_slots[L->nhold++] = h->base.slot;
        h->listed = 1;
    }
    memcpy(L->hold_buf + L->hold_used, data, len);
    h->seg_off[h->nsegs] = (uint32_t)L->hold_used;
    h->seg_len[h->nsegs++] = (uint32_t)len;
    h->held += (uint32_t)len;
    L->hold_used = need;
    return 0;
}

int64_t uvc_write(uvc_loop_t *L, int slot, const char *data, size_t len) {
    uv_stream_t *s = stream_of(L, slot);
    if (s == NULL)
        return UV_EBADF;
    uvc_stream_t *h = s->data;
    uv_thread_t self;
    if (L->holding && (self = uv_thread_self(), uv_thread_equal(&self, &L->hold_thread))) {
        /* (A write from another thread, which asyncio does not allow, is never held:
         * nothing would wake the loop to send it, and the hold buffer is the loop's.) */
        /* Only a stream that writes more than once per iteration gains from holding: one
         * that writes once (an echo, a proxy) would pay a copy for the same one system
         * call.  Which kind it is, its last iteration with writes tells. */
        if (h->write_poll != L->polls) {
            h->multi = h->writes > 1;
            h->write_poll = L->polls;
            h->writes = 1;
        } else if (h->writes == 1) {
            h->writes = h->multi = 2;
        }
        if (h->multi && (size_t)h->held + len <= h->hold_limit && h->nsegs < UVC_HOLD_SEGS &&
            s->write_queue_size == 0 && hold(L, h, data, len) == 0)
            return (int64_t)len;
    }
    if (h->nsegs) {
        if (len <= UVC_WRITE_CHUNK)
            return send_held(L, h, s, data, len);
        /* A write too big for send_held's one buffer goes after the held bytes, alone. */
        int64_t r = send_held(L, h, s, NULL, 0);
        if (r < 0)
            return r;
    }
    size_t done = 0;
    if (s->write_queue_size == 0) {
        /* One chunk at most: no socket takes more at once, and the count uv_try_write
         * returns is an int. */
        size_t first = len < UVC_WRITE_CHUNK ? len : UVC_WRITE_CHUNK;
        uv_buf_t buf = uv_buf_init((char *)data, (unsigned int)first);
        int r = uv_try_write(s, &buf, 1);
        if (r >= 0) {
            done = (size_t)r;
            L->stats.bytes_written += done;
            if (done == len)
                return (int64_t)len;
        } else if (r != UV_EAGAIN) {
            remember_write_error((uvc_stream_t *)s->data, r);
            return r;
        }
    }
    size_t rest = len - done;
    uvc_write_req_t *w = malloc(sizeof *w + rest);
    if (w == NULL)
        return UV_ENOMEM;
    memcpy(w->data, data + done, rest);
    w->len = rest;
    uv_buf_t few[UVC_WRITE_BUFS], *bufs = few;
    size_t nbufs = (rest - 1) / UVC_WRITE_CHUNK + 1;
    if (nbufs > UVC_WRITE_BUFS) {
        bufs = malloc(nbufs * sizeof *bufs);
        if (bufs == NULL) {
            free(w);
            return UV_ENOMEM;
        }
    }
    for (size_t i = 0; i < nbufs; i++) {
        size_t off = i * UVC_WRITE_CHUNK;
        size_t n = rest - off < UVC_WRITE_CHUNK ? rest - off : UVC_WRITE_CHUNK;
        bufs[i] = uv_buf_init(w->data + off, (unsigned int)n);
    }
    /* uv_write copies the array of buffers (not the bytes): ours can go at once. */
    int r = uv_write(&w->req, s, bufs, (unsigned int)nbufs, write_cb);
    if (bufs != few)
        free(bufs);
    if (r < 0) {
        free(w);
        return r;
    }
    return (int64_t)done;
}

/* The stream of a slot that may hold writes: open, not closing (a closed stream's held
 * bytes are dropped, as asyncio's abort drops its buffer). */
static uvc_stream_t *holder_of(uvc_loop_t *L, int slot) {
    uv_stream_t *s = stream_of(L, slot);
    if (s == NULL || uv_is_closing((uv_handle_t *)s))
        return NULL;
    return s->data;
}

void uvc_hold_flush_all(uvc_loop_t *L, int emit) {
    int keep = 0;
    for (int i = 0; i < L->nhold; i++) {
        int slot = L->hold_slots[i];
        uvc_stream_t *h = holder_of(L, slot);
        if (h == NULL)
            continue;  /* closed: what it held is dropped, and the slot is not looked at */
        if (h->nsegs) {
            int64_t r = send_held(L, h, &h->u.stream, NULL, 0);
            if (r < 0)
                h->error = (int)r;
        }
        if (!emit && (h->unreported || h->error)) {
            L->hold_slots[keep++] = slot;  /* told when the loop runs again */
            continue;
        }
        h->listed = 0;
        if (h->error) {
            /* The error write() would have raised: it goes where a failed queued write's
             * goes, and the transport closes. */
            uvc_emit(L, UVC_EV_WRITE_DONE, slot, h->error, 0, 0);
            h->error = 0;
        }
        if (h->unreported)
            uvc_emit(L, UVC_EV_WRITE_QUEUED, slot, 0, 0, 0);
    }
    L->nhold = keep;
    L->hold_used = 0;
}

void uvc_hold_writes(uvc_loop_t *L, int on) {
    if (on) {
        L->hold_thread = uv_thread_self();
        L->hold_pid = uv_os_getpid();
    } else if (L->nhold) {
        if (uv_os_getpid() == L->hold_pid)
            uvc_hold_flush_all(L, 0);
        else
            uvc_hold_drop_all(L);  /* a forked child leaving the run its parent started */
    }
    L->holding = on;
}

void uvc_hold_drop_all(uvc_loop_t *L) {
    for (int i = 0; i < L->nhold; i++) {
        uvc_stream_t *h = holder_of(L, L->hold_slots[i]);
        if (h != NULL) {
            h->held = 0;
            h->nsegs = 0;
        }
    }
    L->hold_used = 0;
}

int uvc_stream_hold_limit(uvc_loop_t *L, int slot, int64_t limit) {
    uv_stream_t *s = stream_of(L, slot);
    if (s == NULL)
        return UV_EBADF;
    uvc_stream_t *h = s->data;
    h->hold_limit = limit < 0 ? 0 : limit > UVC_HOLD_BUF_MAX ? UVC_HOLD_BUF_MAX : (uint32_t)limit;
    return 0;
}

int64_t uvc_stream_held(uvc_loop_t *L, int slot) {
    uvc_stream_t *h = holder_of(L, slot);
    return h == NULL ? 0 : (int64_t)h->held + h->unreported;
}

int64_t uvc_stream_flush(uvc_loop_t *L, int slot) {
    uvc_stream_t *h = holder_of(L, slot);
    if (h == NULL)
        return 0;
    if (h->nsegs) {
        int64_t r = send_held(L, h, &h->u.stream, NULL, 0);
        if (r < 0)
            return r;
    }
    if (h->error) {
        int r = h->error;
        h->error = 0;
        return r;
    }
    int64_t n = h->unreported;
    h->unreported = 0;
    return n;
}

int uvc_stream_peer(uvc_loop_t *L, int slot, char *buf, int len) {
    uv_stream_t *s = stream_of(L, slot);
    if (s == NULL)
        return UV_EBADF;
    uvc_stream_t *h = s->data;
    if (h->peer_len == 0 || (int)h->peer_len > len)
        return 0;
    memcpy(buf, &h->peer, h->peer_len);
    return (int)h->peer_len;
}

void uvc_stream_drop_held(uvc_loop_t *L, int slot) {
    uvc_stream_t *h = holder_of(L, slot);
    if (h != NULL) {
        if (h->nsegs && h->u.stream.write_queue_size == 0) {
            /* abort() drops what was not written; held bytes count as written (asyncio's
             * kernel would have them by now): what the fd takes at once goes out. */
            uv_buf_t bufs[UVC_HOLD_SEGS];
            for (int i = 0; i < h->nsegs; i++)
                bufs[i] = uv_buf_init(L->hold_buf + h->seg_off[i], h->seg_len[i]);
            int r = uv_try_write(&h->u.stream, bufs, (unsigned int)h->nsegs);
            if (r > 0)
                L->stats.bytes_written += (uint64_t)r;
        }
        h->held = 0;
        h->nsegs = 0;
        h->unreported = 0;  /* queued already: their WRITE_DONE comes to a closed transport */
        h->error = 0;
    }
}

static void shutdown_cb(uv_shutdown_t *req, int status) {
    uvc_base_t *b = req->handle->data;
    uvc_emit(b->loop, UVC_EV_SHUTDOWN, b->slot, status, 0, 0);
    free(req);
}

int uvc_shutdown(uvc_loop_t *L, int slot) {
    uv_stream_t *s = stream_of(L, slot);
    if (s == NULL)
        return UV_EBADF;
    uvc_stream_t *h = s->data;
    if (h->nsegs) {  /* the half-close comes after the held writes */
        int64_t sent = send_held(L, h, s, NULL, 0);
        if (sent < 0)
            return (int)sent;
    }
    uv_shutdown_t *req = malloc(sizeof *req);
    if (req == NULL)
        return UV_ENOMEM;
    int r = uv_shutdown(req, s, shutdown_cb);
    if (r < 0)
        free(req);
    return r;
}


/* ---- listening sockets ----
 *
 * Not uv_listen.  libuv 1.44's accept loop (uv__server_io) meets EMFILE/ENFILE with its
 * "emfile trick": it closes a reserve fd, accepts every pending connection and closes it at
 * once, so the clients see EOF or a reset and nothing reaches Python; after any other error
 * it calls connection_cb and accepts again, and only leaves the loop on EAGAIN or when the fd
 * is closed.  asyncio instead reports the error, stops accepting and tries again after
 * ACCEPT_RETRY_DELAY, the clients waiting in the kernel's backlog until fds free up.  So a
 * listener is a uv_poll_t on the listening fd and the accept loop below is ours. */
typedef struct {
    uvc_base_t base;
    uv_poll_t poll;
    int fd;     /* the slot's duplicate of the listening socket, -1 once closed */
    int is_tcp; /* what accepted connections become: uv_tcp_t, else uv_pipe_t */
    int bound;  /* connections accepted per readiness event at most */
} uvc_listener_t;

static void listener_free(uvc_base_t *b) {
    uvc_listener_t *h = (uvc_listener_t *)b;
    /* closed without uvc_listener_close (the loop is closing); a cut-off listener's number
     * is nobody's or another file's now */
    if (h->fd >= 0 && !b->faulted)
        close(h->fd);
}

static uvc_listener_t *listener_of(uvc_loop_t *L, int slot) {
    uvc_base_t *b = uvc_slot_get(L, slot);
    /* add_reader's polls are UV_POLL slots too: on_free tells the two apart. */
    if (b == NULL || b->on_free != listener_free)
        return NULL;
    return (uvc_listener_t *)b;
}

int uvc_listener_new(uvc_loop_t *L, int fd, int is_tcp) {
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0)
        return uv_translate_sys_error(errno);
    uvc_listener_t *h = uvc_handle_alloc(L, sizeof *h, offsetof(uvc_listener_t, poll));
    if (h == NULL) {
        close(own);
        return UV_ENOMEM;
    }
    /* The duplicate may take the number of a stream whose fd was closed under it. */
    uvc_fdguard_claim(L, own);
    int r = uv_poll_init(&L->uv, &h->poll, own);
    if (r < 0) {
        uvc_handle_discard(h);
        close(own);
        return r;
    }
    h->poll.data = h;
    h->fd = own;
    h->is_tcp = is_tcp;
    h->bound = 1;
    h->base.on_free = listener_free;
    /* Only a stray close reaches the duplicate (a socket object closed twice, the number
     * taken by the duplicate in between): libuv would abort at the epoll_ctl of the first
     * listen or of a resume, and the slot's close would close whoever has the number. */
    uvc_fdguard_add_io(L, &h->base, &h->poll.io_watcher);
    return h->base.slot;
}

/* Give an accepted fd a stream slot and tell Python.  On error the fd is still the caller's. */
static int adopt_accepted(uvc_listener_t *h, int fd, const struct sockaddr_storage *peer,
                          socklen_t peer_len) {
    uvc_loop_t *L = h->base.loop;
    int slot = stream_new(L, h->is_tcp, 0);
    if (slot < 0)
        return slot;
    uv_stream_t *client = stream_of(L, slot);
    if (h->is_tcp && peer_len > 0 && peer_len <= sizeof(struct sockaddr_in6)) {
        uvc_stream_t *sh = client->data;
        memcpy(&sh->peer, peer, peer_len);
        sh->peer_len = peer_len;
    }
    /* Unlike uv_accept these make one more syscall (FIONBIO, and F_GETFL for a pipe): the
     * public API has no way to hand libuv an fd that is non-blocking already. */
    uvc_fdguard_claim(L, fd);
    int r = h->is_tcp ? uv_tcp_open((uv_tcp_t *)client, fd)
                      : uv_pipe_open((uv_pipe_t *)client, fd);
    if (r < 0) {
        /* Python never hears of this slot: its CLOSED event finds no owner. */
        uv_close((uv_handle_t *)client, uvc_close_cb);
        return r;
    }
    uvc_fdguard_add(L, client->data, client);
    /* asyncio sets TCP_NODELAY on every TCP transport: do it here, saving a call. */
    if (h->is_tcp)
        uv_tcp_nodelay((uv_tcp_t *)client, 1);
    uvc_emit(L, UVC_EV_ACCEPT, h->base.slot, 0, slot, fd);
    return 0;
}

/* An accept failed.  Out of fds or memory, accepting again at once fails again (and the
 * listening fd stays readable: a busy loop), so stop watching until Python resumes, as
 * asyncio's remove_reader + call_later does; c = 1 says so.  Other errors end this round
 * only, as the exception asyncio's accept callback raises does. */
static void accept_failed(uvc_listener_t *h, int err) {
    int paused = err == UV_EMFILE || err == UV_ENFILE || err == UV_ENOBUFS || err == UV_ENOMEM;
    if (paused)
        uv_poll_stop(&h->poll);
    uvc_emit(h->base.loop, UVC_EV_ACCEPT, h->base.slot, err, -1, paused);
}

static void listener_cb(uv_poll_t *p, int status, int events) {
    uvc_listener_t *h = p->data;
    (void)events;
    if (status < 0) {
        /* libuv stopped the poll (an error condition on the socket): report it as a
         * pause, so Python tries again later instead of the server going quiet. */
        uvc_emit(h->base.loop, UVC_EV_ACCEPT, h->base.slot, status, -1, 1);
        return;
    }
    /* A stray close of the duplicate leaves epoll reporting the listening socket's file
     * under its number (the caller's fd keeps the file open), and the number may be
     * another file's by now, even another listening socket, whose clients an accept() here
     * would take: an fstat per readiness event, so that no accept() runs on a number that
     * is not the listener's any more. */
    if (uvc_fdguard_moved(h->base.loop, &h->base)) {
        uvc_fdguard_lost(h->base.loop, &h->base, UV_EBADF);
        return;
    }
    /* At most `bound` (the listen backlog, as asyncio) per readiness event: enough to empty
     * the kernel's queue as it stood, while a flood of new connections cannot hold the loop
     * here; what is left keeps the fd readable for the next iteration. */
    for (int i = 0; i < h->bound; i++) {
        struct sockaddr_storage peer;
        socklen_t peer_len = sizeof peer;
        int fd = accept4(h->fd, (struct sockaddr *)&peer, &peer_len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK)
                return;
            if (err == EINTR || err == ECONNABORTED) /* that one went away: the next */
                continue;
            /* The number closed or another file's: the check above sees it first, and
             * nothing in this loop changes what the number names; this keeps such an
             * error from being reported (and retried) at every readiness all the same. */
            if ((err == EBADF || err == ENOTSOCK) &&
                uvc_fdguard_lost(h->base.loop, &h->base, UV_EBADF))
                return;
            accept_failed(h, uv_translate_sys_error(err));
            return;
        }
        int r = adopt_accepted(h, fd, &peer, peer_len);
        if (r < 0) {
            close(fd); /* the kernel has no way to take it back */
            accept_failed(h, r);
            return;
        }
    }
}

int uvc_listen(uvc_loop_t *L, int slot, int backlog) {
    uvc_listener_t *h = listener_of(L, slot);
    if (h == NULL || uv_is_closing((uv_handle_t *)&h->poll) || h->base.faulted)
        return UV_EBADF;
    if (listen(h->fd, backlog) < 0)
        return uv_translate_sys_error(errno);
    h->bound = backlog < 1 ? 1 : backlog;
    return uv_poll_start(&h->poll, UV_READABLE, listener_cb);
}

int uvc_listener_resume(uvc_loop_t *L, int slot) {
    uvc_listener_t *h = listener_of(L, slot);
    /* uv_poll_start asserts on a closing handle; a cut-off one has no fd of its own */
    if (h == NULL || uv_is_closing((uv_handle_t *)&h->poll) || h->base.faulted)
        return UV_EBADF;
    return uv_poll_start(&h->poll, UV_READABLE, listener_cb);
}

int uvc_listener_close(uvc_loop_t *L, int slot) {
    uvc_listener_t *h = listener_of(L, slot);
    if (h == NULL)
        return UV_EBADF;
    if (uv_is_closing((uv_handle_t *)&h->poll))
        return 0;
    /* uv_close on a poll stops it and takes the fd out of epoll before it returns: libuv
     * holds nothing of the fd after this line, so it can be closed now, as asyncio's
     * Server.close() closes its sockets (the port is free when close() returns).  Not a
     * number closed under the listener since (free, or another file's now). */
    uvc_fdguard_remove(L, &h->base);
    uv_close((uv_handle_t *)&h->poll, uvc_close_cb);
    if (!h->base.faulted)
        close(h->fd);
    h->fd = -1;
    return 0;
}

static void connect_cb(uv_connect_t *req, int status) {
    uvc_base_t *b = req->handle->data;
    uvc_emit(b->loop, UVC_EV_CONNECT, b->slot, status, 0, 0);
    free(req);
}

int uvc_tcp_connect(uvc_loop_t *L, int slot, const char *ip, int port, unsigned int flowinfo,
                    unsigned int scope_id) {
    uv_stream_t *s = stream_of(L, slot);
    if (s == NULL || s->type != UV_TCP)
        return UV_EBADF;
    struct sockaddr_storage addr;
    int r;
    /* uv_ip4_addr/uv_ip6_addr would keep the port's low 16 bits (70000 -> 4464). */
    if (port < 0 || port > 65535)
        return UV_EINVAL;
    if (strchr(ip, ':') != NULL) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&addr;
        r = uv_ip6_addr(ip, port, a6);
        if (r == 0) {
            a6->sin6_flowinfo = htonl(flowinfo);
            if (scope_id)
                a6->sin6_scope_id = scope_id;
        }
    } else {
        r = uv_ip4_addr(ip, port, (struct sockaddr_in *)&addr);
    }
    if (r < 0)
        return r;
    uv_connect_t *req = malloc(sizeof *req);
    if (req == NULL)
        return UV_ENOMEM;
    r = uv_tcp_connect(req, (uv_tcp_t *)s, (const struct sockaddr *)&addr, connect_cb);
    if (r < 0)
        free(req);
    else
        uvc_fdguard_add(L, s->data, s); /* the socket libuv just made */
    return r;
}

int uvc_tcp_nodelay(uvc_loop_t *L, int slot, int enable) {
    uv_stream_t *s = stream_of(L, slot);
    if (s == NULL || s->type != UV_TCP)
        return UV_EBADF;
    return uv_tcp_nodelay((uv_tcp_t *)s, enable);
}
