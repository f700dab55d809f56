/* uvcffi fd guard: see uvc_fdguard.h. */
#include "uvc_fdguard.h"
#include "uvc_fdset.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

struct uvc_guard_entry {
    uvc_base_t *b; /* NULL: the fd is not guarded */
    uv__io_t *w;
    dev_t dev;     /* the file the stream was opened with */
    ino_t ino;
};

/* libuv's queues (QUEUE in 1.44, struct uv__queue later): two pointers, next then prev. */
typedef struct guard_queue { struct guard_queue *next, *prev; } guard_queue;

static guard_queue *watcher_link(uv__io_t *w) { return (guard_queue *)&w->watcher_queue; }

static void unlink_queue(guard_queue *q) {
    q->prev->next = q->next;
    q->next->prev = q->prev;
    q->next = q->prev = q;
}

/* Tell Python of a stream cut off outside uv_run (whose events would be dropped when the
 * next run starts): from the guard's next run on. */
static void defer_fault(uvc_loop_t *L, int slot) {
    if (L->nguard_faults == L->guard_faults_cap) {
        int cap = L->guard_faults_cap ? 2 * L->guard_faults_cap : 16;
        int *t = realloc(L->guard_faults, sizeof *t * (size_t)cap);
        if (t == NULL)
            return; /* the slot's next call fails with UV_EBADF all the same */
        L->guard_faults = t;
        L->guard_faults_cap = cap;
    }
    L->guard_faults[L->nguard_faults++] = slot;
}

void uvc_fdguard_detach_io(uv_loop_t *loop, uv__io_t *w) {
    unlink_queue(watcher_link(w));
    /* A watcher fed to the pending queue would reach libuv's stream callback, which
     * asserts a valid fd. */
    unlink_queue((guard_queue *)&w->pending_queue);
    if ((unsigned)w->fd < loop->nwatchers && loop->watchers[w->fd] == w) {
        loop->watchers[w->fd] = NULL;
        loop->nfds--;
    }
    w->pevents = 0;
    w->events = 0;
    /* uv_close skips the close() of an fd of -1: the number may be another file's now. */
    w->fd = -1;
}

/* Take the stream off every libuv structure that names its fd. */
static void forget_fd(uvc_loop_t *L, struct uvc_guard_entry *e) {
    uvc_base_t *b = e->b;
    uvc_fdguard_detach_io(&L->uv, e->w);
    e->b = NULL;
    b->guard_fd = -1;
    b->faulted = 1;
    /* A poll handle's close needs a number (libuv asserts one): see uvc_fdset_forgotten. */
    if (b == L->fdset)
        uvc_fdset_forgotten(L);
    else if (b->handle->type == UV_POLL) /* a listener's: the same borrowed number */
        e->w->fd = uv_backend_fd(&L->uv);
}

/* forget_fd, and tell Python (at once when inside uv_run, else from the next run). */
static void cut_off(uvc_loop_t *L, struct uvc_guard_entry *e, int err, int now) {
    uvc_base_t *b = e->b;
    forget_fd(L, e);
    /* The fd set is the loop's own, with no transport to fail: it starts again at once on
     * a new epoll fd, and every fd it watched keeps working. */
    if (b == L->fdset) {
        uvc_fdset_reopen(L);
        return;
    }
    if (now)
        uvc_emit(L, UVC_EV_FD_LOST, b->slot, err, 0, 0);
    else
        defer_fault(L, b->slot);
}

static int same_file(struct uvc_guard_entry *e, int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -errno;
    return (st.st_dev == e->dev && st.st_ino == e->ino) ? 0 : -EBADF;
}

/* Apply what libuv would apply to a guarded watcher at the start of its poll. */
static int apply(uvc_loop_t *L, struct uvc_guard_entry *e) {
    uv__io_t *w = e->w;
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = w->pevents;
    ev.data.fd = w->fd;
    int epfd = uv_backend_fd(&L->uv);
    if (w->events == 0) {
        int r = same_file(e, w->fd);
        if (r < 0)
            return r;
        /* Every epoll fd is the same inode to fstat: the set tells its own apart. */
        if (e->b == L->fdset && !uvc_fdset_is_ours(L))
            return -EBADF;
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, w->fd, &ev) == 0)
            return 0;
        if (errno != EEXIST) /* still registered from before a stop: libuv does the same */
            return -errno;
    }
    return epoll_ctl(epfd, EPOLL_CTL_MOD, w->fd, &ev) == 0 ? 0 : -errno;
}

