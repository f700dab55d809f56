/* uvcffi C core: see uvc_core.h for the contract with Python. */
#include "uvc_core.h"
#include "uvc_fdguard.h"
#include "uvc_fdset.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A read takes up to 256 KiB, as asyncio's recv() does: libuv suggests 64 KiB, and
 * reading a 100 KiB message in two calls (and echoing it in two writes) costs more kernel
 * time than the copy saves.  The arena holds 8 such reads per iteration; what does not fit
 * is read on the next iteration. */
#define UVC_READ_MAX (256 * 1024)
#define UVC_ARENA_SIZE (8 * UVC_READ_MAX)
#define UVC_ARENA_ALIGN 4096
#define UVC_EVENTS_INITIAL 1024
#define UVC_SLOTS_INITIAL 64

/* The one-shot timer only has to make uv_run return.  uv_run updates its clock and runs due
 * timers *before* it polls: when the millisecond clock ticks between the arming in
 * uvc_run_once and that update (likely with a 1 ms timeout, certain under preemption), this
 * callback runs in that first pass, and the poll that follows computes its timeout with no
 * timer left: -1, a wait for I/O that may never come.  uv_stop makes that poll's timeout 0
 * (uv_run clears the flag before it returns), wherever in the iteration the timer fires. */
static void timer_cb(uv_timer_t *t) { uv_stop(t->loop); }
static void async_cb(uv_async_t *a) { (void)a; }

static void signal_poll_cb(uv_poll_t *p, int status, int events) {
    uvc_loop_t *L = p->data;
    unsigned char buf[256];
    (void)events;
    if (status < 0)
        return;
    for (;;) {
        ssize_t n = read(L->signal_fds[0], buf, sizeof buf);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            uvc_emit(L, UVC_EV_SIGNAL, -1, buf[i], 0, 0);
    }
}

uvc_loop_t *uvc_loop_new(void) {
    uvc_loop_t *L = calloc(1, sizeof *L);
    if (L == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    L->signal_fds[0] = L->signal_fds[1] = -1;
    L->slow_ms = 100; /* asyncio's slow_callback_duration */
    L->events_cap = UVC_EVENTS_INITIAL;
    L->events = malloc(sizeof(int64_t) * UVC_EVENT_WORDS * L->events_cap);
    L->arena_size = UVC_ARENA_SIZE;
    L->arena = aligned_alloc(UVC_ARENA_ALIGN, L->arena_size); /* see uvc_arena_claim */
    int rc = L->events == NULL || L->arena == NULL ? UV_ENOMEM : uv_loop_init(&L->uv);
    if (rc != 0) {
        /* libuv (1.44 and later) does not close the epoll fd it made when a later step of
         * uv_loop_init fails (out of fds for its signal pipe, say); uv_loop_close would,
         * but a loop that failed to initialise must not be closed. */
        if (L->events != NULL && L->arena != NULL && L->uv.backend_fd >= 0)
            close(L->uv.backend_fd);
        free(L->events);
        free(L->arena);
        free(L);
        errno = -rc;
        return NULL;
    }
    L->uv.data = L;
    uv_timer_init(&L->uv, &L->timer);
    L->timer.data = L;
    /* The internal handles never hold a run open by themselves, except the async handle:
     * a loop with nothing else to do blocks until call_soon_threadsafe wakes it. */
    uv_unref((uv_handle_t *)&L->timer);
    uvc_fdguard_init(L);
    /* Without its async handle (an eventfd) call_soon_threadsafe could not wake the loop,
     * and without the socketpair no signal would reach it: asyncio's loop cannot be made
     * when its self-pipe cannot (EMFILE, say), and neither can this one. */
    rc = uv_async_init(&L->uv, &L->async, async_cb);
    if (rc == 0) {
        L->async.data = L;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                       L->signal_fds) != 0) {
            rc = -errno;
            L->signal_fds[0] = L->signal_fds[1] = -1;
        }
    }
    if (rc != 0) {
        uvc_loop_free(L);
        errno = -rc; /* after the frees, which may set it */
        return NULL;
    }
    uv_poll_init(&L->uv, &L->signal_poll, L->signal_fds[0]);
    L->signal_poll.data = L;
    uv_poll_start(&L->signal_poll, UV_READABLE, signal_poll_cb);
    uv_unref((uv_handle_t *)&L->signal_poll);
    return L;
}

