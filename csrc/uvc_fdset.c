/* uvcffi fd set: see uvc_fdset.h. */
#define _GNU_SOURCE /* dup3 */
#include "uvc_fdset.h"
#include "uvc_fdguard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

/* Ready fds taken per wake-up; more stay ready (level-triggered) for the next iteration. */
#define UVC_FDSET_BATCH 256

/* What the set holds for one fd number: the events asked for (0: nothing), and the
 * generation of the registration, which its epoll events carry along with the fd. */
typedef struct {
    uint32_t events;
    uint32_t gen;
} fdset_reg_t;

typedef struct {
    uvc_base_t base;
    uv_poll_t poll;
    int epfd;          /* -1: lost (see set_lose), and a new one could not be made */
    int witnessed;     /* the loop's signal pipe is in the set (see set_is_ours) */
    int keep;          /* another fd of the set's file, never used or shown (-1: none) */
    fdset_reg_t *regs; /* by fd number */
    int nregs;
    uint32_t gen;      /* the last generation handed out */
} uvc_fdset_t;

/* An epoll registration is the pair (open file, fd number), and closing the number removes
 * it only when no other fd refers to that file any more (a dup(), a child's copy).  Until
 * then epoll keeps reporting the closed number's file under the old number: for nobody (a
 * busy loop, level-triggered, while that file is readable, even after remove_reader), or
 * for the new file that took the number and is watched in its own right, whose callbacks
 * then run for the other file's readiness.  Such a registration cannot be deleted (the
 * kernel finds it through an fd of that file, under that number), so each registration
 * carries a generation in its event data: an event whose generation is not the one the
 * number holds now is stale, and the set is rebuilt without it (set_rebuild). */
static uint64_t reg_data(int fd, uint32_t gen) { return ((uint64_t)gen << 32) | (uint32_t)fd; }

static fdset_reg_t *reg_of(uvc_fdset_t *s, int fd, int grow) {
    if (fd < s->nregs)
        return &s->regs[fd];
    if (!grow)
        return NULL;
    int n = s->nregs ? s->nregs : 64;
    while (n <= fd)
        n *= 2;
    fdset_reg_t *t = realloc(s->regs, sizeof *t * (size_t)n);
    if (t == NULL)
        return NULL;
    memset(t + s->nregs, 0, sizeof *t * (size_t)(n - s->nregs));
    s->regs = t;
    s->nregs = n;
    return &s->regs[fd];
}

static void fdset_cb(uv_poll_t *p, int status, int events);

/* The set's epoll fd is a number like any other: a program's stray os.close() of it (a
 * socket object's fd closed twice, the number taken by the set in between) closes the set
 * under the loop, and the number may then be anybody's file.  libuv's registration goes
 * with the file (every watched fd's events stop) or, before its first poll, its epoll_ctl
 * fails and it aborts.  So the set never trusts the number blindly where it costs nothing
 * on the hot path: libuv's first registration goes through the fd guard (uvc_fdguard.h),
 * and every failing call on the set asks whether the number still is the set (a witness:
 * the loop's own signal pipe, registered in the set for nothing, so EPOLL_CTL_MOD on it
 * succeeds in this set only; every epoll fd is the same inode to fstat).  When it is not,
 * the set starts again on a new epoll fd (uvc_fdset_reopen) with what it held, and the
 * old number is never closed, read or handed to libuv again.
 *
 * A second fd of the set's file (keep), never handed out, is what turns the stray close
 * after libuv's registration from a hang into that: the registration is the pair (file,
 * number) and lives while the file does, so libuv goes on reporting the set's readiness,
 * and fdset_cb's epoll_wait on the closed (or reused) number fails and starts the set
 * again.  Without it the registration went with the file, and nothing was ever reported
 * again (no syscall per iteration could afford to look). */
#define WITNESS_DATA UINT64_MAX

static int add_witness(uvc_fdset_t *s, int epfd) {
    struct epoll_event e = {0};
    e.data.u64 = WITNESS_DATA;
    return s->base.loop->signal_fds[0] >= 0 &&
           epoll_ctl(epfd, EPOLL_CTL_ADD, s->base.loop->signal_fds[0], &e) == 0;
}

/* Whether ``fd`` is the set's file; ``sure``: no when that cannot be known (no witness),
 * else yes if it is an epoll fd at all. */
