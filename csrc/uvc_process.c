/* uvcffi child processes: see uvc_process.h. */
#include "uvc_process.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/* A pidfd polled for the exit of `pid`. */
typedef struct {
    uvc_base_t base;
    uv_poll_t poll;
    int pidfd;
    int pid;
    int exited;
} uvc_exitwatch_t;

static void close_handle(uvc_base_t *b) {
    if (!uv_is_closing(b->handle))
        uv_close(b->handle, uvc_close_cb);
}

static void watch_free(uvc_base_t *b) {
    uvc_exitwatch_t *w = (uvc_exitwatch_t *)b;
    if (w->pidfd >= 0)
        close(w->pidfd);
}

static void watch_cb(uv_poll_t *poll, int status, int events) {
    uvc_exitwatch_t *w = poll->data;
    (void)status;
    (void)events;
    if (w->exited) {
        close_handle(&w->base);
        return;
    }
    /* Only look (WNOWAIT): reaped here, during the poll, the child would be gone before the
     * callbacks that were ready before the poll run, and code in them holding the Popen
     * (Popen.wait(), Popen.poll()) would find no child: Popen reports a child it cannot
     * find as returncode 0, whatever its status was. */
    siginfo_t info;
    memset(&info, 0, sizeof info);
    int r;
    do
        r = waitid(P_PID, (id_t)w->pid, &info, WEXITED | WNOHANG | WNOWAIT);
    while (r < 0 && errno == EINTR);
    if (r == 0 && info.si_pid == 0)
        return; /* not a zombie yet: a spurious wake-up */
    /* r < 0 (ECHILD): reaped by someone else (a waitpid(-1) SIGCHLD handler, or Python
     * code holding the Popen): Python takes the status from the Popen, if it has it. */
    w->exited = 1;
    uvc_emit(w->base.loop, UVC_EV_EXIT, w->base.slot, 0, 0,
             r == 0 ? UVC_EXIT_UNREAPED : UVC_EXIT_UNKNOWN);
    close_handle(&w->base);
}

int uvc_process_watch(uvc_loop_t *L, int pid) {
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0)
        return uv_translate_sys_error(errno);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    uvc_exitwatch_t *w = uvc_handle_alloc(L, sizeof *w, offsetof(uvc_exitwatch_t, poll));
    if (w == NULL) {
        close(fd);
        return UV_ENOMEM;
    }
    w->pidfd = fd;
    w->pid = pid;
    int r = uv_poll_init(&L->uv, &w->poll, fd);
    if (r < 0) {
        close(fd);
        uvc_handle_discard(w); /* never seen by libuv */
        return r;
    }
    w->poll.data = w;
    w->base.on_free = watch_free;
    r = uv_poll_start(&w->poll, UV_READABLE, watch_cb);
    if (r < 0) {
        close_handle(&w->base); /* libuv's now: closed, the pidfd goes in watch_free */
        return r;
    }
    return w->base.slot;
}