static void close_any(uv_handle_t *h, void *arg) {
    (void)arg;
    if (uv_is_closing(h))
        return;
    if (h->data == h->loop->data) {
        /* Internal handles live inside uvc_loop_t: close them without a callback. */
        uv_close(h, NULL);
        return;
    }
    /* As uvc_close does: a stream whose fd was closed under it (its number free, or
     * another file's now) must not close that number with the loop. */
    uvc_base_t *b = h->data;
    uvc_fdguard_remove(b->loop, b);
    uv_close(h, uvc_close_cb);
}

/* The end of closing, once libuv has nothing left in flight: close the libuv loop and free
 * what Python never collected. */
static void close_finish(uvc_loop_t *L) {
    uv_loop_close(&L->uv);
    if (L->signal_fds[0] >= 0) {
        close(L->signal_fds[0]);
        close(L->signal_fds[1]);
        L->signal_fds[0] = L->signal_fds[1] = -1;
    }
    for (int i = 0; i < L->nslots; i++) {
        /* Requests Python never collected (their memory is a slot): free them here. */
        if (L->slots[i] != NULL) {
            uvc_base_t *b = L->slots[i];
            if (b->on_free != NULL)
                b->on_free(b);
            free(b);
            L->slots[i] = NULL;
        }
    }
    L->nevents = 0;
}

static void loop_free_memory(uvc_loop_t *L) {
    free(L->slots);
    free(L->free_slots);
    free(L->dead_slots);
    free(L->events);
    free(L->arena);
    free(L->recv_buffer);
    free(L->hold_buf);
    free(L->hold_slots);
    uvc_fdguard_free(L);
    free(L);
}

/* Guards `reaping` and `free_requested` between the closing thread and uvc_loop_free. */
static pthread_mutex_t reap_lock = PTHREAD_MUTEX_INITIALIZER;

/* A thread of its own that waits for the lookups a closed loop still has in libuv's thread
 * pool, then finishes closing it (and frees it, if uvc_loop_free came meanwhile). */
static void *reap(void *arg) {
    uvc_loop_t *L = arg;
    uv_run(&L->uv, UV_RUN_DEFAULT);
    close_finish(L);
    pthread_mutex_lock(&reap_lock);
    int free_now = L->free_requested;
    L->reaping = 0;
    pthread_mutex_unlock(&reap_lock);
    if (free_now)
        loop_free_memory(L);
    return NULL;
}

void uvc_loop_close(uvc_loop_t *L) {
    if (L == NULL || L->closed)
        return;
    __atomic_store_n(&L->closed, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&L->wakers, __ATOMIC_SEQ_CST)) /* see uvc_wakeup: a send or two */
        sched_yield();
    uv_walk(&L->uv, close_any, NULL);
    /* Run the close callbacks, and those of the lookups Python cancelled. */
    L->nevents = 0;
    L->arena_used = 0;
    uv_run(&L->uv, UV_RUN_NOWAIT);
    if (uv_loop_alive(&L->uv)) {
        /* A getaddrinfo()/getnameinfo() running in libuv's thread pool cannot be stopped,
         * and can take the resolver's whole timeout.  asyncio's close() does not wait for
         * its executor's lookups: neither does this one.  A thread waits for them. */
        pthread_attr_t attr;
        pthread_t thread;
        int started = 0;
        if (pthread_attr_init(&attr) == 0) {
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            L->reaping = 1;
            started = pthread_create(&thread, &attr, reap, L) == 0;
            if (!started)
                L->reaping = 0;
            pthread_attr_destroy(&attr);
        }
        if (started)
            return;
        uv_run(&L->uv, UV_RUN_DEFAULT); /* no thread to be had: wait here */
    }
    close_finish(L);
}

void uvc_loop_free(uvc_loop_t *L) {
    if (L == NULL)
        return;
    uvc_loop_close(L);
    pthread_mutex_lock(&reap_lock);
    int reaping = L->reaping;
    if (reaping)
        L->free_requested = 1; /* the reaping thread frees it when it is done */
    pthread_mutex_unlock(&reap_lock);
    if (!reaping)
        loop_free_memory(L);
}

