"""uvcffi's Server (asyncio.AbstractServer): listening sockets whose connections the C core
accepts (UVC_EV_ACCEPT), each becoming a SocketTransport with a fresh protocol."""
from __future__ import annotations

import asyncio
import contextvars
import errno
import os
import socket
import stat
import sys
from asyncio import constants, trsock
from typing import TYPE_CHECKING, Any, Callable

from . import _owners as owners
from ._errors import check, uv_error
from ._uv import lib
from .transports import _sockref
from .transports.stream import SocketTransport, StreamTransportBase

if TYPE_CHECKING:
    from asyncio import BaseProtocol

    from ._tls import TLSMethods as Loop  # the loop: a CoreLoop, and its TLS layer

# accept() errors that mean "out of resources", as asyncio's _accept_connection names them.
# The C core pauses the listener on these (UVC_EV_ACCEPT's c = 1), and so does asyncio.
_ACCEPT_RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
EV_FD_LOST = lib.UVC_EV_FD_LOST


def adopt_stream_socket(loop: Loop, sock: socket.socket) -> tuple[int, bool]:
    """A new libuv stream slot (TCP, or pipe for AF_UNIX) that owns ``sock``'s fd.

    The Python socket object keeps the fd number; whoever closes the slot must detach the
    object first, since libuv closes the fd."""
    uv = owners.uv(loop)
    is_tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
    slot = check(lib.uvc_tcp_new(uv) if is_tcp else lib.uvc_pipe_new(uv, 0))
    err = lib.uvc_stream_open(uv, slot, sock.fileno())
    if err < 0:
        lib.uvc_close(uv, slot)  # libuv never took the fd: closing the slot leaves it open
        raise uv_error(err)
    return slot, is_tcp


class _Listener:
    """Owner of one listening slot (the C core accepts, see uvc_listen): hands its accept
    events to the server, and resumes accepting after a pause for lack of fds or memory."""

    __slots__ = ("server", "sock", "slot", "closed", "retry", "held", "file", "backlog")

    def __init__(self, server: Server, sock: socket.socket) -> None:
        st = os.fstat(sock.fileno())
        # The listening socket's file, to tell it from another that takes its number after
        # an os.close() of it under the server.
        self.file = (st.st_dev, st.st_ino)
        self.server = server
        self.sock = sock
        self.closed = False
        self.retry: asyncio.TimerHandle | None = None
        self.backlog = 0
        # The slot listens on a duplicate of the fd (uvc_listener_new): an os.close() of
        # the socket's number under the server cannot reach libuv.  (-1: none, see _lost.)
        self.slot = -1
        self.slot = self._new_slot()
        # A sock= given to create_server stays the caller's object: its close() must not
        # close the fd the C core listens on (transports/_sockref.py).
        self.held = _sockref.hold(sock)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("paused" if self.retry is not None else "accepting")
        try:
            where = self.sock.getsockname()
        except OSError:
            where = "?"
        return f"<_Listener slot={self.slot} {state} {where!r}>"

    def _release_sock(self) -> None:
        if self.held:
            self.held = False
            _sockref.release(self.sock)

    def _new_slot(self) -> int:
        loop = self.server._loop
        is_tcp = self.sock.family in (socket.AF_INET, socket.AF_INET6)
        slot = check(lib.uvc_listener_new(owners.uv(loop), self.sock.fileno(), is_tcp))
        owners.register_slot(loop, slot, self)
        return slot

    def listen(self, backlog: int) -> None:
        self.backlog = backlog
        check(lib.uvc_listen(owners.uv(self.server._loop), self.slot, backlog))

    def _uv_event(self, kind: int, status: int, slot: int, c: int) -> None:
        if kind == EV_FD_LOST:
            self._lost(status)
            return
        self.server._accepted(self, status, slot, c)

    def _sock_replaced(self) -> bool:
        """True if the socket's fd was closed under the server (os.close()) and its number
        names no file or another one now: that number is not the server's to use or close."""
        fd = self.sock.fileno()
        if fd < 0:
            return False
        try:
            st = os.fstat(fd)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self.file

    def _lost(self, status: int) -> None:
        """The slot's duplicate of the fd was closed under the loop (a stray close of its
        number: csrc/uvc_fdguard.h) and the C core cut it off.  The listening socket itself
        is untouched, so the server listens again on a new duplicate of it and the clients
        waiting in the backlog are served; asyncio would raise or stop accepting."""
        if self.closed or self.slot < 0:
            return  # (the slot is closed, or closing: its number may be another's soon)
        loop = self.server._loop
        lib.uvc_listener_close(owners.uv(loop), self.slot)  # (closes no fd: cut off)
        self.slot = -1
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        if self.sock.fileno() < 0 or self._sock_replaced():
            # The socket is gone as well: nothing left to accept from.
            self._stop_accepting(uv_error(status), "Error on accepting a connection")
            return
        self._relisten()

    def _relisten(self) -> None:
        try:
            self.slot = self._new_slot()
            self.listen(self.backlog)
        except OSError as exc:
            if self.slot >= 0:
                lib.uvc_listener_close(owners.uv(self.server._loop), self.slot)
                self.slot = -1
            if exc.errno in _ACCEPT_RESOURCE_ERRNOS:  # no fd for the duplicate: later
                self._stop_accepting(exc, "socket.accept() out of system resource")
                self.retry_later()
            else:
                self._stop_accepting(exc, "Error on accepting a connection")

    def _stop_accepting(self, exc: OSError, message: str) -> None:
        self.server._loop.call_exception_handler({
            "message": message,
            "exception": exc,
            "socket": trsock.TransportSocket(self.sock),
        })

    def _uv_read(self, data: bytes) -> None:
        pass

    def _uv_closed(self) -> None:
        pass

    def retry_later(self) -> None:
        """C stopped accepting (out of fds or memory): try again later, as asyncio does
        (its remove_reader + call_later(ACCEPT_RETRY_DELAY, ...)).  The connections wait in
        the kernel's backlog meanwhile."""
        if not self.closed and self.retry is None:
            self.retry = self.server._loop.call_later(constants.ACCEPT_RETRY_DELAY, self._resume)

    def _resume(self) -> None:
        self.retry = None
        if self.closed:
            return
        if self.slot < 0:  # lost, and no fd to listen again on then: try again now
            if self.sock.fileno() >= 0 and not self._sock_replaced():
                self._relisten()
            return
        err = lib.uvc_listener_resume(owners.uv(self.server._loop), self.slot)
        if err < 0:
            self.server._loop.call_exception_handler({
                "message": "Error on resuming accepting connections",
                "exception": uv_error(err),
                "socket": trsock.TransportSocket(self.sock),
            })

    def abandon(self) -> None:
        """Undo the listener of a server that could not start (another of its sockets
        refused to listen): free the slot and its duplicate of the fd; the socket itself
        stays open, its owner's."""
        self.closed = True
        loop = self.server._loop
        lib.uvc_listener_close(owners.uv(loop), self.slot)
        self._release_sock()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.retry is not None:
            self.retry.cancel()  # a server closed while paused never resumes
            self.retry = None
        loop = self.server._loop
        if loop.is_closed():
            self._close_sock(False)
            return
        self._close_sock(True)
        if self.slot >= 0:
            lib.uvc_listener_close(owners.uv(loop), self.slot)  # and its duplicate of the fd

    def _close_sock(self, check_fd: bool) -> None:
        """Close the listening socket object, as asyncio's Server.close() does, unless its
        fd was closed under the server (os.close()) and the number names another file
        now: that number is not the server's to close.  (``check_fd`` False: the loop is
        closed, and so are its fds' users.)"""
        sock = self.sock
        if check_fd and self._sock_replaced():
            sock.detach()
        sock.close()
        self._release_sock()

    def _detach_from_loop(self) -> None:
        # The loop closes with the server open: the C core closes its duplicate of the fd
        # when it frees the slot; the socket object is closed here.
        if self.closed:
            return
        self.closed = True
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        self._close_sock(True)