static int is_set(uvc_fdset_t *s, int fd, int sure) {
    struct epoll_event e = {0};
    e.data.u64 = WITNESS_DATA;
    if (fd < 0)
        return 0;
    if (s->witnessed)
        return epoll_ctl(fd, EPOLL_CTL_MOD, s->base.loop->signal_fds[0], &e) == 0;
    if (sure)
        return 0;
    return epoll_ctl(fd, EPOLL_CTL_DEL, uv_backend_fd(&s->base.loop->uv), &e) != 0 &&
           errno == ENOENT;
}

static int set_is_ours(uvc_fdset_t *s) { return is_set(s, s->epfd, 0); }

int uvc_fdset_is_ours(uvc_loop_t *L) { return set_is_ours((uvc_fdset_t *)L->fdset); }

/* Close the set's fds that still are its file (a stray close may have given either
 * number to another file, which is not the set's to close). */
static void set_release(uvc_fdset_t *s) {
    if (is_set(s, s->keep, 1))
        close(s->keep);
    if (is_set(s, s->epfd, 1))
        close(s->epfd);
    s->keep = s->epfd = -1;
}

/* The number is not the set's any more: start again on a new one. */
static void set_lose(uvc_fdset_t *s) {
    uvc_loop_t *L = s->base.loop;
    if (uvc_fdguard_lost(L, &s->base, UV_EBADF))
        return; /* cut off: the guard reopened it (uvc_fdset_reopen) */
    uvc_fdguard_detach_io(&L->uv, &s->poll.io_watcher);
    uvc_fdset_forgotten(L);
    uvc_fdset_reopen(L);
}

/* Register in ``fresh`` what the set holds, each under its own generation.  One that
 * cannot be made is dropped (its fd closed since), and so, when ``old`` is the set's
 * current file, is one ``old`` no longer holds (the kernel dropped it with its file). */
static void register_all(uvc_fdset_t *s, int fresh, int old) {
    for (int fd = 0; fd < s->nregs; fd++) {
        fdset_reg_t *r = &s->regs[fd];
        if (r->events == 0)
            continue;
        struct epoll_event e = {0};
        e.events = r->events;
        e.data.u64 = reg_data(fd, r->gen);
        if ((old >= 0 && epoll_ctl(old, EPOLL_CTL_MOD, fd, &e) != 0) ||
            epoll_ctl(fresh, EPOLL_CTL_ADD, fd, &e) != 0)
            r->events = 0;
    }
}

static void fdset_free(uvc_base_t *b) {
    uvc_fdset_t *s = (uvc_fdset_t *)b;
    s->base.loop->active++; /* slot_release counted it off; uvc_fdset_open never counted it */
    if (s->base.loop->fdset == b)
        s->base.loop->fdset = NULL;
    set_release(s);
    free(s->regs);
}

/* A fresh epoll set under the same number, holding only the registrations that are still
 * the ones asked for: each is checked in the old set first (EPOLL_CTL_MOD finds the pair
 * of the file now at that number and the number; ENOENT if the number was closed and
 * reused since, EBADF if it is closed), so a closed number's callbacks are not made to
 * watch whichever file has the number now (the caller's next change to it gets UV_ENOENT,
 * as if the kernel had dropped it).  Stale registrations go with the old set. */
static void set_rebuild(uvc_fdset_t *s) {
    if (!set_is_ours(s)) {
        set_lose(s); /* the dup3 below would close the file that has the number now */
        return;
    }
    int fresh = epoll_create1(EPOLL_CLOEXEC);
    if (fresh < 0)
        return; /* the stale events stay (as they would on any selector loop) */
    int witnessed = add_witness(s, fresh);
    register_all(s, fresh, s->epfd);
    /* libuv watches the number: its registration was for the old set's file, which the
     * dup3s close (and the kernel drops with it), so its watch must be made again. */
    if (is_set(s, s->keep, 1))
        dup3(fresh, s->keep, O_CLOEXEC);
    else /* closed under the loop: the number is not the set's to replace */
        s->keep = fcntl(fresh, F_DUPFD_CLOEXEC, 0);
    dup3(fresh, s->epfd, O_CLOEXEC);
    close(fresh);
    s->witnessed = witnessed;
    uv_poll_stop(&s->poll);
    uv_poll_start(&s->poll, UV_READABLE, fdset_cb);
}

