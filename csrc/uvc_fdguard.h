/* uvcffi fd guard: a stream's fd closed under the loop (os.close() on the number that
 * transport.get_extra_info("socket").fileno() gives) becomes an error for that transport,
 * never an abort of the process.
 *
 * libuv queues each change to what a handle watches and applies the queue with epoll_ctl
 * at the start of its next poll; when that fails for any reason but EEXIST (EBADF for a
 * closed fd, ENOENT or EPERM for a number reused since) it calls abort().  A prepare
 * handle runs after everything else of an iteration and just before that poll: for the
 * queued watchers of the streams registered here it makes the epoll_ctl call itself, as
 * libuv would, and takes them off the queue.  When the call fails, or when a first
 * registration (EPOLL_CTL_ADD) would watch a different file than the one the stream was
 * opened with (the number closed and reused), the stream is cut off from libuv (its fd
 * number forgotten, so closing the handle closes nobody's file) and Python gets
 * UVC_EV_FD_LOST with UV_EBADF (the transport fails, paused or not); every later call on the slot but uvc_close fails with
 * UV_EBADF.  UDP handles are guarded the same way: their fd is libuv's own duplicate,
 * which only a stray close can reach (a socket object closed twice, the number reused by
 * the duplicate in between), and libuv aborts on it all the same.  So are a listener's
 * poll (uvc_stream.h) on its duplicate of the listening socket, for the same reason, and the fd set's
 * poll (uvc_fdset.h), which has no transport to fail: cut off, it starts again on a new
 * epoll fd (uvc_fdset_reopen) and no UVC_EV_FD_LOST is sent.  The common path costs nothing more than libuv's own epoll_ctl, plus an
 * fstat() per EPOLL_CTL_ADD.
 *
 * This reads fields of uv_loop_t and uv__io_t that uv.h declares but calls private
 * (watcher_queue, watchers, pevents, events, fd); their layout is the same in libuv 1.44
 * and in later 1.x, whose queue is a struct of the same two pointers.
 */
#ifndef UVC_FDGUARD_H
#define UVC_FDGUARD_H

#include "uvc_core.h"

/* cffi-begin */
/* (nothing for Python: the guard works inside the C core) */
/* cffi-end */

/* Start the guard on a new loop (a prepare handle inside uvc_loop_t). */
void uvc_fdguard_init(uvc_loop_t *L);
/* Before a new stream takes ``fd``: cut off a guarded stream that still names that number
 * (its own fd was closed under it unnoticed). */
void uvc_fdguard_claim(uvc_loop_t *L, int fd);
/* Guard the fd a stream handle holds now (after uv_tcp_open, uv_pipe_open, uv_tcp_connect). */
void uvc_fdguard_add(uvc_loop_t *L, uvc_base_t *b, uv_stream_t *s);
/* The same for any handle's I/O watcher (a UDP handle's, after uv_udp_open). */
void uvc_fdguard_add_io(uvc_loop_t *L, uvc_base_t *b, uv__io_t *w);
/* A guarded handle's own I/O call found its fd closed under it (EBADF, or ENOTSOCK for a
 * number reused by something else): cut it off as the guard would (UVC_EV_FD_LOST now,
 * ``err`` its error).  Returns 1 if it was guarded, else 0 (nothing done). */
int uvc_fdguard_lost(uvc_loop_t *L, uvc_base_t *b, int err);
/* Whether a guarded handle's fd number names no file, or another file than the one it was
 * guarded with (an fstat: for error paths).  0 if it is not guarded. */
int uvc_fdguard_moved(uvc_loop_t *L, uvc_base_t *b);
/* Stop guarding a slot's fd: before uv_close, which closes the fd (and, if the fd was
 * closed under the stream, now names nobody's file or another's, forgets it first so that
 * uv_close closes nothing). */
void uvc_fdguard_remove(uvc_loop_t *L, uvc_base_t *b);
/* Take a watcher off every libuv structure that names its fd, with no syscall on that
 * number (it may be another file's now): its fd becomes -1. */
void uvc_fdguard_detach_io(uv_loop_t *loop, uv__io_t *w);
/* Free the guard's table (the loop is going). */
void uvc_fdguard_free(uvc_loop_t *L);

#endif
