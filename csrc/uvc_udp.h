/* uvcffi UDP: datagram sockets created in Python and adopted by a libuv uv_udp_t.
 *
 * Receives land in the read arena: UVC_EV_UDP_RECV (a = data offset, b = length,
 * c = offset of the sender's sockaddr, always UVC_SOCKADDR_SIZE bytes, zero-padded) or
 * UVC_EV_READ_ERROR (a = uv error, e.g. UV_ECONNREFUSED after an ICMP port unreachable on
 * a connected socket).  Sends are tried at once; what would block is copied into C memory
 * and queued, and its completion is UVC_EV_UDP_SEND (a = status, b = bytes).
 */
#ifndef UVC_UDP_H
#define UVC_UDP_H

#include "uvc_core.h"

/* cffi-begin */
enum {
    UVC_SOCKADDR_SIZE = 28,   /* sizeof(struct sockaddr_in6): room for either family */
    UVC_UDP_SENT = 0,         /* uvc_udp_send: the datagram went out now                */
    UVC_UDP_QUEUED = 1        /* uvc_udp_send: copied and queued; UVC_EV_UDP_SEND follows */
};

/* Adopt the datagram socket `fd` (AF_INET or AF_INET6): libuv gets a duplicate of it,
 * closed with the slot; `fd` stays the caller's.  Returns the slot or a uv error. */
int uvc_udp_open(uvc_loop_t *L, int fd);
/* Start (on != 0) or stop receiving. */
int uvc_udp_recv(uvc_loop_t *L, int slot, int on);
/* Send one datagram to `addr` (a UVC_SOCKADDR_SIZE sockaddr, or NULL on a connected
 * socket): UVC_UDP_SENT, UVC_UDP_QUEUED or a uv error (UV_EMSGSIZE for one of 4 GiB or
 * more, which no datagram can be).  `queued` != 0 says datagrams are queued already: this
 * one goes behind them without a send attempt. */
int uvc_udp_send(uvc_loop_t *L, int slot, const char *data, size_t len, const char *addr,
                 int queued);
/* Fill `out` (UVC_SOCKADDR_SIZE bytes) with the sockaddr of a numeric host; returns 0 or
 * a uv error. */
int uvc_sockaddr_make(int family, const char *host, int port, unsigned int flowinfo,
                      unsigned int scope_id, char *out);
/* Read a sockaddr: returns its family (0 if unknown) and writes the numeric host to `host`
 * and port, flowinfo, scope id to info[0..2]. */
int uvc_sockaddr_read(const char *sa, char *host, size_t hostlen, unsigned int *info);
/* cffi-end */

#endif