static void fdset_cb(uv_poll_t *p, int status, int events) {
    uvc_fdset_t *s = p->data;
    struct epoll_event ready[UVC_FDSET_BATCH];
    int stale = 0;
    (void)events;
    if (status < 0)
        return;
    int n = epoll_wait(s->epfd, ready, UVC_FDSET_BATCH, 0);
    /* libuv found the set readable: an error, or nothing ready (rare: a readiness gone by
     * now), may mean the number is not the set any more, libuv's registration of the set
     * living on through keep: closed, or taken by another file, another epoll set even. */
    if ((n < 0 && errno != EINTR) || (n == 0 && !set_is_ours(s))) {
        set_lose(s);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (ready[i].data.u64 == WITNESS_DATA)
            continue; /* (watched for nothing: never reported but for an error) */
        int fd = (int)(uint32_t)ready[i].data.u64;
        fdset_reg_t *r = reg_of(s, fd, 0);
        if (r == NULL || r->events == 0 || r->gen != (uint32_t)(ready[i].data.u64 >> 32)) {
            stale = 1; /* a registration of a closed number's file (see reg_data) */
            continue;
        }
        uint32_t e = ready[i].events;
        /* selectors' rule: anything but "writable" counts as readable and vice versa, so an
         * error or hang-up wakes both callbacks, whose own I/O call then meets it. */
        int mask = ((e & ~(uint32_t)EPOLLOUT) ? UVC_READABLE : 0) |
                   ((e & ~(uint32_t)EPOLLIN) ? UVC_WRITABLE : 0);
        uvc_emit(s->base.loop, UVC_EV_POLL, s->base.slot, fd, mask, s->base.loop->polls);
    }
    if (stale)
        set_rebuild(s);
}

int uvc_fdset_open(uvc_loop_t *L) {
    if (L->closed)
        return UV_EBADF;
    if (L->fdset != NULL)
        return L->fdset->slot;
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        return uv_translate_sys_error(errno);
    uvc_fdset_t *s = uvc_handle_alloc(L, sizeof *s, offsetof(uvc_fdset_t, poll));
    if (s == NULL) {
        close(epfd);
        return UV_ENOMEM;
    }
    s->epfd = epfd;
    s->witnessed = add_witness(s, epfd);
    s->keep = fcntl(epfd, F_DUPFD_CLOEXEC, 0); /* (-1: the hang-up case stays one) */
    /* The set is the loop's own, like its timer: uvc_active_slots counts what Python
     * opened, and tests read it to see that every handle of theirs is gone. */
    L->active--;
    int r = uv_poll_init(&L->uv, &s->poll, epfd);
    if (r < 0) {
        close(epfd);
        if (s->keep >= 0)
            close(s->keep);
        L->active++;
        uvc_handle_discard(s);
        return r;
    }
    s->poll.data = s;
    s->base.on_free = fdset_free;
    L->fdset = &s->base;
    r = uv_poll_start(&s->poll, UV_READABLE, fdset_cb);
    if (r < 0) {
        uvc_close(L, s->base.slot);
        return r;
    }
    /* The set only reports what is watched: it never holds a run open by itself. */
    uv_unref((uv_handle_t *)&s->poll);
    /* libuv registers the number at its next poll, and aborts if it is closed by then. */
    uvc_fdguard_add_io(L, &s->base, &s->poll.io_watcher);
    return s->base.slot;
}

void uvc_fdset_forgotten(uvc_loop_t *L) {
    uvc_fdset_t *s = (uvc_fdset_t *)L->fdset;
    s->epfd = -1;
    /* The poll handle keeps a number until it watches a new set, for uv_close (libuv's
     * asserts a number): libuv's own epoll fd, which libuv never watches, so stopping a
     * watch of it touches nobody's registration. */
    s->poll.io_watcher.fd = uv_backend_fd(&L->uv);
}

void uvc_fdset_reopen(uvc_loop_t *L) {
    uvc_fdset_t *s = (uvc_fdset_t *)L->fdset;
    s->base.faulted = 0;
    /* The old file goes (and libuv's registration of it with it): only keep holds it. */
    set_release(s);
    int fresh = epoll_create1(EPOLL_CLOEXEC);
    if (fresh < 0)
        return; /* (epfd -1: the next uvc_fdset_ctl tries again) */
    s->keep = fcntl(fresh, F_DUPFD_CLOEXEC, 0);
    s->witnessed = add_witness(s, fresh);
    /* What the set held: a watched fd closed since is refused here, and the caller's next
     * change to it gets UV_ENOENT. */
    register_all(s, fresh, -1);
    s->epfd = fresh;
    /* The same handle, on the new number (the guard's cut-off left it watching nothing). */
    s->poll.io_watcher.fd = fresh;
    if (uv_poll_start(&s->poll, UV_READABLE, fdset_cb) == 0)
        uvc_fdguard_add_io(L, &s->base, &s->poll.io_watcher);
}

