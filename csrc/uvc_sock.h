/* uvcffi sock_* helpers: receiving on a caller's socket without Python's costs.
 *
 * socket.recv(n) allocates a buffer of n bytes on every call (sock_recv(sock, 256 KiB) for a
 * 1 KiB message: an mmap'd block on CPython, 50 us on PyPy) and reports "would block" with
 * an exception.  uvc_sock_recv receives into a buffer the loop keeps and reuses, returns
 * the length, and says "would block" with UV_EAGAIN; Python then makes bytes of exactly
 * what arrived.
 */
#ifndef UVC_SOCK_H
#define UVC_SOCK_H

#include "uvc_core.h"

/* cffi-begin */
/* recv(fd, at most n bytes, capped at UVC_RECV_MAX) into the loop's receive buffer
 * (uvc_recv_buffer): the bytes received (0 at end of stream), or a negative uv error
 * (UV_EAGAIN: nothing yet). */
int64_t uvc_sock_recv(uvc_loop_t *L, int fd, size_t n);
/* cffi-end */

#endif
