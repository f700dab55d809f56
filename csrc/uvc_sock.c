/* uvcffi sock_* helpers: see uvc_sock.h. */
#include "uvc_sock.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>

int64_t uvc_sock_recv(uvc_loop_t *L, int fd, size_t n) {
    if (L->closed)
        return UV_EBADF;
    char *buf = uvc_recv_buffer(L);
    if (buf == NULL)
        return UV_ENOMEM;
    /* asyncio's transports read 256 KiB at a time; a sock_recv asking for more gets at
     * most this much per call, which recv()'s contract allows. */
    if (n > UVC_RECV_MAX)
        n = UVC_RECV_MAX;
    for (;;) {
        /* MSG_DONTWAIT whatever the fd's O_NONBLOCK says: the number may be another file's
         * by now (closed under the wait, its file kept open elsewhere, so epoll still
         * reports it), or user code may have made the socket blocking.  A loop must never
         * sleep in a receive: "nothing yet" lets the wait go on. */
        ssize_t r = recv(fd, buf, n, MSG_DONTWAIT);
        if (r >= 0)
            return r;
        if (errno != EINTR)
            return uv_translate_sys_error(errno);
    }
}
