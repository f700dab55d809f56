/* uvcffi fd set: see uvc_fdset.h. */
#define _GNU_SOURCE /* dup3 */
#include "uvc_fdset.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

/* Ready fds taken per wake-up; more stay ready (level-triggered) for the next iteration. */
#define UVC_FDSET_BATCH 256

typedef struct {
    uvc_base_t base;
    uv_poll_t poll;
    int epfd;
} uvc_fdset_t;

static void fdset_free(uvc_base_t *b) {
    uvc_fdset_t *s = (uvc_fdset_t *)b;
    s->base.loop->active++; /* slot_release counted it off; uvc_fdset_open never counted it */
    if (s->base.loop->fdset == b)
        s->base.loop->fdset = NULL;
    if (s->epfd >= 0)
        close(s->epfd);
}

static void fdset_cb(uv_poll_t *p, int status, int events) {
    uvc_fdset_t *s = p->data;
    struct epoll_event ready[UVC_FDSET_BATCH];
    (void)events;
    if (status < 0)
        return;
    int n = epoll_wait(s->epfd, ready, UVC_FDSET_BATCH, 0);
    for (int i = 0; i < n; i++) {
        uint32_t e = ready[i].events;
        /* selectors' rule: anything but "writable" counts as readable and vice versa, so an
         * error or hang-up wakes both callbacks, whose own I/O call then meets it. */
        int mask = ((e & ~(uint32_t)EPOLLOUT) ? UVC_READABLE : 0) |
                   ((e & ~(uint32_t)EPOLLIN) ? UVC_WRITABLE : 0);
        uvc_emit(s->base.loop, UVC_EV_POLL, s->base.slot, ready[i].data.fd, mask,
                 s->base.loop->polls);
    }
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
    /* The set is the loop's own, like its timer: uvc_active_slots counts what Python
     * opened, and tests read it to see that every handle of theirs is gone. */
    L->active--;
    int r = uv_poll_init(&L->uv, &s->poll, epfd);
    if (r < 0) {
        close(epfd);
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
    return s->base.slot;
}

static int epoll_events(int events) {
    return ((events & UVC_READABLE) ? EPOLLIN : 0) | ((events & UVC_WRITABLE) ? EPOLLOUT : 0);
}

int64_t uvc_fdset_ctl(uvc_loop_t *L, int fd, int old, int events) {
    if (L->closed || L->fdset == NULL)
        return UV_EBADF;
    int epfd = ((uvc_fdset_t *)L->fdset)->epfd;
    /* The set's own number: what the caller holds is an fd closed before the set was
     * opened (the set took the lowest free number).  EBADF, as for any closed fd. */
    if (fd == epfd)
        return UV_EBADF;
    struct epoll_event e = {0};
    e.events = (uint32_t)epoll_events(events);
    e.data.fd = fd;
    if (events == 0) {
        /* EBADF or ENOENT: closing the fd took it out of the set already. */
        epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &e);
        return L->polls;
    }
    int op = old == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    if (epoll_ctl(epfd, op, fd, &e) == 0)
        return L->polls;
    /* A registration that survived through a duplicate of a closed fd (ADD gives EEXIST):
     * make it what is asked. */
    if (errno == EEXIST && op == EPOLL_CTL_ADD) {
        if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &e) == 0)
            return L->polls;
    }
    /* MOD gives ENOENT when the fd dropped out of the set (closed, its number maybe another
     * file's now): UV_ENOENT, nothing registered.  What it was watched for (``old``) was
     * for the file that is gone; re-adding it would run those callbacks for the new file. */
    return uv_translate_sys_error(errno);
}

int uvc_fdset_fd(uvc_loop_t *L) {
    if (L->closed || L->fdset == NULL)
        return UV_EBADF;
    return ((uvc_fdset_t *)L->fdset)->epfd;
}

void uvc_fdset_after_fork(uvc_loop_t *L) {
    if (L->closed || L->fdset == NULL)
        return;
    uvc_fdset_t *s = (uvc_fdset_t *)L->fdset;
    int fresh = epoll_create1(EPOLL_CLOEXEC);
    if (fresh < 0)
        return;
    /* Same number, so libuv's poll on it (re-armed by uv_loop_fork) watches the new set. */
    dup3(fresh, s->epfd, O_CLOEXEC);
    close(fresh);
}
