"""Loop methods: start_tls and the TLS layer under ssl= (issue 6).

TLS is asyncio's own ``asyncio.sslproto.SSLProtocol`` (a public stdlib helper) stacked on a
uvcffi stream transport: the SSLProtocol is the transport's protocol, and the application
talks to the ``_SSLProtocolTransport`` it makes.  Python 3.11's SSLProtocol is a
BufferedProtocol with read-side flow control and a shutdown timeout; Python 3.9's (PyPy)
is a plain Protocol over ``_SSLPipe`` without ``ssl_shutdown_timeout``.  Everything
version-dependent about building one lives here (``_make_ssl_protocol``).
"""
import sys

from .transports.stream import SocketTransport

try:
    import ssl as _ssl
except ImportError:  # a Python built without ssl
    _ssl = None

# Python 3.11's SSLProtocol takes ssl_shutdown_timeout; 3.9's does not know it.
_HAS_SHUTDOWN_TIMEOUT = sys.version_info >= (3, 11)


def check_tls_timeouts(ssl_handshake_timeout, ssl_shutdown_timeout):
    """asyncio's checks of the TLS timeouts (Python 3.11's SSLProtocol makes them), done
    before any socket exists: a bad value costs no connection and no fd.  The comparison
    itself raises asyncio's TypeError for a value that is not a number."""
    if ssl_handshake_timeout is not None and ssl_handshake_timeout <= 0:
        raise ValueError(f"ssl_handshake_timeout should be a positive number, "
                         f"got {ssl_handshake_timeout}")
    if ssl_shutdown_timeout is not None and ssl_shutdown_timeout <= 0:
        raise ValueError(f"ssl_shutdown_timeout should be a positive number, "
                         f"got {ssl_shutdown_timeout}")


def check_ssl_argument(ssl):
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


def _start_tls_compatible(transport):
    # asyncio's marker (its socket transports and _SSLProtocolTransport, for TLS in TLS),
    # and uvcffi's socket transports.  Pipe transports are refused, as asyncio does.
    return isinstance(transport, SocketTransport) or getattr(
        transport, "_start_tls_compatible", False)


class TLSMethods:
    """Mixed into uvcffi.Loop; relies on the core loop (uvcffi._core.CoreLoop)."""

    def _make_ssl_protocol(self, app_protocol, sslcontext, waiter, *, server_side,
                           server_hostname, ssl_handshake_timeout, ssl_shutdown_timeout,
                           call_connection_made=True):
        """An asyncio.sslproto.SSLProtocol for this loop, for either Python's sslproto."""
        from asyncio import sslproto

        kwargs = {"ssl_handshake_timeout": ssl_handshake_timeout,
                  "call_connection_made": call_connection_made}
        if _HAS_SHUTDOWN_TIMEOUT:
            kwargs["ssl_shutdown_timeout"] = ssl_shutdown_timeout
        # Python 3.9's sslproto has no shutdown timeout: it sends close_notify and closes
        # without waiting for the peer's, so there is nothing for the timeout to bound.
        return sslproto.SSLProtocol(self, app_protocol, sslcontext, waiter, server_side,
                                    server_hostname, **kwargs)

    async def start_tls(self, transport, protocol, sslcontext, *, server_side=False,
                        server_hostname=None, ssl_handshake_timeout=None,
                        ssl_shutdown_timeout=None):
        """Upgrade an existing connection to TLS and return the new transport, which
        ``protocol`` must use from then on (the old transport must not be used again).

        ``sslcontext`` must be an ssl.SSLContext (TypeError otherwise); the transport must
        be a socket transport of this loop or a TLS transport (TypeError "transport ... is
        not supported by start_tls()" otherwise).  Reading is paused until the TLS layer
        has taken over the transport.  The coroutine returns once the handshake is done;
        a handshake error or timeout (``ssl_handshake_timeout``, default 60 s) is raised
        here and the transport is closed.  ``ssl_shutdown_timeout`` (default 30 s) bounds
        the TLS shutdown on close (Python 3.11+; accepted and checked on 3.9)."""
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
        ssl_protocol = self._make_ssl_protocol(
            protocol, sslcontext, waiter, server_side=server_side,
            server_hostname=server_hostname, ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout, call_connection_made=False)

        # Paused before the protocol switch: bytes that arrive now (the peer's first
        # handshake record may) wait in the transport until the SSLProtocol has run its
        # connection_made(); resume_reading() then hands them over, in order.
        transport.pause_reading()
        transport.set_protocol(ssl_protocol)
        connection_made = self.call_soon(ssl_protocol.connection_made, transport)
        resume = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            # Handshake failed, timed out or the caller was cancelled: the connection is
            # useless (half a handshake), so it is closed and its fd freed.
            transport.close()
            connection_made.cancel()
            resume.cancel()
            raise
        return ssl_protocol._app_transport
