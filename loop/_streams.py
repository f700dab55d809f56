"""Loop methods for stream connections (issue 3): create_connection, create_server,
create_unix_connection, create_unix_server, connect_accepted_socket, sendfile.

Sockets are made, bound and connected in Python (as asyncio does, so every socket option
and error message is asyncio's); once connected or listening, the fd is adopted into a
libuv stream slot and all I/O runs in C.
"""
from __future__ import annotations

import asyncio
import collections
import collections.abc
import errno
import functools
import io
import itertools
import logging
import os
import socket
import stat
import sys
from asyncio import staggered
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any, Callable, overload

from ._dns import address_addrinfo
from ._server import Server, adopt_stream_socket
from ._socketopts import set_reuseport
from ._sockets import check_sendfile_args
from ._tls import check_ssl_argument, check_tls_timeouts
from ._uv import lib
from .transports.stream import SocketTransport, StreamTransportBase

if TYPE_CHECKING:
    from asyncio.events import _ProtocolFactory, _ProtocolT, _SSLContext
    from socket import _Address

    from _typeshed import StrPath

    from ._tls import TLSMethods as _LoopBase  # the loop this is mixed into (and its TLS)
else:
    _LoopBase = object

logger = logging.getLogger("asyncio")

try:
    import ssl as _ssl
except ImportError:  # a Python built without ssl
    _ssl = None  # type: ignore[assignment]

_HAS_IPV6 = socket.has_ipv6
_SENDFILE_CHUNK = 16384


