/* uvcffi sock_* helpers: see uvc_sock.h. */
#include "uvc_sock.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>

/* asyncio's transports read 256 KiB at a time; a sock_recv asking for more gets at most
 * this much per call, which recv()'s contract allows. */
#define UVC_SOCK_RECV_MAX (256 * 1024)

int64_t uvc_sock_recv(uvc_loop_t *L, int fd, size_t n) {
    if (L->closed)
        return UV_EBADF;
    if (L->sock_buffer == NULL) {
        /* On a cache line, for the reason uvc_arena_claim gives. */
        L->sock_buffer = aligned_alloc(64, UVC_SOCK_RECV_MAX);
        if (L->sock_buffer == NULL)
            return UV_ENOMEM;
    }
    if (n > UVC_SOCK_RECV_MAX)
        n = UVC_SOCK_RECV_MAX;
    for (;;) {
        ssize_t r = recv(fd, L->sock_buffer, n, 0);
        if (r >= 0)
            return r;
        if (errno != EINTR)
            return uv_translate_sys_error(errno);
    }
}

char *uvc_sock_buffer(uvc_loop_t *L) { return L->sock_buffer; }