class Server(asyncio.AbstractServer):
    """A server made by create_server() / create_unix_server(): closes, serves, counts
    its connections as asyncio's Server does."""

    def __init__(self, loop: Loop, sockets: list[socket.socket],
                 protocol_factory: Callable[[], BaseProtocol], ssl_context: Any, backlog: int,
                 ssl_handshake_timeout: float | None, ssl_shutdown_timeout: float | None,
                 unix_paths: dict[Any, int] | None = None) -> None:
        self._loop = loop
        self._sockets: list[socket.socket] | None = sockets  # None once closed
        self._listeners: list[_Listener] = []
        self._clients: set[StreamTransportBase] = set()
        self._active_count = 0
        self._waiters: list[asyncio.Future[Any]] | None = []  # None once closed
        self._protocol_factory = protocol_factory
        self._backlog = backlog
        self._ssl_context = ssl_context
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._serving = False
        self._serving_forever_fut: asyncio.Future[None] | None = None
        self._context: contextvars.Context | None = None
        # {path: inode} of Unix sockets this server bound (cleanup_socket, Python 3.13+)
        self._unix_paths = unix_paths or {}

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} sockets={self.sockets!r}>"

    # ------------------------------------------------------------------ connections

    def _attach(self, transport: StreamTransportBase) -> None:
        self._active_count += 1
        self._clients.add(transport)

    def _detach(self, transport: StreamTransportBase) -> None:
        self._active_count -= 1
        self._clients.discard(transport)
        if self._active_count == 0 and self._sockets is None:
            self._wakeup()

    def _wakeup(self) -> None:
        waiters = self._waiters
        self._waiters = None
        for waiter in waiters:  # type: ignore[union-attr]  # once: the server and its last client gone
            if not waiter.done():
                waiter.set_result(waiter)

    def _accepted(self, listener: _Listener, status: int, slot: int, fd: int) -> None:
        """UVC_EV_ACCEPT: a new connection (``slot``, ``fd``), or (``status`` < 0) an
        accept error, ``fd`` then being 1 when the C core has stopped accepting."""
        loop = self._loop
        if status < 0:
            # The handler hears first, then the retry is scheduled (unless the handler
            # closed the server), in asyncio's order.
            exc = uv_error(status)
            if exc.errno in _ACCEPT_RESOURCE_ERRNOS:
                message = "socket.accept() out of system resource"
            else:
                message = "Error on accepting a connection"
            try:
                loop.call_exception_handler({
                    "message": message,
                    "exception": exc,
                    "socket": trsock.TransportSocket(listener.sock),
                })
            finally:
                if fd == 1:
                    listener.retry_later()
            return
        if self._sockets is None:
            owners.close_slot(loop, slot)  # accepted in the same iteration the server closed
            return
        # As asyncio, each connection's callbacks run in a copy of the server's context.
        context = self._context.copy()  # type: ignore[union-attr]  # set when serving began
        transport = None
        try:
            protocol = context.run(self._protocol_factory)
            if self._ssl_context is not None:
                waiter = loop.create_future()
                app_protocol = protocol
                protocol = loop._make_ssl_protocol(
                    app_protocol, self._ssl_context, waiter, server_side=True,
                    server_hostname=None,
                    ssl_handshake_timeout=self._ssl_handshake_timeout,
                    ssl_shutdown_timeout=self._ssl_shutdown_timeout)
            else:
                waiter = None
            transport = SocketTransport(loop, slot, fd, protocol, context=context, server=self)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if transport is None:
                owners.close_slot(loop, slot)
            loop.call_exception_handler({
                "message": "Error on transport creation for incoming connection",
                "exception": exc,
            })
            return
        if waiter is not None:
            waiter.add_done_callback(lambda fut: self._handshake_done(fut, transport))

    def _handshake_done(self, fut: asyncio.Future[Any], transport: SocketTransport) -> None:
        if fut.cancelled():
            transport.close()
            return
        exc = fut.exception()
        if exc is not None:
            transport.close()
            if self._loop.get_debug():
                self._loop.call_exception_handler({
                    "message": "Error on transport creation for incoming connection",
                    "exception": exc,
                })

    # ------------------------------------------------------------------ serving

    def _start_serving(self) -> None:
        if self._serving:
            return
        self._loop._check_closed()  # asyncio's RuntimeError, not the closed libuv's ENOMEM
        context = contextvars.copy_context()
        listeners: list[_Listener] = []
        try:
            for sock in self._sockets:  # type: ignore[union-attr]  # not closed: serving
                listener = _Listener(self, sock)
                listeners.append(listener)
                listener.listen(self._backlog)
        except BaseException:
            # A socket that cannot listen (a connected one, an unbound AF_UNIX one, one
            # whose address another of the server's sockets took): the server does not
            # start at all.  asyncio leaves the sockets that did listen accepting
            # connections for a server its caller never got, and a sock= it could not use
            # open; here none accepts, and that sock= is the caller's again to close.
            for listener in listeners:
                listener.abandon()
            raise
        self._listeners = listeners
        self._context = context
        self._serving = True

    def get_loop(self) -> Loop:
        """The loop this server belongs to."""
        return self._loop

    def is_serving(self) -> bool:
        """True while the server accepts connections."""
        return self._serving

    @property
    def sockets(self) -> tuple[trsock.TransportSocket, ...]:
        """The listening sockets (asyncio.trsock.TransportSocket), () once closed."""
        if self._sockets is None:
            return ()
        return tuple(trsock.TransportSocket(s) for s in self._sockets)

    def close(self) -> None:
        """Stop listening and close the listening sockets.  Connections already accepted
        stay open (see close_clients / abort_clients)."""
        sockets = self._sockets
        if sockets is None:
            return
        self._sockets = None
        for listener in self._listeners:
            listener.close()
        self._listeners = []
        for sock in sockets:
            sock.close()  # the ones never served (start_serving=False)
        if sys.version_info >= (3, 13):
            self._cleanup_unix_paths()
        self._serving = False
        fut = self._serving_forever_fut
        if fut is not None and not fut.done():
            fut.cancel()
            self._serving_forever_fut = None
        if self._active_count == 0:
            self._wakeup()

    def _cleanup_unix_paths(self) -> None:
        for path, ino in self._unix_paths.items():
            try:
                if os.stat(path).st_ino == ino and stat.S_ISSOCK(os.stat(path).st_mode):
                    os.unlink(path)
            except OSError:
                pass
        self._unix_paths = {}

    def close_clients(self) -> None:
        """Close every connection this server accepted (they flush first)."""
        for transport in list(self._clients):
            transport.close()

    def abort_clients(self) -> None:
        """Abort every connection this server accepted."""
        for transport in list(self._clients):
            transport.abort()

    async def start_serving(self) -> None:
        """Start accepting connections (a no-op when already serving)."""
        self._start_serving()
        await asyncio.sleep(0)

    async def serve_forever(self) -> None:
        """Accept connections until cancelled; then close the server and wait for it."""
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def wait_closed(self) -> None:
        """Wait until the server is closed and its connections are gone (before Python
        3.12.1 asyncio returns at once when the server is already closed: so do we)."""
        if self._waiters is None:
            return
        if sys.version_info < (3, 12, 1) and self._sockets is None:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter
