/* uvcffi stream handles: TCP (uv_tcp_t) and pipes / Unix sockets (uv_pipe_t).
 *
 * These primitives work on any stream slot and are shared by the socket transports
 * (transports/stream.py) and the pipe transports (transports/pipe.py).
 *
 * Events (see uvc_core.h): UVC_EV_READ (data in the arena), UVC_EV_EOF, UVC_EV_READ_ERROR,
 * UVC_EV_WRITE_DONE (a = status, b = bytes that request had queued), UVC_EV_SHUTDOWN,
 * UVC_EV_CONNECT, UVC_EV_ACCEPT (on a listener slot), UVC_EV_READABLE (read-into mode),
 * UVC_EV_WRITE_QUEUED (see uvc_write).
 */
#ifndef UVC_STREAM_H
#define UVC_STREAM_H

#include "uvc_core.h"

/* cffi-begin */
int uvc_tcp_new(uvc_loop_t *L);
int uvc_pipe_new(uvc_loop_t *L, int ipc);
/* Adopt an open fd (socket, pipe, FIFO, character device) into a stream slot. */
int uvc_stream_open(uvc_loop_t *L, int slot, int fd);

int uvc_read_start(uvc_loop_t *L, int slot);
int uvc_read_stop(uvc_loop_t *L, int slot);

/* Read-into mode, for a reader with buffers of its own (a BufferedProtocol): libuv reads
 * nothing and only reports, with UVC_EV_READABLE once per iteration while it lasts, that
 * the stream has data, EOF or an error waiting; the reader then reads with uvc_read_into
 * straight into its buffer, as asyncio's recv_into does, with no copy through the arena.
 * uvc_read_stop ends this mode as it ends the other.  Not for IPC pipes (fd passing). */
int uvc_readable_start(uvc_loop_t *L, int slot);
/* One read of up to ``len`` bytes (len > 0) into ``buf``: the bytes read, 0 at EOF,
 * UV_EAGAIN when nothing is there (yet), or another negative uv error.  Where a write met
 * the connection's error (a reset) before this read could, the read returns that error,
 * not the 0 it finds, as a read that came first would have.  Reading stays on after EOF
 * or an error: the reader stops it. */
int64_t uvc_read_into(uvc_loop_t *L, int slot, char *buf, size_t len);
/* uvc_read_into the loop's receive buffer (uvc_recv_buffer), UVC_RECV_MAX at most: how a
 * Protocol's stream is read in read-into mode.  The data is valid until the next read. */
int64_t uvc_stream_recv(uvc_loop_t *L, int slot);
/* What the last uvc_stream_recv returned: the pure-Python dispatch reads it when an
 * interruption came between that call's return and the use of its result (the read is in
 * the receive buffer, and kept for the next run). */
int64_t uvc_stream_last_recv(uvc_loop_t *L);

/* Write now what the fd takes (uv_try_write) and queue only the unsent tail, copied into
 * C-owned memory; any length (libuv gets 4 GiB or more as several buffers).  Returns the
 * bytes written at once (>= 0; the other len - n bytes complete with one
 * UVC_EV_WRITE_DONE whose b is len - n) or a negative uv error.
 *
 * While uvc_hold_writes is on, a write that fits the stream's hold limit (with what it
 * holds already) and finds libuv's queue empty is held instead: copied, reported as all
 * written (len), and sent with the stream's other held writes of the iteration in one
 * writev when uvc_run_once starts.  (An HTTP server writes a response's head and body in
 * two calls; the kernel time of a system call is ~1-2 us out of ~18 us per request.)  Held
 * bytes are not written yet: uvc_stream_held counts them.  A write that is not held sends
 * the held bytes first, in the same writev.  Held bytes the fd does not take are queued;
 * uvc_stream_held counts them too until uvc_stream_flush hands their number over (Python
 * adds them to its count of queued bytes, which each UVC_EV_WRITE_DONE then lowers), and a
 * UVC_EV_WRITE_QUEUED event of the stream says that uvc_run_once queued some. */
int64_t uvc_write(uvc_loop_t *L, int slot, const char *data, size_t len);
/* On: hold writes (Python runs the loop).  Off: send every held write now, the loop has
 * stopped; what is queued is told by UVC_EV_WRITE_QUEUED events when the loop runs again. */
void uvc_hold_writes(uvc_loop_t *L, int on);
/* The most a stream holds (the transport's high-water mark: held bytes never make it
 * pause); 0 never holds.  A new stream holds up to UVC_HOLD_LIMIT bytes. */
int uvc_stream_hold_limit(uvc_loop_t *L, int slot, int64_t limit);
/* Bytes held or queued by a flush and not handed over yet (0 for a closed slot). */
int64_t uvc_stream_held(uvc_loop_t *L, int slot);
/* Send what the stream holds now and hand over the bytes flushes queued: their number
 * (>= 0; Python counts them as queued from then on) or a negative uv error (the held bytes
 * are lost). */
int64_t uvc_stream_flush(uvc_loop_t *L, int slot);
/* An accepted TCP connection's peer address as accept4 gave it, copied into buf: its
 * length, 0 when none is known (or len is too small), UV_EBADF for no stream slot. */
int uvc_stream_peer(uvc_loop_t *L, int slot, char *buf, int len);
/* Forget what the stream holds (abort). */
void uvc_stream_drop_held(uvc_loop_t *L, int slot);
/* Half-close after the queued writes: UVC_EV_SHUTDOWN follows. */
int uvc_shutdown(uvc_loop_t *L, int slot);

/* A listener slot for a bound stream socket (TCP when is_tcp, else AF_UNIX).  It listens
 * on a duplicate of ``fd``, closed with the slot: ``fd`` stays the caller's, and its
 * os.close() (or the reuse of its number by another file) under a running server never
 * reaches libuv, which aborts when epoll_ctl meets a closed fd.  A stray close of the
 * duplicate itself (its number closed, or another file's now) is the fd guard's
 * (uvc_fdguard.h): UVC_EV_FD_LOST with UV_EBADF, the slot accepting no more and closing no
 * fd; the caller's fd is untouched, for a new listener slot. */
int uvc_listener_new(uvc_loop_t *L, int fd, int is_tcp);
/* listen(backlog) and accept: each connection is accepted in C into a new slot, TCP or pipe
 * (TCP with TCP_NODELAY set, as asyncio does): UVC_EV_ACCEPT with a = 0, b = the new slot,
 * c = its fd.  At most ``backlog`` connections per readiness event.
 * An accept error is UVC_EV_ACCEPT with a = the error, b = -1 and c = 1 when accepting has
 * paused (out of fds or memory: EMFILE, ENFILE, ENOBUFS, ENOMEM): the listener then waits
 * for uvc_listener_resume, the connections waiting in the kernel's backlog. */
int uvc_listen(uvc_loop_t *L, int slot, int backlog);
int uvc_listener_resume(uvc_loop_t *L, int slot);
/* Stop accepting and close the listening fd now; UVC_EV_CLOSED follows. */
int uvc_listener_close(uvc_loop_t *L, int slot);
/* Test-only (the loop connects Python sockets, see sock_connect): connect an (opened or
 * fresh) TCP slot; UVC_EV_CONNECT with a = status follows. */
int uvc_tcp_connect(uvc_loop_t *L, int slot, const char *ip, int port, unsigned int flowinfo,
                    unsigned int scope_id);
int uvc_tcp_nodelay(uvc_loop_t *L, int slot, int enable);
/* cffi-end */

#endif