static void guard_cb(uv_prepare_t *p) {
    uvc_loop_t *L = p->data;
    int nevents = L->nevents;
    for (int i = 0; i < L->nguard_faults; i++)
        uvc_emit(L, UVC_EV_FD_LOST, L->guard_faults[i], UV_EBADF, 0, 0);
    L->nguard_faults = 0;
    guard_queue *head = (guard_queue *)&L->uv.watcher_queue;
    for (guard_queue *q = head->next, *next; q != head; q = next) {
        next = q->next;
        uv__io_t *w = (uv__io_t *)((char *)q - offsetof(uv__io_t, watcher_queue));
        int fd = w->fd;
        if (fd < 0 || fd >= L->guard_cap)
            continue;
        struct uvc_guard_entry *e = &L->guard[fd];
        if (e->b == NULL || e->w != w)
            continue; /* not a guarded stream: libuv's own */
        int r = apply(L, e);
        if (r == 0) {
            w->events = w->pevents;
            unlink_queue(q);
        } else {
            /* Still the stream's own file, which epoll refuses (EPERM: /dev/null, a
             * regular file given as a pipe): the fd is closed here, since cut_off leaves
             * the handle's close without it.  Not a closed or reused number: that fd is
             * not the stream's to close. */
            int own = same_file(e, fd) == 0 && (e->b != L->fdset || uvc_fdset_is_ours(L));
            cut_off(L, e, uv_translate_sys_error(-r), 1);
            if (own)
                close(fd);
        }
    }
    /* Python must see these now, not after a poll that may block until the next timer:
     * uv_stop makes the poll's timeout 0 (see timer_cb in uvc_core.c). */
    if (L->nevents != nevents)
        uv_stop(&L->uv);
}

void uvc_fdguard_init(uvc_loop_t *L) {
    uv_prepare_init(&L->uv, &L->guard_prepare);
    L->guard_prepare.data = L;
    uv_prepare_start(&L->guard_prepare, guard_cb);
    uv_unref((uv_handle_t *)&L->guard_prepare);
}

void uvc_fdguard_add(uvc_loop_t *L, uvc_base_t *b, uv_stream_t *s) {
    uvc_fdguard_add_io(L, b, &s->io_watcher);
}

void uvc_fdguard_add_io(uvc_loop_t *L, uvc_base_t *b, uv__io_t *w) {
    int fd = w->fd;
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0)
        return;
    if (fd >= L->guard_cap) {
        int cap = L->guard_cap ? L->guard_cap : 256;
        while (cap <= fd)
            cap *= 2;
        struct uvc_guard_entry *t = realloc(L->guard, sizeof *t * (size_t)cap);
        if (t == NULL)
            return; /* unguarded: as libuv alone */
        memset(t + L->guard_cap, 0, sizeof *t * (size_t)(cap - L->guard_cap));
        L->guard = t;
        L->guard_cap = cap;
    }
    struct uvc_guard_entry *e = &L->guard[fd];
    if (e->b != NULL && e->b != b)
        cut_off(L, e, UV_EBADF, 0); /* see uvc_fdguard_claim: uv_tcp_connect made this fd */
    /* uv_tcp_connect started watching before the stale stream let go of the number. */
    if (w->pevents != 0 && (unsigned)fd < L->uv.nwatchers && L->uv.watchers[fd] == NULL) {
        L->uv.watchers[fd] = w;
        L->uv.nfds++;
    }
    e->b = b;
    e->w = w;
    e->dev = st.st_dev;
    e->ino = st.st_ino;
    b->guard_fd = fd;
}

void uvc_fdguard_claim(uvc_loop_t *L, int fd) {
    /* A live stream still naming this number had its fd closed under it while nothing of it
     * was queued (so the guard never saw it), and the number is reused now: libuv would
     * refuse the new stream (UV_EEXIST, the number is watched), and closing the old one
     * later would close the new one's fd. */
    if (fd >= 0 && fd < L->guard_cap && L->guard[fd].b != NULL)
        cut_off(L, &L->guard[fd], UV_EBADF, 0);
}

int uvc_fdguard_lost(uvc_loop_t *L, uvc_base_t *b, int err) {
    int fd = b->guard_fd;
    if (fd < 0 || fd >= L->guard_cap || L->guard[fd].b != b)
        return 0;
    cut_off(L, &L->guard[fd], err, 1);
    return 1;
}

int uvc_fdguard_moved(uvc_loop_t *L, uvc_base_t *b) {
    int fd = b->guard_fd;
    if (fd < 0 || fd >= L->guard_cap || L->guard[fd].b != b)
        return 0;
    return same_file(&L->guard[fd], fd) != 0;
}

void uvc_fdguard_remove(uvc_loop_t *L, uvc_base_t *b) {
    int fd = b->guard_fd;
    if (fd >= 0 && fd < L->guard_cap && L->guard[fd].b == b) {
        struct uvc_guard_entry *e = &L->guard[fd];
        /* The close that follows closes the stream's fd: not if it was closed under the
         * stream meanwhile, its number free or another file's now (an fstat per close). */
        if (same_file(e, fd) != 0)
            forget_fd(L, e);
        else
            e->b = NULL;
    }
    b->guard_fd = -1;
}

void uvc_fdguard_free(uvc_loop_t *L) {
    free(L->guard_faults);
    L->guard_faults = NULL;
    L->nguard_faults = L->guard_faults_cap = 0;
    free(L->guard);
    L->guard = NULL;
    L->guard_cap = 0;
}
