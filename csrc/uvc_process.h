/* uvcffi child processes: uv_spawn, exit watching and signals.
 *
 * A spawned process is a slot holding a uv_process_t.  Its exit is one UVC_EV_EXIT event
 * (slot, a = exit status, b = terminating signal, c = how it was seen: UVC_EXIT_*), after
 * which C closes the handle at once: its
 * UVC_EV_CLOSED follows in the same batch.  Closing the handle right away takes it out of
 * libuv's SIGCHLD bookkeeping before the pid can be reused by another process.
 *
 * Exits are seen two ways, whichever comes first:
 *  - libuv's own SIGCHLD handler (uv_spawn installs it, and reaps with waitpid(pid));
 *  - a pidfd (Linux 5.3+) polled for readability, reaped here with waitpid(pid).
 * The pidfd keeps exits coming when the C-level SIGCHLD handler is not libuv's: Python's
 * signal module replaces it when an application (or asyncio's SafeChildWatcher) calls
 * add_signal_handler(SIGCHLD) or signal.signal(SIGCHLD, ...).  With a pidfd in place,
 * uvc_spawn also gives SIGCHLD back to a handler that was installed before libuv took it,
 * so spawning never silences the application's own SIGCHLD handler either.
 *
 * Processes started by other means (subprocess.Popen, for options uv_spawn cannot express)
 * are watched with uvc_process_watch(): same events, on a slot of their own, but C does not
 * reap those children (UVC_EXIT_UNREAPED): Python does when it handles the event, so that
 * code holding the Popen never finds its child gone with the status unknown to it.
 */
#ifndef UVC_PROCESS_H
#define UVC_PROCESS_H

#include "uvc_core.h"

/* cffi-begin */
enum {
    UVC_SPAWN_SETSID = 1    /* start_new_session: setsid() in the child */
};

/* How a UVC_EV_EXIT saw the exit (its c word). */
enum {
    UVC_EXIT_REAPED = 0,    /* reaped here: a and b hold the status */
    UVC_EXIT_UNKNOWN = 1,   /* something else reaped the child: its status is gone */
    UVC_EXIT_UNREAPED = 2   /* (uvc_process_watch) exited, left for the caller to reap */
};

/* Spawn `file` with argv `args` (NULL-terminated), environment `env` (NULL-terminated
 * "K=V" strings, or NULL to inherit) in `cwd` (or NULL).  The child's fd i (i < nfds) is
 * the parent's fds[i], or for fds[i] < 0: /dev/null for i <= 2, left alone above.
 * Returns the process slot (>= 0) or a negative uv error (UV_ENOENT when exec failed);
 * *pid receives the child's pid. */
int uvc_spawn(uvc_loop_t *L, const char *file, char **args, char **env, const char *cwd,
              const int *fds, int nfds, int flags, int *pid);
/* Watch a child of this process started elsewhere; UVC_EV_EXIT on the returned slot.
 * UV_ENOSYS when the kernel has no pidfd. */
int uvc_process_watch(uvc_loop_t *L, int pid);
/* Send a signal; UV_ESRCH once the exit has been seen (the pid may belong to another
 * process by then). */
int uvc_process_kill(uvc_loop_t *L, int slot, int signum);
/* 1 when a uv_spawn child would not inherit the calling thread's signal state as a Popen
 * child does: libuv's child resets signals 1-31 to SIG_DFL and empties the signal mask, so
 * an ignored signal (nohup's SIGHUP, a background job's SIGINT, SIGCHLD auto-reaping) or a
 * blocked one would be lost; 0 otherwise. */
int uvc_spawn_would_reset_signals(void);
/* cffi-end */

#endif
