/* uvcffi child processes: see uvc_process.h. */
#include "uvc_process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

typedef struct uvc_exitwatch_s uvc_exitwatch_t;

/* A process started by uv_spawn. */
typedef struct {
    uvc_base_t base;
    uv_process_t proc;
    int pid;
    int exited;
    uvc_exitwatch_t *watch;     /* its pidfd watch, or NULL */
} uvc_proc_t;

/* A pidfd polled for the exit of `pid`.  With an owner it reports on the owner's slot (and
 * is invisible to Python); without one it is the process slot itself. */
struct uvc_exitwatch_s {
    uvc_base_t base;
    uv_poll_t poll;
    int pidfd;
    int pid;
    int exited;
    uvc_proc_t *owner;
};

static int pidfd_open(int pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

static void close_handle(uvc_base_t *b) {
    if (!uv_is_closing(b->handle))
        uv_close(b->handle, uvc_close_cb);
}

static void watch_free(uvc_base_t *b) {
    uvc_exitwatch_t *w = (uvc_exitwatch_t *)b;
    if (w->owner != NULL)
        w->owner->watch = NULL;
    if (w->pidfd >= 0)
        close(w->pidfd);
}

static void proc_free(uvc_base_t *b) {
    uvc_proc_t *p = (uvc_proc_t *)b;
    if (p->watch != NULL) {
        p->watch->owner = NULL;
        close_handle(&p->watch->base);
    }
}

/* The exit has been seen: one EXIT event, then close what watched it. */
static void proc_exited(uvc_proc_t *p, int64_t status, int64_t sig, int how) {
    if (p->exited)
        return;
    p->exited = 1;
    uvc_emit(p->base.loop, UVC_EV_EXIT, p->base.slot, status, sig, how);
    close_handle(&p->base);
}

static void exit_cb(uv_process_t *proc, int64_t exit_status, int term_signal) {
    proc_exited(proc->data, exit_status, term_signal, UVC_EXIT_REAPED);
}

static void watch_cb(uv_poll_t *poll, int status, int events) {
    uvc_exitwatch_t *w = poll->data;
    int wstatus = 0;
    pid_t r;
    (void)status;
    (void)events;
    if (w->exited || (w->owner != NULL && w->owner->exited)) {
        close_handle(&w->base);
        return;
    }
    if (w->owner == NULL) {
        /* A Popen's child: only look (WNOWAIT), and leave the reaping to Python's handling
         * of the event.  Reaped here, during the poll, the child would be gone before the
         * callbacks that were ready before the poll run: code in them holding the Popen
         * (Popen.wait(), Popen.poll()) would find no child, and Popen reports a child it
         * cannot find as returncode 0, whatever its status was. */
        siginfo_t info;
        memset(&info, 0, sizeof info);
        do
            r = waitid(P_PID, (id_t)w->pid, &info, WEXITED | WNOHANG | WNOWAIT);
        while (r < 0 && errno == EINTR);
        if (r == 0 && info.si_pid == 0)
            return; /* not a zombie yet: a spurious wake-up */
        w->exited = 1;
        uvc_emit(w->base.loop, UVC_EV_EXIT, w->base.slot, 0, 0,
                 r == 0 ? UVC_EXIT_UNREAPED : UVC_EXIT_UNKNOWN);
        close_handle(&w->base);
        return;
    }
    do
        r = waitpid(w->pid, &wstatus, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return; /* not a zombie yet: a spurious wake-up */
    int64_t code = 255, sig = 0;
    int how = UVC_EXIT_UNKNOWN;
    if (r == w->pid) {
        how = UVC_EXIT_REAPED;
        code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 0;
        sig = WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0;
    }
    /* r < 0 (ECHILD): reaped by someone else (a waitpid(-1) SIGCHLD handler, or Python
     * code holding the pid): the status is gone, as asyncio reports it (255). */
    w->exited = 1;
    proc_exited(w->owner, code, sig, how);
    close_handle(&w->base);
}

/* A pidfd watch for pid; NULL when pidfds are unavailable (or out of memory). */
static uvc_exitwatch_t *watch_new(uvc_loop_t *L, int pid, int *err) {
    int fd = pidfd_open(pid);
    if (fd < 0) {
        *err = uv_translate_sys_error(errno);
        return NULL;
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    uvc_exitwatch_t *w = uvc_handle_alloc(L, sizeof *w, offsetof(uvc_exitwatch_t, poll));
    if (w == NULL) {
        close(fd);
        *err = UV_ENOMEM;
        return NULL;
    }
    w->pidfd = fd;
    w->pid = pid;
    int r = uv_poll_init(&L->uv, &w->poll, fd);
    if (r < 0) {
        close(fd);
        uvc_handle_discard(w); /* never seen by libuv */
        *err = r;
        return NULL;
    }
    w->poll.data = w;
    w->base.on_free = watch_free;
    r = uv_poll_start(&w->poll, UV_READABLE, watch_cb);
    if (r < 0) {
        close_handle(&w->base); /* libuv's now: closed, the pidfd goes in watch_free */
        *err = r;
        return NULL;
    }
    return w;
}

int uvc_spawn(uvc_loop_t *L, const char *file, char **args, char **env, const char *cwd,
              const int *fds, int nfds, int flags, int *pid) {
    uv_stdio_container_t stdio_small[8];
    uv_stdio_container_t *stdio = stdio_small;
    int nonblock[3] = {0, 0, 0};
    if (nfds > (int)(sizeof stdio_small / sizeof stdio_small[0])) {
        stdio = calloc((size_t)nfds, sizeof *stdio);
        if (stdio == NULL)
            return UV_ENOMEM;
    }
    for (int i = 0; i < nfds; i++) {
        if (fds[i] < 0) {
            stdio[i].flags = UV_IGNORE;
        } else {
            stdio[i].flags = UV_INHERIT_FD;
            stdio[i].data.fd = fds[i];
            /* libuv makes the child's fds 0-2 blocking, which changes the open file
             * description the parent shares: remember O_NONBLOCK to put it back. */
            if (i <= 2) {
                int fl = fcntl(fds[i], F_GETFL);
                nonblock[i] = fl >= 0 && (fl & O_NONBLOCK);
            }
        }
    }

    uvc_proc_t *p = uvc_handle_alloc(L, sizeof *p, offsetof(uvc_proc_t, proc));
    if (p == NULL) {
        if (stdio != stdio_small)
            free(stdio);
        return UV_ENOMEM;
    }
    uv_process_options_t opts;
    memset(&opts, 0, sizeof opts);
    opts.exit_cb = exit_cb;
    opts.file = file;
    opts.args = args;
    opts.env = env;
    opts.cwd = cwd;
    opts.stdio = stdio;
    opts.stdio_count = nfds;
    if (flags & UVC_SPAWN_SETSID)
        opts.flags |= UV_PROCESS_DETACHED;

    struct sigaction before, after;
    sigaction(SIGCHLD, NULL, &before);
    int r = uv_spawn(&L->uv, &p->proc, &opts);
    p->proc.data = p;
    p->base.on_free = proc_free;
    if (stdio != stdio_small)
        free(stdio);
    if (r < 0) {
        /* uv_spawn initialised the handle even when it failed: it must be closed.  Python
         * never registers the slot, so its CLOSED event finds no owner. */
        p->exited = 1;
        close_handle(&p->base);
        return r;
    }
    p->pid = p->proc.pid;
    *pid = p->pid;
    /* The child has exec'd (uv_spawn waits for that), so its fixes to the shared stdio
     * descriptions are done: restore the parent's non-blocking mode. */
    for (int i = 0; i < nfds && i <= 2; i++) {
        if (nonblock[i]) {
            int fl = fcntl(fds[i], F_GETFL);
            if (fl >= 0 && !(fl & O_NONBLOCK))
                fcntl(fds[i], F_SETFL, fl | O_NONBLOCK);
        }
    }

    int err = 0;
    p->watch = watch_new(L, p->pid, &err);
    if (p->watch != NULL) {
        p->watch->owner = p;
        /* uv_spawn installs libuv's SIGCHLD handler the first time; if it displaced a
         * handler that was there (Python's, for an application's SIGCHLD handler), put
         * that one back: the pidfd reports this loop's exits without libuv's handler. */
        sigaction(SIGCHLD, NULL, &after);
        if (after.sa_handler != before.sa_handler && before.sa_handler != SIG_DFL &&
            before.sa_handler != SIG_IGN)
            sigaction(SIGCHLD, &before, NULL);
    }
    return p->base.slot;
}

int uvc_process_watch(uvc_loop_t *L, int pid) {
    int err = 0;
    uvc_exitwatch_t *w = watch_new(L, pid, &err);
    if (w == NULL)
        return err;
    return w->base.slot;
}

int uvc_process_kill(uvc_loop_t *L, int slot, int signum) {
    uvc_base_t *b = uvc_slot_get(L, slot);
    if (b == NULL)
        return UV_ESRCH;
    int pid;
    if (b->handle->type == UV_PROCESS) {
        uvc_proc_t *p = (uvc_proc_t *)b;
        if (p->exited)
            return UV_ESRCH;
        pid = p->pid;
    } else if (b->handle->type == UV_POLL && b->on_free == watch_free) {
        uvc_exitwatch_t *w = (uvc_exitwatch_t *)b;
        if (w->exited || w->owner != NULL)
            return UV_ESRCH;
        pid = w->pid;
    } else {
        return UV_EBADF;
    }
    return uv_kill(pid, signum);
}

int uvc_spawn_would_reset_signals(void) {
    sigset_t mask;
    if (pthread_sigmask(SIG_BLOCK, NULL, &mask) != 0)
        return 1; /* cannot tell */
    for (int s = 1; s < NSIG; s++) { /* the whole mask is emptied */
        if (sigismember(&mask, s) == 1)
            return 1;
    }
    for (int s = 1; s < 32; s++) { /* (an ignored realtime signal stays ignored) */
        /* Popen's restore_signals puts these back to SIG_DFL too (Python ignores them). */
        if (s == SIGPIPE || s == SIGXFSZ || s == SIGKILL || s == SIGSTOP)
            continue;
        struct sigaction sa;
        if (sigaction(s, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) &&
            sa.sa_handler == SIG_IGN)
            return 1;
    }
    return 0;
}
