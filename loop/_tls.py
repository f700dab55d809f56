"""Loop methods: start_tls and the TLS layer under ssl= (issues 6 and 11).

TLS is uvcffi's own transport (transports/tls.py): a SSLTransport runs TLS in memory over a
uvcffi stream transport, whose protocol is the TLS layer's link.  The same code runs on
every Python uvcffi supports (asyncio's sslproto differs between 3.9 and 3.11; it is no
longer used).
"""
from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

from .transports.stream import SocketTransport
from .transports.tls import tls_transport_class

if TYPE_CHECKING:
    import asyncio

    from ._core import CoreLoop as _LoopBase  # the loop this is mixed into
    from .transports.tls import _Link
else:
    _LoopBase = object

try:
    import ssl as _ssl
except ImportError:  # a Python built without ssl
    _ssl = None  # type: ignore[assignment]


def check_tls_timeouts(ssl_handshake_timeout: float | None,
                       ssl_shutdown_timeout: float | None) -> None:
    """asyncio's checks of the TLS timeouts (Python 3.11's SSLProtocol makes them), done
    before any socket exists: a bad value costs no connection and no fd.  The comparison
    itself raises asyncio's TypeError for a value that is not a number."""
    if ssl_handshake_timeout is not None and ssl_handshake_timeout <= 0:
        raise ValueError(f"ssl_handshake_timeout should be a positive number, "
                         f"got {ssl_handshake_timeout}")
    if ssl_shutdown_timeout is not None and ssl_shutdown_timeout <= 0:
        raise ValueError(f"ssl_shutdown_timeout should be a positive number, "
                         f"got {ssl_shutdown_timeout}")


def check_ssl_argument(ssl: object) -> None:
    """The ``ssl=`` argument of the connection and server methods, when it asks for TLS.

    asyncio takes any truthy object and fails later: create_connection with an
    AttributeError ("... has no attribute 'wrap_bio'") after connecting, create_server on
    every accepted connection.  uvcffi refuses it up front with a TypeError instead.  Any
    object with ``wrap_bio`` (an SSLContext or a duck-typed one) works as in asyncio;
    ``True`` (a default client context) is for the callers to allow or refuse."""
    if ssl is True or not ssl:
        return
    if _ssl is None:
        raise RuntimeError("Python ssl module is not available")
    if not hasattr(ssl, "wrap_bio"):
        raise TypeError(f"ssl argument must be an SSLContext or None, got {ssl!r}")


def _start_tls_compatible(transport: object) -> bool:
    # asyncio's marker (its socket transports and _SSLProtocolTransport, for TLS in TLS),
    # and uvcffi's socket transports.  Pipe transports are refused, as asyncio does.
    return isinstance(transport, SocketTransport) or getattr(
        transport, "_start_tls_compatible", False)


class TLSMethods(_LoopBase):
    """Mixed into uvcffi.Loop; relies on the core loop (uvcffi._core.CoreLoop)."""

    def _make_ssl_protocol(self, app_protocol: asyncio.BaseProtocol, sslcontext: Any,
                           waiter: asyncio.Future[Any] | None, *, server_side: bool,
                           server_hostname: str | None, ssl_handshake_timeout: float | None,
                           ssl_shutdown_timeout: float | None, call_connection_made: bool = True,
                           context: contextvars.Context | None = None) -> _Link:
        """The TLS layer for a new connection: returns the protocol to give the lower
        (socket) transport; its ``_app_transport`` is the SSLTransport the application
        gets.  The handshake starts when the lower transport is connected; ``waiter`` is
        done after it (and after the application's connection_made)."""
        tls = tls_transport_class()(self, app_protocol, sslcontext, waiter,
                                    server_side=server_side,
                                    server_hostname=server_hostname,
                                    ssl_handshake_timeout=ssl_handshake_timeout,
                                    ssl_shutdown_timeout=ssl_shutdown_timeout,
                                    call_connection_made=call_connection_made,
                                    context=context)
        return tls._link

    async def start_tls(self, transport: asyncio.BaseTransport, protocol: asyncio.BaseProtocol,
                        sslcontext: _ssl.SSLContext, *, server_side: bool = False,
                        server_hostname: str | None = None,
                        ssl_handshake_timeout: float | None = None,
                        ssl_shutdown_timeout: float | None = None) -> asyncio.Transport | None:
        """Upgrade an existing connection to TLS and return the new transport, which
        ``protocol`` must use from then on (the old transport must not be used again).

        ``sslcontext`` must be an ssl.SSLContext (TypeError otherwise); the transport must
        be a socket transport of this loop or a TLS transport (TypeError "transport ... is
        not supported by start_tls()" otherwise).  Reading is paused until the TLS layer
        has taken over the transport.  The coroutine returns once the handshake is done;
        a handshake error or timeout (``ssl_handshake_timeout``, default 60 s) is raised
        here and the transport is closed.  ``ssl_shutdown_timeout`` (default 30 s) bounds
        the TLS shutdown on close."""
        if _ssl is None:
            raise RuntimeError("Python ssl module is not available")
        if not isinstance(sslcontext, _ssl.SSLContext):
            raise TypeError(f"sslcontext is expected to be an instance of ssl.SSLContext, "
                            f"got {sslcontext!r}")
        if not _start_tls_compatible(transport):
            raise TypeError(f"transport {transport!r} is not supported by start_tls()")
        check_tls_timeouts(ssl_handshake_timeout, ssl_shutdown_timeout)

        waiter = self.create_future()
        # The application protocol already saw connection_made() for the plain transport.
        # Its callbacks run in a copy of this caller's context from now on (the TLS
        # transport is created here), as uvloop does.
        link = self._make_ssl_protocol(
            protocol, sslcontext, waiter, server_side=server_side,
            server_hostname=server_hostname, ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout, call_connection_made=False,
            context=contextvars.copy_context())

        # Paused before the protocol switch: bytes that arrive now (the peer's first
        # handshake record may) wait in the transport until the TLS layer has started;
        # resume_reading() then hands them over, in order.
        # (a socket or TLS transport, checked above: both read)
        transport.pause_reading()  # type: ignore[attr-defined]
        transport.set_protocol(link)
        connection_made = self.call_soon(link.connection_made, transport)
        resume = self.call_soon(transport.resume_reading)  # type: ignore[attr-defined]
        try:
            await waiter
        except BaseException:
            # Handshake failed, timed out or the caller was cancelled: the connection is
            # useless (half a handshake), so it is closed and its fd freed.
            transport.close()
            connection_made.cancel()
            resume.cancel()
            raise
        return link._app_transport