static int epoll_events(int events) {
    return ((events & UVC_READABLE) ? EPOLLIN : 0) | ((events & UVC_WRITABLE) ? EPOLLOUT : 0);
}

int64_t uvc_fdset_ctl(uvc_loop_t *L, int fd, int old, int events) {
    if (L->closed || L->fdset == NULL)
        return UV_EBADF;
    uvc_fdset_t *s = (uvc_fdset_t *)L->fdset;
    if (fd < 0)
        return UV_EBADF;
    /* The set's own number: what the caller holds is an fd closed before the set was
     * opened (the set took the lowest free number), EBADF as for any closed fd; or the set
     * was closed under the loop and the number is the caller's file now. */
    if (s->epfd < 0 || (fd == s->epfd && !set_is_ours(s)))
        set_lose(s);
    int epfd = s->epfd;
    if (epfd < 0)
        return UV_ENOMEM; /* no new set could be made (out of fds: EMFILE went with errno) */
    if (fd == epfd)
        return UV_EBADF;
    fdset_reg_t *r = reg_of(s, fd, events != 0);
    struct epoll_event e = {0};
    e.events = (uint32_t)epoll_events(events);
    if (events == 0) {
        /* EBADF or ENOENT: closing the fd took it out of the set already (or left it to a
         * duplicate's file, which fdset_cb finds stale). */
        int failed = epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &e) != 0 &&
                     (errno == EBADF || errno == EINVAL);
        if (r != NULL)
            r->events = 0;
        if (failed && !set_is_ours(s))
            set_lose(s);
        return L->polls;
    }
    if (r == NULL)
        return UV_ENOMEM;
    int op = old == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    /* A change keeps the registration's generation; a new one gets the next. */
    uint32_t gen = op == EPOLL_CTL_MOD && r->events != 0 ? r->gen : ++s->gen;
    e.data.u64 = reg_data(fd, gen);
    int ok = epoll_ctl(epfd, op, fd, &e) == 0;
    int failure = errno; /* (the fd's error, unless the set turns out to be gone) */
    if (!ok && (failure == EBADF || failure == EINVAL) && !set_is_ours(s)) {
        /* The fd may be fine and the set gone: once more on a new set (which holds the fd
         * again if it was watched, so a change stays a change). */
        set_lose(s);
        epfd = s->epfd;
        if (epfd < 0)
            return UV_ENOMEM;
        if (op == EPOLL_CTL_MOD && r->events == 0)
            return UV_ENOENT; /* closed meanwhile: the new set could not take it back */
        ok = epoll_ctl(epfd, op, fd, &e) == 0;
        failure = errno;
    }
    errno = failure;
    /* A registration that survived through a duplicate of a closed fd (ADD gives EEXIST):
     * make it what is asked. */
    if (!ok && errno == EEXIST && op == EPOLL_CTL_ADD)
        ok = epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &e) == 0;
    if (ok) {
        r->events = e.events;
        r->gen = gen;
        return L->polls;
    }
    /* MOD gives ENOENT when the fd dropped out of the set (closed, its number maybe another
     * file's now): UV_ENOENT, nothing registered.  What it was watched for (``old``) was
     * for the file that is gone; re-adding it would run those callbacks for the new file. */
    int err = uv_translate_sys_error(errno);
    if (op == EPOLL_CTL_MOD)
        r->events = 0;
    return err;
}

int uvc_fdset_fd(uvc_loop_t *L) {
    if (L->closed || L->fdset == NULL)
        return UV_EBADF;
    int epfd = ((uvc_fdset_t *)L->fdset)->epfd;
    return epfd >= 0 ? epfd : UV_EBADF;
}

void uvc_fdset_after_fork(uvc_loop_t *L) {
    if (L->closed || L->fdset == NULL)
        return;
    uvc_fdset_t *s = (uvc_fdset_t *)L->fdset;
    if (s->epfd < 0)
        return; /* lost: its next uvc_fdset_ctl makes a new one */
    int fresh = epoll_create1(EPOLL_CLOEXEC);
    if (fresh < 0)
        return;
    /* Same number, so libuv's poll on it (re-armed by uv_loop_fork) watches the new set. */
    dup3(fresh, s->epfd, O_CLOEXEC);
    close(fresh);
    s->witnessed = add_witness(s, s->epfd);
    /* The child's keep is of the parent's set, which the child must not hold open. */
    if (s->keep >= 0)
        dup3(s->epfd, s->keep, O_CLOEXEC);
    /* Empty: Python registers again what it watches. */
    if (s->regs != NULL)
        memset(s->regs, 0, sizeof *s->regs * (size_t)s->nregs);
}