int uvc_run_once(uvc_loop_t *L, int64_t timeout_ms) {
    if (L->closed)
        return 0;
    /* Slots that died during the previous run become reusable only now, after Python has
     * seen their CLOSED events. */
    for (int i = 0; i < L->ndead; i++)
        L->free_slots[L->nfree++] = L->dead_slots[i];
    L->ndead = 0;
    L->nevents = 0;
    L->arena_used = 0;
    L->polls++;
    /* The writes Python made in the iteration that just ended, before the poll waits.
     * What that flush has to tell Python (a failed write, bytes it had to queue) must not
     * wait for the poll: nothing else may wake it (a stream that is not reading). */
    if (L->nhold) {
        uvc_hold_flush_all(L, 1);
        if (L->nevents)
            timeout_ms = 0;
    }
    /* The statistics read libuv's millisecond clock, which uv_run updates anyway: the busy
     * path (timeout 0) reads no clock of its own; a wait reads it once before it starts. */
    uint64_t start = 0;
    if (timeout_ms == 0) {
        uv_run(&L->uv, UV_RUN_NOWAIT);
    } else {
        uv_update_time(&L->uv);
        start = uv_now(&L->uv);
        if (timeout_ms > 0) {
            uv_timer_start(&L->timer, timer_cb, (uint64_t)timeout_ms, 0);
            if (L->test_arm_delay_us > 0)
                usleep((useconds_t)L->test_arm_delay_us);
        }
        uv_run(&L->uv, UV_RUN_ONCE);
        if (timeout_ms > 0)
            uv_timer_stop(&L->timer);
    }
    uint64_t end = uv_now(&L->uv);
    if (timeout_ms == 0)
        start = end; /* a non-blocking run takes microseconds */
    else
        L->stats.idle_ms += end - start;
    /* What ran in Python since the last return: a slow callback (or batch) shows here. */
    if (L->last_return_ms != 0 && start - L->last_return_ms >= L->slow_ms) {
        int i = (int)(L->stats.slow_iterations % UVC_SLOW_RING);
        L->stats.slow_start_ms[i] = L->last_return_ms;
        L->stats.slow_duration_ms[i] = start - L->last_return_ms;
        L->stats.slow_iterations++;
    }
    L->last_return_ms = end;
    L->stats.iterations++;
    return L->nevents;
}

void uvc_stats(uvc_loop_t *L, uvc_stats_t *out) {
    *out = L->stats;
    out->now_ms = L->closed ? L->last_return_ms : (uv_update_time(&L->uv), uv_now(&L->uv));
}

void uvc_set_slow_ms(uvc_loop_t *L, int64_t ms) {
    L->slow_ms = ms > 0 ? (uint64_t)ms : 1;
    L->last_return_ms = 0; /* measure afresh from the next run */
}

void uvc_test_set_arm_delay(uvc_loop_t *L, int64_t usec) { L->test_arm_delay_us = usec; }
void uvc_test_set_wakeup_pause(uvc_loop_t *L, int fd, int64_t usec) {
    L->test_wakeup_fd = fd;
    L->test_wakeup_pause_us = usec;
}

int64_t *uvc_events(uvc_loop_t *L) { return L->events; }
int uvc_events_capacity(uvc_loop_t *L) { return L->events_cap; }
uint64_t uvc_run_count(uvc_loop_t *L) { return L->stats.iterations; }
int uvc_event_count(uvc_loop_t *L) { return L->nevents; }
char *uvc_arena(uvc_loop_t *L) { return L->arena; }
size_t uvc_arena_size(uvc_loop_t *L) { return L->arena_size; }

char *uvc_recv_buffer(uvc_loop_t *L) {
    /* On a cache line, for the reason uvc_arena_claim gives; a loop that never reads
     * this way never touches it. */
    if (L->recv_buffer == NULL)
        L->recv_buffer = aligned_alloc(64, UVC_RECV_MAX);
    return L->recv_buffer;
}

