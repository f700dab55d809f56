/* uvcffi fd set: the fds the loop watches but does not own (add_reader/add_writer, the
 * sock_* waits, a write pipe's hang-up watch).
 *
 * They live in an epoll set of the core's own, which libuv watches through one uv_poll on
 * the set's fd, not in libuv's epoll set: libuv applies its pending epoll changes at the
 * start of each poll and aborts the process when epoll_ctl fails (EBADF for an fd closed
 * under the loop, ENOENT for a number reused since), and a user may close such an fd at
 * any moment.  Here every epoll_ctl runs at once, in the call that asks for it, so a
 * closed fd is an error code for that call (add_reader raises OSError, as asyncio's
 * selector does), and a registration the kernel dropped is made again, for what the new
 * call asks only (see uvc_fdset_ctl's UV_ENOENT).
 *
 * Events: UVC_EV_POLL with slot = the set's slot, a = fd, b = UVC_READABLE|UVC_WRITABLE
 * (an error or hang-up reports both, as the selectors module does), c = the number of the
 * poll that saw it.  Python runs callbacks between a poll and the dispatch of its events:
 * one of them may consume the fd's data and watch it anew.  Such a watch, made after the
 * poll (uvc_fdset_ctl returns the poll number it was made after), must not get the event,
 * as asyncio's selector loop only runs the handles it found registered when it polled.
 *
 * A registration epoll keeps for a closed fd whose file lives on in a duplicate is never
 * reported: each event carries its registration's generation, and one that is not the
 * number's current registration makes the set be rebuilt without it (uvc_fdset.c).
 *
 * The set's own epoll fd closed under the loop (a stray os.close() of its number: a double
 * close) never aborts the process and never silences the watched fds: the set starts again
 * on a new epoll fd with every registration it held, found out by the fd guard before
 * libuv's first poll of it, and afterwards by the first failing call on it (fdset_cb's
 * epoll_wait, which libuv still runs since a second fd keeps the set's file open, or a
 * watch's epoll_ctl).  The old number is never closed or read again: another file may
 * have it (see uvc_fdset.c).
 */
#ifndef UVC_FDSET_H
#define UVC_FDSET_H

#include "uvc_core.h"

/* cffi-begin */
/* Open the loop's fd set (once; later calls return the same slot).  Returns its slot. */
int uvc_fdset_open(uvc_loop_t *L);
/* Watch ``fd`` for ``events`` (UVC_READABLE|UVC_WRITABLE; 0 stops watching it), ``old``
 * being what it was watched for.  Returns the number of polls so far (>= 0: events stamped
 * with a greater number are the first this watch may get) or a negative uv error (the
 * fd's: UV_EBADF, UV_EPERM for a regular file ...).  UV_ENOENT (``old`` != 0 only): the
 * fd left the set since (closed; its number may be another file's now), and nothing is
 * watched: the caller forgets what it watched it for and starts again with ``old`` = 0.
 * Stopping never fails: a closed fd is already gone. */
int64_t uvc_fdset_ctl(uvc_loop_t *L, int fd, int old, int events);
/* The set's epoll fd (tests read its registrations from /proc), or a negative uv error. */
int uvc_fdset_fd(uvc_loop_t *L);
/* cffi-end */

/* After fork: give the child an epoll set of its own under the same fd number (the one it
 * inherited is the parent's set).  Python then registers its fds again. */
void uvc_fdset_after_fork(uvc_loop_t *L);
/* For the fd guard (uvc_fdguard.c), when the set's number was closed under the loop: the
 * set lets go of the number (never to close it), then starts again on a new epoll fd and
 * poll watch, holding every registration it held (UV_ENOENT later for one that fails). */
void uvc_fdset_forgotten(uvc_loop_t *L);
/* Whether the set's number still is its epoll set (every epoll fd is one inode to fstat). */
int uvc_fdset_is_ours(uvc_loop_t *L);
void uvc_fdset_reopen(uvc_loop_t *L);

#endif