def _check_ssl_socket(sock: socket.socket) -> None:
    if _ssl is not None and isinstance(sock, _ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


def _interleave_addrinfos(addrinfos: list[tuple[Any, ...]],
                          first_address_family_count: int = 1) -> list[tuple[Any, ...]]:
    """Alternate address families (RFC 8305): ``first_address_family_count`` addresses of
    the first family, then one of each in turn."""
    by_family: collections.OrderedDict[int, list[tuple[Any, ...]]] = collections.OrderedDict()
    for info in addrinfos:
        by_family.setdefault(info[0], []).append(info)
    lists = list(by_family.values())
    result: list[tuple[Any, ...]] = []
    if first_address_family_count > 1:
        result.extend(lists[0][:first_address_family_count - 1])
        del lists[0][:first_address_family_count - 1]
    for group in itertools.zip_longest(*lists):
        result.extend(info for info in group if info is not None)
    return result


class _SendfileFallbackProtocol(asyncio.Protocol):
    """Stands in for the transport's protocol while sendfile's read/write fallback runs:
    it waits for the write buffer to drain and refuses reads (reading is paused)."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._proto = transport.get_protocol()
        try:
            self._should_resume_reading = transport.is_reading()
        except NotImplementedError:
            # A write pipe reads nothing (its reading methods raise, as asyncio's do).
            self._should_resume_reading = False
        else:
            transport.pause_reading()
        self._should_resume_writing = getattr(transport, "_protocol_paused", False)
        transport.set_protocol(self)
        loop = transport._loop
        self._write_ready_fut: asyncio.Future[Any] | None = (
            loop.create_future() if self._should_resume_writing else None
        )

    async def drain(self) -> None:
        if self._transport.is_closing():
            raise ConnectionError("Connection closed by peer")
        fut = self._write_ready_fut
        if fut is not None:
            await fut

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raise RuntimeError("Invalid state: connection should have been established already.")

    def connection_lost(self, exc: BaseException | None) -> None:
        fut = self._write_ready_fut
        if fut is not None and not fut.done():
            fut.set_exception(
                ConnectionError("Connection is closed by peer") if exc is None else exc
            )
        self._proto.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._write_ready_fut is None:
            self._write_ready_fut = self._transport._loop.create_future()

    def resume_writing(self) -> None:
        fut = self._write_ready_fut
        if fut is not None:
            if not fut.done():
                fut.set_result(False)
            self._write_ready_fut = None

    def data_received(self, data: bytes) -> None:
        raise RuntimeError("Invalid state: reading should be paused")

    def eof_received(self) -> bool | None:
        raise RuntimeError("Invalid state: reading should be paused")

    async def restore(self) -> None:
        self._transport.set_protocol(self._proto)
        if self._should_resume_reading:
            self._transport.resume_reading()
        fut = self._write_ready_fut
        if fut is not None:
            fut.cancel()
        if self._should_resume_writing:
            self._proto.resume_writing()


class StreamMethods(_LoopBase):
    """Mixed into uvcffi.Loop; relies on the core loop (uvcffi._core.CoreLoop)."""

    def _teardown_transports(self) -> None:
        """close(), before libuv goes: the transports and listeners still open learn it,
        so their Python socket objects do not close fds libuv closes.  (They are all in
        the slot table; a registry of their own cost memory per connection.)"""
        for owner in list(self._slots):
            detach = getattr(owner, "_detach_from_loop", None)
            if detach is not None:
                detach()

    # ------------------------------------------------------------------ helpers

    async def _resolve_stream(self, host: Any, port: Any, family: int = 0, proto: int = 0,
                              flags: int = 0) -> list[tuple[Any, Any, int, str, Any]]:
        # An IP address with a numeric port, in any range, is used as it is, as asyncio
        # does: bind() or connect() then refuses a port outside 0-65535 (OverflowError),
        # which getaddrinfo would silently wrap (70000 -> 4464).
        infos = address_addrinfo(host, port, family, socket.SOCK_STREAM, proto)
        if infos is not None:
            return infos
        return await self.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM,
                                      proto=proto, flags=flags)

    async def _connect_socket(self, sock: socket.socket, address: _Address) -> None:
        """Connect the non-blocking ``sock`` to ``address`` (sock_connect semantics)."""
        await self.sock_connect(sock, address)

    async def _connection_transport(
        self, sock: socket.socket, protocol_factory: Callable[[], _ProtocolT], ssl: _SSLContext,
        server_hostname: str | None, server_side: bool = False,
        ssl_handshake_timeout: float | None = None, ssl_shutdown_timeout: float | None = None,
        own_sock: bool = False,
    ) -> tuple[asyncio.Transport, _ProtocolT]:
        """Adopt a connected ``sock`` into a transport running a new protocol; waits for
        connection_made (and the TLS handshake with ``ssl``).  ``own_sock``: the socket was
        made for this connection (not given by the caller), closed if no transport comes."""
        try:
            self._check_closed()  # asyncio's RuntimeError, before a protocol is made for nothing
            sock.setblocking(False)
            protocol = protocol_factory()
        except BaseException:
            # asyncio leaves its socket to the garbage collector (the exception's traceback
            # holds it open meanwhile; PyPy may never collect it).
            if own_sock:
                sock.close()
            raise
        waiter = self.create_future()
        if ssl:
            if isinstance(ssl, bool):
                sslcontext = _ssl.create_default_context()
                if not server_hostname:
                    sslcontext.check_hostname = False
            else:
                sslcontext = ssl
            try:
                proto = self._make_ssl_protocol(  # loop/_tls.py
                    protocol, sslcontext, waiter, server_side=server_side,
                    server_hostname=server_hostname,
                    ssl_handshake_timeout=ssl_handshake_timeout,
                    ssl_shutdown_timeout=ssl_shutdown_timeout)
            except BaseException:
                sock.close()  # no transport owns it yet
                raise
            transport = self._socket_transport(sock, proto, None)
            app_transport: asyncio.Transport = proto._app_transport
        else:
            transport = app_transport = self._socket_transport(sock, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return app_transport, protocol

    def _socket_transport(self, sock: socket.socket, protocol: asyncio.BaseProtocol,
                          waiter: asyncio.Future[Any] | None,
                          server: Server | None = None) -> SocketTransport:
        slot, is_tcp = adopt_stream_socket(self, sock)
        if is_tcp:
            lib.uvc_tcp_nodelay(self._uv, slot, 1)  # asyncio's default for TCP transports
        return SocketTransport(self, slot, sock.fileno(), protocol, sock=sock, waiter=waiter,
                               server=server)

    @staticmethod
    def _check_ssl_args(ssl: object, server_hostname: str | None = None,
                        ssl_handshake_timeout: float | None = None,
                        ssl_shutdown_timeout: float | None = None) -> None:
        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        if ssl:
            # Before any socket exists: bad TLS arguments cost no connection (loop/_tls.py)
            check_ssl_argument(ssl)
            check_tls_timeouts(ssl_handshake_timeout, ssl_shutdown_timeout)

    # ------------------------------------------------------------------ TCP client

    async def _connect_sock(self, exceptions: list[list[OSError]], addr_info: tuple[Any, ...],
                            local_addr_infos: list[tuple[Any, ...]] | None = None,
                            ) -> socket.socket:
        my_exceptions: list[OSError] = []
        exceptions.append(my_exceptions)
        family, type_, proto, _, address = addr_info
        sock = None
        try:
            sock = socket.socket(family=family, type=type_, proto=proto)
            sock.setblocking(False)
            if local_addr_infos is not None:
                for lfamily, _, _, _, laddr in local_addr_infos:
                    if lfamily != family:
                        continue
                    try:
                        sock.bind(laddr)
                        break
                    except OSError as exc:
                        msg = (f"error while attempting to bind on address {laddr!r}: "
                               f"{exc.strerror.lower()}")  # type: ignore[union-attr]
                        my_exceptions.append(OSError(exc.errno, msg))
                else:
                    if my_exceptions:
                        raise my_exceptions.pop()
                    raise OSError(f"no matching local address with family={family!r} found")
            await self._connect_socket(sock, address)
            return sock
        except OSError as exc:
            my_exceptions.append(exc)
            if sock is not None:
                sock.close()
            raise
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        finally:
            exceptions = my_exceptions = None  # type: ignore[assignment]  # no cycles

    @overload
    async def create_connection(
        self,
        protocol_factory: Callable[[], _ProtocolT],
        host: str = ...,
        port: int = ...,
        *,
        ssl: _SSLContext = None,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        sock: None = None,
        local_addr: tuple[str, int] | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        happy_eyeballs_delay: float | None = None,
        interleave: int | None = None,
        all_errors: bool = False,
    ) -> tuple[asyncio.Transport, _ProtocolT]: ...
    @overload
    async def create_connection(
        self,
        protocol_factory: Callable[[], _ProtocolT],
        host: None = None,
        port: None = None,
        *,
        ssl: _SSLContext = None,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        sock: socket.socket,
        local_addr: None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        happy_eyeballs_delay: float | None = None,
        interleave: int | None = None,
        all_errors: bool = False,
    ) -> tuple[asyncio.Transport, _ProtocolT]: ...
    async def create_connection(
        self,
        protocol_factory: Callable[[], _ProtocolT],
        host: str | None = None,
        port: int | str | None = None,
        *,
        ssl: _SSLContext = None,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        sock: socket.socket | None = None,
        local_addr: tuple[str, int] | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        happy_eyeballs_delay: float | None = None,
        interleave: int | None = None,
        all_errors: bool = False,
    ) -> tuple[asyncio.Transport, _ProtocolT]:
        """Open a stream connection to ``host``:``port`` (or over the connected ``sock``)
        and return (transport, protocol) once the protocol's connection_made has run.

        Every address getaddrinfo gives is tried in turn (or raced, RFC 8305, with
        ``happy_eyeballs_delay``); on failure the one error, or OSError('Multiple
        exceptions: ...'), or an ExceptionGroup with ``all_errors`` (Python 3.11+), is
        raised.  An IP address is used as it is: a port outside 0-65535 with one is
        connect()'s OverflowError.  ``ssl`` wraps the connection in TLS (transports/tls.py)."""
        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        if server_hostname is None and ssl:
            if not host:
                raise ValueError("You must set server_hostname when using ssl without a host")
            server_hostname = host
        self._check_ssl_args(ssl, None, ssl_handshake_timeout, ssl_shutdown_timeout)
        if sock is not None:
            _check_ssl_socket(sock)
        if happy_eyeballs_delay is not None:
            # staggered_race() compares the delay with 0 only once the first attempt runs:
            # one that cannot be compared (TypeError, asyncio's too) then left the socket
            # that attempt connected to the collector.  Refused here, before any socket.
            happy_eyeballs_delay <= 0  # noqa: B015
            if interleave is None:
                interleave = 1  # RFC 8305's default when racing

        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            infos = await self._resolve_stream(host, port, family, proto, flags)
            if not infos:
                raise OSError("getaddrinfo() returned empty list")
            laddr_infos = None
            if local_addr is not None:
                # (host, port[, flowinfo, scope_id]) as asyncio takes them: fewer items is
                # ValueError, more is TypeError; none is passed on as the family or flags.
                lhost, lport = local_addr[:2]
                if len(local_addr) > 4:
                    raise TypeError(f"local_addr takes at most 4 items, got {local_addr!r}")
                laddr_infos = await self._resolve_stream(lhost, lport, family, proto, flags)
                if not laddr_infos:
                    raise OSError("getaddrinfo() returned empty list")
            if interleave:
                infos = _interleave_addrinfos(infos, interleave)

            exceptions: list[Any] = []  # a list of OSErrors per address, then flattened
            if happy_eyeballs_delay is None:
                for addr_info in infos:
                    try:
                        sock = await self._connect_sock(exceptions, addr_info, laddr_infos)
                        break
                    except OSError:
                        continue
            else:
                sock, _, _ = await staggered.staggered_race(
                    (functools.partial(self._connect_sock, exceptions, addr_info, laddr_infos)
                     for addr_info in infos),
                    happy_eyeballs_delay, loop=self)

            if sock is None:
                exceptions = [exc for sub in exceptions for exc in sub]
                try:
                    if all_errors and sys.version_info >= (3, 11):
                        raise ExceptionGroup("create_connection failed", exceptions)  # noqa: F821
                    if len(exceptions) == 1:
                        raise exceptions[0]
                    model = str(exceptions[0])
                    if all(str(exc) == model for exc in exceptions):
                        raise exceptions[0]
                    raise OSError("Multiple exceptions: {}".format(
                        ", ".join(str(exc) for exc in exceptions)))
                finally:
                    exceptions = None  # type: ignore[assignment]  # no cycles
        else:
            if sock is None:
                raise ValueError("host and port was not specified and no sock specified")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")

        transport, protocol = await self._connection_transport(
            sock, protocol_factory, ssl, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            own_sock=host is not None or port is not None)
        if self._debug:
            sock = transport.get_extra_info("socket")
            logger.debug("%r connected to %s:%r: (%r, %r)", sock, host, port, transport, protocol)
        return transport, protocol

    async def connect_accepted_socket(
        self, protocol_factory: Callable[[], _ProtocolT], sock: socket.socket, *,
        ssl: _SSLContext = None, ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> tuple[asyncio.Transport, _ProtocolT]:
        """Wrap a connection accepted outside asyncio (server side) in a transport and
        protocol; returns (transport, protocol)."""
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"A Stream Socket was expected, got {sock!r}")
        if ssl is True:
            raise ValueError("Server side SSL needs a valid SSLContext")
        self._check_ssl_args(ssl, None, ssl_handshake_timeout, ssl_shutdown_timeout)
        _check_ssl_socket(sock)
        transport, protocol = await self._connection_transport(
            sock, protocol_factory, ssl, "", server_side=True,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        if self._debug:
            sock = transport.get_extra_info("socket")
            logger.debug("%r handled: (%r, %r)", sock, transport, protocol)
        return transport, protocol

    # ------------------------------------------------------------------ TCP server

    # create_server returns uvcffi's Server: an asyncio.AbstractServer with the methods of
    # asyncio.Server, but not a subclass of it (typeshed's return type), hence the ignore.
    @overload  # type: ignore[override]
    async def create_server(
        self,
        protocol_factory: _ProtocolFactory,
        host: str | Sequence[str] | None,
        port: int,
        *,
        family: int = socket.AF_UNSPEC,
        flags: int = socket.AI_PASSIVE,
        sock: None = None,
        backlog: int = 100,
        ssl: _SSLContext = None,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        keep_alive: bool | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True,
    ) -> Server: ...
    @overload
    async def create_server(
        self,
        protocol_factory: _ProtocolFactory,
        host: str | Sequence[str],
        port: int | None = None,
        *,
        family: int = socket.AF_UNSPEC,
        flags: int = socket.AI_PASSIVE,
        sock: None = None,
        backlog: int = 100,
        ssl: _SSLContext = None,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        keep_alive: bool | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True,
    ) -> Server: ...
    @overload
    async def create_server(
        self,
        protocol_factory: _ProtocolFactory,
        host: None = None,
        *,
        port: int,
        family: int = socket.AF_UNSPEC,
        flags: int = socket.AI_PASSIVE,
        sock: None = None,
        backlog: int = 100,
        ssl: _SSLContext = None,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        keep_alive: bool | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True,
    ) -> Server: ...
    @overload
    async def create_server(
        self,
        protocol_factory: _ProtocolFactory,
        host: None = None,
        port: None = None,
        *,
        family: int = socket.AF_UNSPEC,
        flags: int = socket.AI_PASSIVE,
        sock: socket.socket,
        backlog: int = 100,
        ssl: _SSLContext = None,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        keep_alive: bool | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True,
    ) -> Server: ...
    async def create_server(
        self,
        protocol_factory: _ProtocolFactory,
        host: str | Sequence[str] | None = None,
        port: int | str | None = None,
        *,
        family: int = socket.AF_UNSPEC,
        flags: int = socket.AI_PASSIVE,
        sock: socket.socket | None = None,
        backlog: int = 100,
        ssl: _SSLContext = None,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        keep_alive: bool | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True,
    ) -> Server:
        """Listen on ``host``:``port`` (every address of a host name or a list of hosts;
        all interfaces for None or '') or on ``sock``; return a Server.  IPv6 sockets are
        V6ONLY so the IPv4 wildcard can be bound alongside; SO_REUSEADDR is on by default.
        A port outside 0-65535 with an IP address is bind()'s OverflowError."""
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        self._check_ssl_args(ssl, None, ssl_handshake_timeout, ssl_shutdown_timeout)
        if sock is not None:
            _check_ssl_socket(sock)
        # Before any socket is made: a closed loop could not serve it (asyncio's
        # RuntimeError comes from its getaddrinfo, or from starting to serve).
        self._check_closed()

        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            if reuse_address is None:
                reuse_address = os.name == "posix" and sys.platform != "cygwin"
            sockets = []
            if host == "":
                hosts: Sequence[str | None] = [None]
            elif isinstance(host, str) or not isinstance(host, collections.abc.Iterable):
                hosts = [host]
            else:
                hosts = host
            fs = [self._resolve_stream(h, port, family, 0, flags) for h in hosts]
            infos: Any = await asyncio.gather(*fs)
            infos = set(itertools.chain.from_iterable(infos))

            completed = False
            try:
                for res in infos:
                    af, socktype, proto, canonname, sa = res
                    try:
                        sock = socket.socket(af, socktype, proto)
                    except OSError:
                        if self._debug:
                            logger.warning(
                                "create_server() failed to create socket.socket(%r, %r, %r)",
                                af,
                                socktype,
                                proto,
                                exc_info=True,
                            )
                        continue
                    sockets.append(sock)
                    if reuse_address:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
                    if reuse_port:
                        set_reuseport(sock)
                    if keep_alive:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, True)
                    # Disable IPv4/IPv6 dual stack support (enabled by default on Linux)
                    # which makes a single socket listen on both address families.
                    if _HAS_IPV6 and af == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
                    try:
                        sock.bind(sa)
                    except OSError as err:
                        msg = ("error while attempting to bind on address %r: %s"
                               % (sa, err.strerror.lower()))  # type: ignore[union-attr]
                        if err.errno == errno.EADDRNOTAVAIL:
                            # Assume the family is not enabled (bpo-30945)
                            sockets.pop()
                            sock.close()
                            if self._debug:
                                logger.warning(msg)
                            continue
                        raise OSError(err.errno, msg) from None
                if not sockets:
                    raise OSError("could not bind on any address out of %r"
                                  % ([info[4] for info in infos],))
                completed = True
            finally:
                if not completed:
                    for sock in sockets:
                        sock.close()
        else:
            if sock is None:
                raise ValueError("Neither host/port nor sock were specified")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")
            sockets = [sock]

        for sock in sockets:
            sock.setblocking(False)
        server = Server(self, sockets, protocol_factory, ssl, backlog, ssl_handshake_timeout,
                        ssl_shutdown_timeout)
        if start_serving:
            self._start_new_server(server, own_sockets=host is not None or port is not None)
            # One iteration, as asyncio does, so the server is accepting on return.
            await asyncio.sleep(0)
        if self._debug:
            logger.info("%r is serving", server)
        return server

    # ------------------------------------------------------------------ Unix sockets

    async def create_unix_connection(
        self, protocol_factory: Callable[[], _ProtocolT], path: str | None = None, *,
        ssl: _SSLContext = None, sock: socket.socket | None = None,
        server_hostname: str | None = None, ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> tuple[asyncio.Transport, _ProtocolT]:
        """Connect to the Unix socket ``path`` (a filesystem or abstract-namespace path) or
        over the connected AF_UNIX ``sock``; return (transport, protocol)."""
        assert server_hostname is None or isinstance(server_hostname, str)
        if ssl and server_hostname is None:
            raise ValueError("you have to pass server_hostname when using ssl")
        self._check_ssl_args(ssl, server_hostname, ssl_handshake_timeout, ssl_shutdown_timeout)
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
            try:
                sock.setblocking(False)
                # Connected in Python: uv_pipe_connect cannot reach the abstract namespace.
                await self._connect_socket(sock, path)
            except BaseException:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("no path and sock were specified")
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
            sock.setblocking(False)
        return await self._connection_transport(
            sock, protocol_factory, ssl, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout, own_sock=path is not None)

    async def create_unix_server(  # type: ignore[override]  # uvcffi's Server (see above)
        self, protocol_factory: _ProtocolFactory, path: StrPath | None = None, *,
        sock: socket.socket | None = None, backlog: int = 100, ssl: _SSLContext = None,
        ssl_handshake_timeout: float | None = None, ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True, cleanup_socket: bool = True,
    ) -> Server:
        """Listen on the Unix socket ``path`` (a stale socket file there is removed first;
        abstract-namespace paths start with a NUL) or on the AF_UNIX ``sock``; return a
        Server.  From Python 3.13, with ``cleanup_socket`` the socket file is removed when
        the server closes."""
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        self._check_ssl_args(ssl, None, ssl_handshake_timeout, ssl_shutdown_timeout)
        self._check_closed()  # before a socket file is bound for a loop that cannot serve it
        unix_paths: dict[Any, int] = {}  # str or bytes paths
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            # Before the socket is made: an empty path raises IndexError here, as on
            # asyncio, which leaves its new socket open for the collector.
            abstract = path[0] in (0, "\x00")
            if not abstract:
                try:
                    if stat.S_ISSOCK(os.stat(path).st_mode):
                        os.remove(path)
                except FileNotFoundError:
                    pass
                except OSError as err:
                    # The directory may allow creating the socket but not checking for it.
                    logger.error("Unable to check or remove stale UNIX socket %r: %r", path, err)
            # Only now: a path os.stat() refuses (ValueError for a NUL in it) must not leave
            # a socket open (asyncio's waits for the collector, which PyPy may never run).
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(path)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(errno.EADDRINUSE, f"Address {path!r} is already in use") from None
                raise
            except BaseException:
                sock.close()
                raise
            if not abstract and cleanup_socket:
                try:
                    unix_paths[path] = os.stat(path).st_ino
                except OSError:
                    pass
        else:
            if sock is None:
                raise ValueError("path was not specified, and no sock specified")
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
            if cleanup_socket:
                name = sock.getsockname()
                if isinstance(name, (str, bytes)) and name and name[0] not in (0, "\x00"):
                    try:
                        unix_paths[name] = os.stat(name).st_ino
                    except OSError:
                        pass
        sock.setblocking(False)
        server = Server(self, [sock], protocol_factory, ssl, backlog, ssl_handshake_timeout,
                        ssl_shutdown_timeout, unix_paths=unix_paths)
        if start_serving:
            self._start_new_server(server, own_sockets=path is not None)
            await asyncio.sleep(0)
        return server

    @staticmethod
    def _start_new_server(server: Server, own_sockets: bool) -> None:
        """Start the server create_server() or create_unix_server() made; if it cannot
        start, the sockets made for it are closed (a sock= given stays open, the
        caller's)."""
        try:
            server._start_serving()
        except BaseException:
            if own_sockets:
                server.close()
            raise

    # ------------------------------------------------------------------ sendfile

    async def sendfile(self, transport: asyncio.WriteTransport, file: IO[bytes], offset: int = 0,
                       count: int | None = None, *, fallback: bool = True) -> int:
        """Send ``file`` (a regular file opened in binary mode) over ``transport`` from
        ``offset``, ``count`` bytes or to EOF; return the bytes sent.

        On socket transports this is os.sendfile() (zero-copy) once the transport's
        buffered writes are out, with the transport's own writes refused meanwhile; else
        (TLS, pipes, or when sendfile(2) cannot do it) the file is read and written
        through the transport, unless ``fallback`` is False: then
        SendfileNotAvailableError (or RuntimeError when the transport cannot at all).
        The file position is left after the last byte sent."""
        if transport.is_closing():
            raise RuntimeError("Transport is closing")
        native = isinstance(transport, SocketTransport)
        if not native and not self._sendfile_fallback_ok(transport):
            raise RuntimeError(f"sendfile is not supported for transport {transport!r}")
        if native:
            try:
                return await self._sendfile_native(
                    transport, file, offset, count)  # type: ignore[arg-type]  # native
            except asyncio.SendfileNotAvailableError:
                if not fallback:
                    raise
        if not fallback:
            raise RuntimeError(f"fallback is disabled and native sendfile is not "
                               f"supported for transport {transport!r}")
        return await self._sendfile_fallback(transport, file, offset, count)

    @staticmethod
    def _sendfile_fallback_ok(transport: object) -> bool:
        if isinstance(transport, StreamTransportBase):
            # Not the read end of a pipe: it has nothing to write the file to.
            return isinstance(transport, asyncio.WriteTransport)
        mode = getattr(transport, "_sendfile_compatible", None)
        fallback = getattr(getattr(asyncio, "constants", None), "_SendfileMode", None)
        return fallback is not None and mode in (fallback.FALLBACK, fallback.TRY_NATIVE)

    async def _wait_writable(self, fd: int, lost: asyncio.Future[None]) -> None:
        """Wait until ``fd`` is writable or ``lost`` is done (the connection is gone)."""
        fut = self.create_future()

        def writable(*_: object) -> None:
            if not fut.done():
                fut.set_result(None)

        self.add_writer(fd, writable)
        lost.add_done_callback(writable)
        try:
            await fut
        finally:
            self.remove_writer(fd)
            lost.remove_done_callback(writable)

    async def _sendfile_native(self, transport: SocketTransport, file: IO[bytes], offset: int,
                               count: int | None) -> int:
        check_sendfile_args(file, offset, count)
        if transport._eof_written:
            # asyncio's fallback refuses to write after write_eof(); sendfile(2) would send
            # the file past the EOF (the shutdown may not have happened yet).
            raise RuntimeError("Cannot call write() after write_eof()")
        if not hasattr(os, "sendfile"):
            raise asyncio.SendfileNotAvailableError("os.sendfile() is not available")
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            raise asyncio.SendfileNotAvailableError("not a regular file")
        try:
            fsize = os.fstat(fileno).st_size
        except OSError:
            raise asyncio.SendfileNotAvailableError("not a regular file")
        blocksize = count if count else fsize
        if not blocksize:
            return 0  # an empty file
        resume_reading = transport.is_reading()
        transport.pause_reading()
        drained = transport._make_empty_waiter()  # (raises if another sendfile runs)
        lost: asyncio.Future[None] | None = None
        total = 0
        out_fd = -1
        try:
            # In the try: a sendfile cancelled while the buffered writes drain (a timeout,
            # say) gives the transport back as it was, writable and reading.
            await drained
            # The dup below keeps the socket open after the transport lets go of it: a
            # close() or abort() meanwhile must end the transfer, not let it go on behind
            # the protocol's connection_lost() (asyncio means the empty waiter to fail so).
            lost = transport._sendfile_lost_waiter()
            # libuv watches the socket's fd for the transport; waiting for writability on
            # a dup of it (same socket) does not disturb that watcher.
            out_fd = os.dup(transport._fd)
            while True:
                if transport.is_closing():
                    raise ConnectionError("Connection is closed by peer")
                n = min(count - total, blocksize) if count else blocksize
                if n <= 0:
                    break
                try:
                    sent = os.sendfile(out_fd, fileno, offset + total, n)
                except (BlockingIOError, InterruptedError):
                    await self._wait_writable(out_fd, lost)
                    continue
                except OSError as exc:
                    if total == 0:
                        # e.g. a file sendfile(2) cannot map: the fallback can still send it
                        raise asyncio.SendfileNotAvailableError("os.sendfile call failed") from exc
                    if exc.errno == errno.ENOTCONN and type(exc) is not ConnectionError:
                        raise ConnectionError("socket is not connected", errno.ENOTCONN) from exc
                    raise
                if sent == 0:
                    break  # EOF
                total += sent
            return total
        finally:
            if out_fd >= 0:
                os.close(out_fd)
            if total > 0:
                os.lseek(fileno, offset + total, os.SEEK_SET)
            if lost is not None:
                if lost.done():
                    lost.exception()  # its error is raised above, as the transfer's
                else:
                    lost.cancel()
            transport._reset_empty_waiter()
            if resume_reading:
                transport.resume_reading()

    async def _sendfile_fallback(self, transport: Any, file: IO[bytes], offset: int,
                                 count: int | None) -> int:
        check_sendfile_args(file, offset, count)
        if offset:
            file.seek(offset)
        blocksize = min(count, _SENDFILE_CHUNK) if count else _SENDFILE_CHUNK
        buf = bytearray(blocksize)
        total = 0
        proto = _SendfileFallbackProtocol(transport)
        try:
            while True:
                if count:
                    blocksize = min(count - total, blocksize)
                    if blocksize <= 0:
                        return total
                view = memoryview(buf)[:blocksize]
                read = await self.run_in_executor(
                    None, file.readinto, view)  # type: ignore[attr-defined]  # binary files have it
                if not read:
                    return total
                await proto.drain()
                transport.write(view[:read])  # copied by the transport: buf can be reused
                total += read
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset + total)
            await proto.restore()