void uvc_arena_copy(uvc_loop_t *L, int64_t off, char *dst, size_t len) {
    const char *src = L->arena + off;
    size_t distance = ((uintptr_t)dst - (uintptr_t)src) & 4095;
    if (distance == 0 || distance >= 64) {
        memcpy(dst, src, len);
        return;
    }
    /* Fixed-size blocks through a temporary compile to vector moves, never REP MOVSB. */
    size_t i = 0;
    for (; i + 64 <= len; i += 64) {
        char block[64];
        memcpy(block, src + i, 64);
        memcpy(dst + i, block, 64);
    }
    memcpy(dst + i, src + i, len - i);
}

int uvc_wakeup(uvc_loop_t *L) {
    /* libuv aborts on a send to a closed loop: a late call_soon_threadsafe must not.  Nor
     * may the loop's close overtake this call between the check and the send (cffi lets go
     * of the GIL for it): the wake-up counts itself before it looks at the flag, and
     * uvc_loop_close raises the flag before it waits for the count to drop, both
     * sequentially consistent, so either this call sees the loop closed, or the close
     * waits for its send to end before libuv's eventfd goes. */
    __atomic_add_fetch(&L->wakers, 1, __ATOMIC_SEQ_CST);
    int rc = UV_EBADF;
    if (!__atomic_load_n(&L->closed, __ATOMIC_SEQ_CST)) {
        if (L->test_wakeup_fd > 0) {
            ssize_t w = write(L->test_wakeup_fd, "w", 1);
            (void)w;
            usleep((useconds_t)L->test_wakeup_pause_us);
        }
        rc = uv_async_send(&L->async);
    }
    __atomic_sub_fetch(&L->wakers, 1, __ATOMIC_SEQ_CST);
    return rc;
}
int uvc_signal_fd(uvc_loop_t *L) { return L->signal_fds[1]; }
int uvc_backend_fd(uvc_loop_t *L) { return L->closed ? UV_EBADF : uv_backend_fd(&L->uv); }
/* A forked child's copy of the loop gets a socketpair of its own for the signal bytes, in
 * place of the one it shares with its parent, under the same fd numbers (Python's wakeup
 * fd and the poll name them).  Shared, a signal the child got was written into the
 * parent's pair and handled by the parent's loop (a worker's SIGTERM stopping its parent),
 * and either process's loop could read the other's.  (No new pair to be had, out of fds:
 * the shared one stays, as before.) */
static void signal_pair_after_fork(uvc_loop_t *L) {
    int fresh[2];
    if (L->signal_fds[0] < 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fresh) != 0)
        return;
    for (int i = 0; i < 2; i++) {
        /* dup2 replaces the inherited fd in this process only; it clears close-on-exec */
        if (dup2(fresh[i], L->signal_fds[i]) >= 0)
            fcntl(L->signal_fds[i], F_SETFD, FD_CLOEXEC);
        close(fresh[i]);
    }
}

int uvc_loop_fork(uvc_loop_t *L) {
    if (L->closed)
        return UV_EBADF;
    signal_pair_after_fork(L);
    L->wakers = 0; /* a thread that was waking the loop is not in the child */
    uvc_fdset_after_fork(L);
    uvc_hold_drop_all(L);  /* the parent sends them: sent from here too, they would go twice */
    return uv_loop_fork(&L->uv);
}
int uvc_active_slots(uvc_loop_t *L) { return L->active; }

void uvc_emit(uvc_loop_t *L, int kind, int slot, int64_t a, int64_t b, int64_t c) {
    if (L->nevents == L->events_cap) {
        int cap = L->events_cap * 2;
        int64_t *ev = realloc(L->events, sizeof(int64_t) * UVC_EVENT_WORDS * cap);
        if (ev == NULL)
            abort(); /* an event cannot be dropped without losing a callback */
        L->events = ev;
        L->events_cap = cap;
    }
    L->stats.events[kind < UVC_EV_KINDS ? kind : UVC_EV_KINDS - 1]++;
    int64_t *e = L->events + (size_t)L->nevents * UVC_EVENT_WORDS;
    e[0] = kind;
    e[1] = slot;
    e[2] = a;
    e[3] = b;
    e[4] = c;
    L->nevents++;
}

void uvc_arena_alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
    uvc_base_t *b = handle->data;
    uvc_loop_t *L = b->loop;
    size_t room = L->arena_size - L->arena_used;
    (void)suggested;
    if (room > UVC_READ_MAX)
        room = UVC_READ_MAX;
    buf->base = L->arena + L->arena_used;
    buf->len = room;
}

int64_t uvc_arena_put(uvc_loop_t *L, const void *data, size_t len) {
    if (L->arena_size - L->arena_used < len)
        return -1;
    int64_t off = (int64_t)L->arena_used;
    memcpy(L->arena + off, data, len);
    uvc_arena_claim(L, len);
    return off;
}

void uvc_arena_claim(uvc_loop_t *L, size_t len) {
    size_t used = L->arena_used + ((len + 63) & ~(size_t)63);
    L->arena_used = used < L->arena_size ? used : L->arena_size;
}

static int slot_new(uvc_loop_t *L, uvc_base_t *b) {
    if (L->nfree == 0) {
        int n = L->nslots ? L->nslots * 2 : UVC_SLOTS_INITIAL;
        uvc_base_t **slots = realloc(L->slots, sizeof *slots * n);
        if (slots == NULL)
            return -1;
        L->slots = slots;
        int *fs = realloc(L->free_slots, sizeof(int) * n);
        if (fs == NULL)
            return -1;
        L->free_slots = fs;
        int *ds = realloc(L->dead_slots, sizeof(int) * n);
        if (ds == NULL)
            return -1;
        L->dead_slots = ds;
        L->dead_cap = n;
        /* Hand out low numbers first so Python's slot list stays short. */
        for (int i = n - 1; i >= L->nslots; i--) {
            slots[i] = NULL;
            L->free_slots[L->nfree++] = i;
        }
        L->nslots = n;
    }
    int slot = L->free_slots[--L->nfree];
    L->slots[slot] = b;
    L->active++;
    return slot;
}

static void slot_release(uvc_loop_t *L, int slot) {
    L->slots[slot] = NULL;
    L->dead_slots[L->ndead++] = slot;
    L->active--;
}

void *uvc_handle_alloc(uvc_loop_t *L, size_t size, size_t handle_offset) {
    if (L->closed)
        return NULL;
    uvc_base_t *b = calloc(1, size);
    if (b == NULL)
        return NULL;
    b->loop = L;
    b->handle = (uv_handle_t *)((char *)b + handle_offset);
    b->handle->data = b;
    b->guard_fd = -1;
    b->slot = slot_new(L, b);
    if (b->slot < 0) {
        free(b);
        return NULL;
    }
    return b;
}

void uvc_handle_discard(void *h) {
    uvc_base_t *b = h;
    /* Never seen by libuv, so no close callback will come: release the slot at once (it is
     * still parked until the next run, as any other dead slot). */
    slot_release(b->loop, b->slot);
    free(b);
}

uvc_base_t *uvc_slot_get(uvc_loop_t *L, int slot) {
    if (L->closed || slot < 0 || slot >= L->nslots)
        return NULL;
    return L->slots[slot];
}

void uvc_close_cb(uv_handle_t *handle) {
    uvc_base_t *b = handle->data;
    uvc_loop_t *L = b->loop;
    uvc_emit(L, UVC_EV_CLOSED, b->slot, 0, 0, 0);
    slot_release(L, b->slot);
    if (b->on_free != NULL)
        b->on_free(b);
    free(b);
}

int uvc_close(uvc_loop_t *L, int slot) {
    uvc_base_t *b = uvc_slot_get(L, slot);
    if (b == NULL)
        return UV_EBADF;
    if (uv_is_closing(b->handle))
        return 0;
    uvc_fdguard_remove(L, b); /* uv_close closes a stream's fd now: its number is free */
    uv_close(b->handle, uvc_close_cb);
    return 0;
}

int uvc_fileno(uvc_loop_t *L, int slot) {
    uvc_base_t *b = uvc_slot_get(L, slot);
    uv_os_fd_t fd;
    /* A cut-off poll handle keeps a borrowed number for libuv's close (see forget_fd). */
    if (b == NULL || b->faulted)
        return UV_EBADF;
    int r = uv_fileno(b->handle, &fd);
    return r < 0 ? r : (int)fd;
}

const char *uvc_strerror(int err) { return uv_strerror(err); }
unsigned int uvc_libuv_version(void) { return uv_version(); }
