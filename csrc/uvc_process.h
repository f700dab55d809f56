/* uvcffi child processes: exit watching.
 *
 * Children are started by Python (subprocess.Popen, as asyncio starts them); C watches each
 * for its exit through a pidfd (Linux 5.3+) polled for readability by a libuv poll handle.
 * The exit is one UVC_EV_EXIT event on the watch's slot (c = how it was seen: UVC_EXIT_*),
 * after which C closes the handle at once: its UVC_EV_CLOSED follows in the same batch.
 *
 * C does not reap the child (UVC_EXIT_UNREAPED): Python does when it handles the event, so
 * that code holding the Popen never finds its child gone with the status unknown to it (the
 * callbacks that were ready before a poll run before that poll's events are handed out).
 * A pidfd needs no SIGCHLD handler: an application's own (add_signal_handler(SIGCHLD), or
 * asyncio's SafeChildWatcher) is left alone.
 */
#ifndef UVC_PROCESS_H
#define UVC_PROCESS_H

#include "uvc_core.h"

/* cffi-begin */
/* How a UVC_EV_EXIT saw the exit (its c word). */
enum {
    UVC_EXIT_UNKNOWN = 1,   /* something else reaped the child: its status is gone */
    UVC_EXIT_UNREAPED = 2   /* exited, left for the caller to reap */
};

/* Watch a child of this process; UVC_EV_EXIT on the returned slot.  UV_ENOSYS when the
 * kernel has no pidfd. */
int uvc_process_watch(uvc_loop_t *L, int pid);
/* cffi-end */

#endif
