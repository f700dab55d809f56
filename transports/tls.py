"""uvcffi's own TLS transport: an asyncio.Transport that runs TLS over another transport.

SSLTransport is what the application sees for ssl= connections and start_tls(): TLS in
memory (ssl.MemoryBIO + ssl.SSLObject, as asyncio's sslproto, on both runtimes) over a
lower transport, a uvcffi socket transport (or, for TLS in TLS, another SSLTransport).
The lower transport talks to the TLS layer through ``_Link``, its protocol.

How bytes move, and why (each choice measured: loop/bench/RESULTS.md, the TLS section):

- Reads.  A uvcffi socket transport hands the link each read still in the loop's arena
  (``_feed_from_arena``): one copy, straight into the incoming BIO, no bytes object.  Other
  lower transports call ``data_received(bytes)``.  Records are then decrypted while the
  BIO holds bytes (``incoming.pending``): SSLObject.read() raises SSLWantReadError at the
  end of the data, and raising costs more than a whole small record, so it is not used to
  find the end.  All the plaintext of one read goes to data_received() at once.  A TCP
  EOF is clean at the end of a record only: where the stream stands is known from the
  reader (the BIO read empty with a record's data, the common case) or else from the
  record headers of the read (_track_records).
- Writes.  write() encrypts at once (the outgoing BIO grows as needed) and hands the
  records to the lower transport, which buffers what the socket does not take in C.
  Writes made while the TLS layer runs application code (data_received, connection_made,
  eof_received) only encrypt; the records of that burst go out in one lower write when
  the callback returns.
- Flow control.  Nothing stays in the TLS layer except plaintext that cannot be encrypted
  yet (during a renegotiation), so the write buffer is that plaintext plus what the lower
  transport holds; the lower transport gets the same water marks and its pause/resume
  become the application's.  pause_reading() pauses the socket itself; records already
  decrypted wait in the BIO and are delivered first on resume_reading().

Semantics are asyncio 3.11's where it is right, and the fixes of 3.12+ and uvloop where
3.11 is not: data arriving after our close_notify, or after the peer's, is discarded
(RFC 8446 6.1) instead of failing unwrap() with APPLICATION_DATA_AFTER_CLOSE_NOTIFY or
being delivered after close(); the first data after the handshake is delivered after the
handshake's waiter wakes (start_tls returns first); a close() while reading is paused
still completes the close_notify exchange; the shutdown timer is cancelled on every way
out; a BufferedProtocol's buffer is filled through views, never through a copy.

Every application callback runs in the transport's context: a copy of the context the
connection was made in (ssl=) or start_tls() was called in.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import ssl
import sys
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .. import _owners as owners
from .._signals import leave_if_interrupted
from ._base import data_received_of
from ._context import notify_protocol, run_in_context
from ._flow import water_marks

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop, BaseProtocol

_T = TypeVar("_T")

logger = logging.getLogger("asyncio")

_constants = getattr(asyncio, "constants", None)
HANDSHAKE_TIMEOUT = getattr(_constants, "SSL_HANDSHAKE_TIMEOUT", 60.0)
SHUTDOWN_TIMEOUT = getattr(_constants, "SSL_SHUTDOWN_TIMEOUT", 30.0)
# asyncio's defaults for a TLS transport's write buffer: high 512 KiB, low a quarter.
WRITE_HIGH_WATER = getattr(_constants, "FLOW_CONTROL_HIGH_WATER_SSL_WRITE", 512) * 1024
LOG_THRESHOLD_FOR_CONNLOST_WRITES = getattr(_constants, "LOG_THRESHOLD_FOR_CONNLOST_WRITES", 5)
_SendfileMode = getattr(_constants, "_SendfileMode", None)

# PyPy's ssl module writes len() bytes of a view, whatever its items or dimensions are
# (CPython's takes the buffer, in bytes): write() hands it byte views only.
_SSL_WRITES_LEN_OF_VIEWS = sys.implementation.name == "pypy"

_WantRead = ssl.SSLWantReadError
_WantWrite = ssl.SSLWantWriteError
_ZeroReturn = ssl.SSLZeroReturnError
_SSLError = ssl.SSLError
_BufferedProtocol = asyncio.BufferedProtocol
# The largest plaintext of one TLS record: a read of this size never splits one.
_RECORD_MAX = 16384
# Where the bytes fed to the incoming BIO end in the stream of TLS records (_rec_left, see
# _track_records): the bytes still to come of the current record, 0 at a record's end, or
# _REC_IN_HEADER: a read ended inside a header, whose first bytes are in _rec_head.
_REC_HEADER = 5  # a record header: type, version (2 bytes), length (2, big-endian)
_REC_IN_HEADER = -1
# How a BufferedProtocol's read ended (_read_buffered).
_READ_STOPPED = 0      # mid-record, paused or failed
_READ_RECORD_END = 1   # all read, to the end of a record
_READ_CLOSE_NOTIFY = 2
_READ_HANDED_OVER = 3  # buffer_updated() set a Protocol: the rest is for it

# States (ints: the read path compares them on every read).
_HANDSHAKE = 1  # the lower transport is connected; handshake running
_WRAPPED = 2    # application data flows
_FLUSHING = 3   # closing: plaintext still waits to be encrypted (renegotiation)
_SHUTDOWN = 4   # our close_notify is out; waiting for the peer's
_CLOSED = 5     # done (or never got going): the lower transport is closing or gone
_STATE_NAMES = {1: "handshake", 2: "wrapped", 3: "flushing", 4: "shutdown", 5: "closed"}


class _Link(asyncio.Protocol):
    """The TLS layer as the lower transport's protocol.

    Its callbacks are the SSLTransport's bound methods, stored in slots: the lower
    transport looks ``protocol.data_received`` up once (uvcffi's caches it), so a read
    costs no frame here.  ``_feed_from_arena`` is uvcffi's hook for reads taken from the
    loop's arena (transports/stream.py); ``_app_transport`` names the TLS transport for
    the loop methods that build one (loop/_tls.py)."""

    __slots__ = ("connection_made", "connection_lost", "data_received", "eof_received",
                 "pause_writing", "resume_writing", "_feed_from_arena", "_app_transport")

    def __init__(self, tls: SSLTransport) -> None:
        self._app_transport = tls
        # (slots named as asyncio.Protocol's methods, holding the TLS transport's methods)
        self.connection_made = tls._lower_made  # type: ignore[method-assign, assignment]
        self.connection_lost = tls._lower_lost  # type: ignore[method-assign]
        self.data_received = tls._feed  # type: ignore[method-assign]
        self.eof_received = tls._lower_eof  # type: ignore[method-assign]
        self.pause_writing = tls._lower_pause_writing  # type: ignore[method-assign]
        self.resume_writing = tls._lower_resume_writing  # type: ignore[method-assign]
        self._feed_from_arena = tls._feed_from_arena

    def __repr__(self) -> str:
        return f"<TLS link of {self._app_transport!r}>"


class SSLTransport(asyncio.Transport):
    """A TLS connection as an asyncio.Transport (see the module docstring).

    Named SSL..., as asyncio's _SSLProtocolTransport is: code and the stdlib's own tests
    look for "ssl" in a TLS transport's class name."""

    _start_tls_compatible = True  # TLS in TLS: start_tls() takes this transport
    if _SendfileMode is not None:
        _sendfile_compatible = _SendfileMode.FALLBACK  # sendfile() reads and writes

    if TYPE_CHECKING:
        _extra: dict[str, Any]  # asyncio.BaseTransport's slot, which typeshed leaves out

    __slots__ = (
        "_loop", "_lower", "_link", "_protocol", "_context", "_ctx_run", "_sslcontext",
        "_sslobj", "_incoming", "_outgoing", "_in_write", "_out_read", "_ssl_read",
        "_ssl_write", "_ssl_pending", "_state", "_waiter", "_server_side",
        "_handshake_timeout", "_shutdown_timeout", "_handshake_handle", "_shutdown_handle",
        "_handshake_start", "_call_connection_made", "_app_connected", "_app_eof",
        "_app_lost", "_buffered", "_data_received", "_closing", "_conn_lost", "_backlog",
        "_backlog_size", "_reading_paused", "_lower_paused", "_read_scheduled", "_in_app",
        "_high_water", "_low_water", "_app_writing_paused", "_arena_view", "_debug",
        "_eof_pending", "_reader", "_rec_left", "_rec_head",
        "__weakref__",
    )

    def __init__(
        self, loop: AbstractEventLoop, protocol: BaseProtocol, sslcontext: ssl.SSLContext,
        waiter: asyncio.Future[Any] | None, *, server_side: bool = False,
        server_hostname: str | None = None, ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None, call_connection_made: bool = True,
        context: contextvars.Context | None = None,
    ) -> None:
        asyncio.Transport.__init__(self, {"sslcontext": sslcontext})
        self._loop = loop
        self._debug = loop.get_debug()
        self._lower: Any = None  # the socket transport, once connected
        self._sslcontext = sslcontext
        self._server_side = server_side
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        # wrap_bio checks server_hostname (ValueError for a bad one): before any I/O.
        self._sslobj = sslcontext.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side,
            server_hostname=server_hostname if (server_hostname and not server_side) else None)
        # Bound methods of the hot calls, looked up once.  SSLObject's read(), write()
        # and pending() are Python methods of ssl.py that only call the same methods of
        # the C object under it (``_sslobj``, there since Python 3.5 and on PyPy):
        # called directly, a round trip costs two Python frames less.
        self._in_write = self._incoming.write
        self._out_read = self._outgoing.read
        core = getattr(self._sslobj, "_sslobj", None)
        if core is None or not hasattr(core, "pending"):
            core = self._sslobj
        self._ssl_read = core.read
        self._ssl_write = core.write
        self._ssl_pending = core.pending
        self._state = _CLOSED  # until the lower transport is connected
        self._waiter = waiter
        self._handshake_timeout = (HANDSHAKE_TIMEOUT if ssl_handshake_timeout is None
                                   else ssl_handshake_timeout)
        self._shutdown_timeout = (SHUTDOWN_TIMEOUT if ssl_shutdown_timeout is None
                                  else ssl_shutdown_timeout)
        self._handshake_handle: asyncio.TimerHandle | None = None
        self._shutdown_handle: asyncio.TimerHandle | None = None
        self._handshake_start: float | None = None
        self._call_connection_made = call_connection_made
        # start_tls: the application protocol is connected already (to the plain transport)
        self._app_connected = not call_connection_made
        self._app_eof = False      # eof_received() was called
        self._app_lost = False     # connection_lost() was called (or scheduled)
        self._closing = False
        self._conn_lost = 0        # writes refused after the close (asyncio's warning count)
        self._backlog: list[Any] | None = None  # plaintext not encrypted yet (renegotiation): list
        self._backlog_size = 0
        self._reading_paused = False   # the application's pause_reading()
        self._lower_paused = False     # ... paused the lower transport, not resumed yet
        self._eof_pending = False      # TCP EOF arrived: handled from the loop (_lower_eof)
        self._rec_left = 0             # the TLS stream so far ends a record (see above)
        self._rec_head = b""           # the start of a header cut by a read's end
        self._read_scheduled = False   # a delivery of data left in the BIO is scheduled
        self._in_app = False           # running application code: writes wait for its end
        self._high_water, self._low_water = water_marks(WRITE_HIGH_WATER)
        self._app_writing_paused = False
        self._arena_view: Any = getattr(loop, "_arena_view", None)
        # The context of the connection; a fresh copy is taken when the lower transport
        # connects (see _lower_made) unless start_tls() gave one.
        self._context: contextvars.Context = context  # type: ignore[assignment]  # see _lower_made
        self._ctx_run: Any = context.run if context is not None else None
        self._link: _Link = _Link(self)
        self._set_app_protocol(protocol)

    # ------------------------------------------------------------------ protocol

    def _set_app_protocol(self, protocol: Any) -> None:
        self._protocol: Any = protocol  # a Protocol or BufferedProtocol: called by kind
        self._buffered = isinstance(protocol, _BufferedProtocol)
        if self._buffered:
            self._data_received: Any = None
            self._reader: Callable[[], bool] = self._do_read_buffered
        else:
            self._data_received = data_received_of(protocol)
            self._reader = self._do_read_copied

    def set_protocol(self, protocol: BaseProtocol) -> None:
        """Set a new protocol; the next data goes to it."""
        self._set_app_protocol(protocol)

    def get_protocol(self) -> BaseProtocol:
        """Return the current protocol."""
        return self._protocol  # type: ignore[no-any-return]  # (Any inside)

    # ------------------------------------------------------------------ lower side

    def _lower_made(self, lower: asyncio.Transport) -> None:
        """The lower transport is connected (its connection_made): start the handshake."""
        self._lower = lower
        if self._context is None:
            # Running in the lower transport's context now (the connection's): the
            # application's callbacks get a copy of it.  A copy, not the same object: a
            # Context cannot be entered twice, and the lower transport enters its own to
            # call this layer.
            self._context = contextvars.copy_context()
            self._ctx_run = self._context.run
        # The lower transport buffers the records: give it this transport's water marks,
        # so that its pause_writing()/resume_writing() are the application's.
        try:
            lower.set_write_buffer_limits(self._high_water, self._low_water)
        except (AttributeError, NotImplementedError):
            pass
        if getattr(lower, "_protocol_paused", False):
            # start_tls() on a transport whose protocol is paused: the application stays
            # paused until the lower transport drains (uvloop issue #564 is the opposite).
            self._app_writing_paused = True
        if self._debug:
            logger.debug("%r starts SSL handshake", self)
            self._handshake_start = self._loop.time()
        self._state = _HANDSHAKE
        self._handshake_handle = self._loop.call_later(self._handshake_timeout,
                                                       self._handshake_timed_out)
        self._do_handshake()

    def _feed_from_arena(self, off: int, length: int) -> None:
        """A read of the lower uvcffi transport, still in the loop's arena (valid during
        this call only): copied once, into the incoming BIO."""
        self._in_write(self._arena_view[off:off + length])
        if self._state == _WRAPPED:
            if not self._read_scheduled and not self._reading_paused:
                if self._ctx_run(self._reader):
                    # All of it read, to the end of a record (the common read): nothing
                    # to look up in the records' headers.
                    if self._rec_left:
                        self._rec_left = 0
                    return
            self._track_records(self._arena_view, off, off + length)
        else:
            self._track_records(self._arena_view, off, off + length)
            self._incoming_other()

    def _feed(self, data: bytes | bytearray | memoryview) -> None:
        """Records from a lower transport that delivers bytes (data_received)."""
        self._in_write(data)
        if self._state == _WRAPPED:
            if not self._read_scheduled and not self._reading_paused:
                if self._ctx_run(self._reader):  # (as in _feed_from_arena)
                    if self._rec_left:
                        self._rec_left = 0
                    return
            self._track_fed(data)
        else:
            self._track_fed(data)
            self._incoming_other()

    def _track_fed(self, data: bytes | bytearray | memoryview) -> None:
        if type(data) is not bytes:
            data = memoryview(data).cast("B")  # indexed and counted in bytes
        self._track_records(data, 0, len(data))

    def _track_records(self, data: Any, pos: int, end: int) -> None:
        """Account for a read fed to the incoming BIO, ``data[pos:end]``: where it leaves
        the stream of TLS records (_rec_left, _rec_head).  A TCP EOF is a truncation only
        inside a record (_on_peer_eof), and OpenSSL does not say where it is: its
        SSLWantReadError comes at the end of the BIO's bytes both when a record was cut
        there and when whole records that carry no data (TLS 1.3 session tickets, a key
        update) were consumed."""
        left = self._rec_left
        if end - pos <= left:  # all of it inside one record (a big one, read in parts)
            self._rec_left = left - (end - pos)
            return
        if left == _REC_IN_HEADER:
            head = self._rec_head
            need = _REC_HEADER - len(head)
            head += bytes(data[pos:min(end, pos + need)])
            if len(head) < _REC_HEADER:
                self._rec_head = head
                return
            pos += need
            left = head[3] << 8 | head[4]
        pos += left  # the end of the current record: a header, or past this read
        while pos + _REC_HEADER <= end:
            pos += _REC_HEADER + (data[pos + 3] << 8 | data[pos + 4])
        if pos >= end:
            self._rec_left = pos - end
        else:
            self._rec_head = bytes(data[pos:end])
            self._rec_left = _REC_IN_HEADER

    def _incoming_other(self) -> None:
        state = self._state
        if state == _HANDSHAKE:
            self._do_handshake()
        elif state == _FLUSHING or state == _SHUTDOWN:
            self._ctx_run(self._shutdown_step)
        # _CLOSED: whatever still arrives is dropped

    def _lower_eof(self) -> bool:
        """The peer closed its end of the TCP stream (its return value: keep the lower
        transport open, the TLS layer closes it)."""
        if self._debug:
            logger.debug("%r received EOF", self)
        state = self._state
        if state == _HANDSHAKE:
            self._handshake_failed(ConnectionResetError(
                "Connection lost during the TLS handshake"))
        elif state == _WRAPPED:
            if self._reading_paused and not self._has_pending():
                self._ctx_run(self._on_peer_eof)
            else:
                # Handled from the loop, after what is scheduled already.  Records may wait
                # for a reader (the read scheduled at the handshake's end, or a paused
                # one): the data goes first, then the EOF (asyncio's order); handled now,
                # the records still in the BIO would look like a truncation and be
                # dropped.  And asyncio reads the FIN on an iteration of its own, after
                # the callbacks the data scheduled: a handler task that data_received
                # started writes its response before the EOF closes the connection (a
                # request followed by a half-close gets its answer, as on asyncio).
                self._eof_pending = True
                if not self._reading_paused:
                    self._schedule_read()
        elif state == _FLUSHING or state == _SHUTDOWN:
            # No close_notify will come: the close is as complete as it can be.
            self._shutdown_done()
        else:
            return False
        return True

    def _on_peer_eof(self) -> None:
        """TCP EOF without close_notify, every whole record delivered (in the context)."""
        self._eof_pending = False
        incoming = self._incoming
        if self._rec_left or incoming.pending:
            # The stream ended inside a record: a truncation, an error.  OpenSSL
            # (CPython) names it; PyPy's ssl module reads b'' there, so the same error is
            # made by hand.
            incoming.write_eof()
            try:
                self._ssl_read(_RECORD_MAX)
                exc = None
            except _SSLError as err:
                exc = err
            if not isinstance(exc, ssl.SSLEOFError):
                exc = ssl.SSLEOFError(ssl.SSL_ERROR_EOF,
                                      "EOF occurred in violation of protocol")
            self._fatal_error(exc, "Fatal error on SSL transport")
            return
        # At a record boundary, as asyncio: the application's eof_received(), then the
        # transport closes (what it still has to send goes first).
        self._call_eof_received()
        self._shutdown_done()

    def _lower_lost(self, exc: BaseException | None) -> None:
        """The lower transport is gone (its connection_lost): the end of everything."""
        self._cancel_timers()
        state = self._state
        self._state = _CLOSED
        self._closing = True
        self._backlog = None
        self._backlog_size = 0
        # Records still in the outgoing BIO will never be sent (the protocol wrote them
        # as the connection went): dropped, so get_write_buffer_size() is 0 once lost, as
        # a socket transport's is, and not their size forever.
        if self._outgoing.pending:
            self._out_read()
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                if exc is None:
                    exc = ConnectionResetError("Connection lost during the TLS handshake")
                waiter.set_exception(exc)
        protocol = self._protocol
        # Lost in the handshake (state _HANDSHAKE: the lower transport closed under it, as
        # start_tls() does when cancelled) the protocol is not told, as on asyncio: a
        # start_tls() protocol never had this connection.  A handshake that failed went to
        # _CLOSED first: that one the protocol hears of (connection_lost with the error).
        # No reference cycles left once the connection is gone (the application's
        # protocol usually holds this transport; the link and the lower transport hold
        # this layer's methods): everything is freed by reference counting, at once,
        # as asyncio's sslproto is (CPython's test_create_connection_memory_leak).
        self._protocol = None
        self._data_received = None
        self._reader = None  # type: ignore[assignment]
        self._lower = None
        self._link = None  # type: ignore[assignment]
        if self._app_connected and not self._app_lost and state != _HANDSHAKE:
            self._app_lost = True
            self._ctx_run(protocol.connection_lost, exc)
        elif state == _HANDSHAKE and self._debug:
            logger.debug("%r lost during the handshake: %r", self, exc)

    def _lower_pause_writing(self) -> None:
        """The lower transport's buffer went over the high-water mark."""
        self._maybe_pause_app()

    def _lower_resume_writing(self) -> None:
        """The lower transport's buffer drained to the low-water mark."""
        self._maybe_resume_app()

    # ------------------------------------------------------------------ handshake

    def _do_handshake(self) -> None:
        try:
            self._sslobj.do_handshake()
        except _WantRead:
            self._flush_out()
        except Exception as exc:
            self._flush_out()  # the alert that tells the peer why, when there is one
            self._handshake_failed(exc)
        else:
            self._handshake_done()

    def _handshake_timed_out(self) -> None:
        self._handshake_handle = None
        if self._state == _HANDSHAKE:
            # As asyncio: a start_tls() protocol is not told of a connection that timed
            # out in the handshake (start_tls() raises); a failed handshake it is told of.
            self._app_lost = True
            self._handshake_failed(ConnectionAbortedError(
                f"SSL handshake is taking longer than {self._handshake_timeout} seconds: "
                f"aborting the connection"))

    def _handshake_failed(self, exc: BaseException) -> None:
        self._cancel_timers()
        self._state = _CLOSED
        if isinstance(exc, ssl.CertificateError):
            message = "SSL handshake failed on verifying the certificate"
        else:
            message = "SSL handshake failed"
        waiter = self._waiter
        self._waiter = None
        self._fatal_error(exc, message)
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _handshake_done(self) -> None:
        sslobj = self._sslobj
        try:
            peercert = sslobj.getpeercert()
        except Exception as exc:
            self._handshake_failed(exc)
            return
        self._cancel_timers()
        self._state = _WRAPPED
        if self._debug:
            dt = self._loop.time() - self._handshake_start  # type: ignore[operator]  # started
            logger.debug("%r: SSL handshake took %.1f ms", self, dt * 1e3)
        self._extra.update(peercert=peercert, cipher=sslobj.cipher(),
                           compression=sslobj.compression(), ssl_object=sslobj)
        if not self._app_connected:
            self._app_connected = True
            if not self._app_call(self._protocol.connection_made, self,
                                  what="connection_made"):
                return
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        # Application data that came with the end of the handshake is delivered from the
        # loop, after the waiter's callbacks: start_tls() returns the transport before its
        # protocol sees data (uvloop does the same: the caller may check ALPN first).
        if self._has_pending():
            self._schedule_read()
        # Only now the last handshake records (TLS 1.3 session tickets) and what
        # connection_made wrote go out, as asyncio sends them after its first read.  A
        # peer that reset right after its Finished fails this write at once, and the lower
        # transport schedules connection_lost: scheduled after the application's first
        # callbacks (a task connection_made started, the data that came with the
        # Finished), never before them.
        self._flush_out()

    # ------------------------------------------------------------------ reading

    def _has_pending(self) -> bool:
        return self._incoming.pending > 0 or self._ssl_pending() > 0

    def _schedule_read(self) -> None:
        if not self._read_scheduled:
            self._read_scheduled = True
            self._loop.call_soon(self._scheduled_read)

    def _scheduled_read(self) -> None:
        self._read_scheduled = False
        if self._state != _WRAPPED or self._reading_paused:
            return
        # (a Protocol's read may begin inside a record a BufferedProtocol was reading)
        self._ctx_run(self._do_read_buffered if self._buffered else self._read_rest_copied)
        if self._state != _WRAPPED or self._reading_paused:
            return
        if self._eof_pending:
            self._ctx_run(self._on_peer_eof)
            return
        self._resume_lower()

    def _do_read_copied(self) -> bool:
        """Decrypt what the BIO holds, deliver it to data_received(), send what that
        wrote (runs in the transport's context).  The read path of a Protocol.  True when
        it read the BIO empty with a record's data (the end of a record: see
        _feed_from_arena)."""
        incoming = self._incoming
        read = self._ssl_read
        first = None
        more = None
        close_notify = False
        error = None
        ended = False
        try:
            # While the BIO holds bytes: SSLObject.read() returns (the rest of) one
            # record's plaintext per call, and asking for a whole record's worth means
            # nothing of a record stays decrypted in OpenSSL between calls (the BIO's
            # byte count is not enough: OpenSSL may hold the start of a record already).
            while incoming.pending:
                chunk = read(_RECORD_MAX)
                if not chunk:
                    close_notify = True
                    break
                if first is None:
                    first = chunk
                elif more is None:
                    more = [first, chunk]
                else:
                    more.append(chunk)
            else:
                ended = True
        except _WantRead:
            # The rest is part of a record (OpenSSL keeps it; the BIO reads empty now),
            # or records that were not data (session tickets): where the stream stands
            # is for the feed to find out (_track_records).
            pass
        except _ZeroReturn:
            close_notify = True
        except _SSLError as exc:
            error = exc  # reported after the data that decrypted before it
        if not self._deliver(first, more, error):
            return True  # (failed: nothing more to read)
        if self._backlog is not None:
            self._write_backlog()  # a renegotiation may have been waiting for this read
        # What data_received() wrote, in one write (and handshake replies, if any).
        data = self._out_read()
        if data and self._state != _CLOSED:
            self._lower.write(data)
        if close_notify:
            self._peer_closed()
        return ended

    def _deliver(self, first: bytes | None, more: list[bytes] | None,
                 error: BaseException | None) -> bool:
        """Give a read's plaintext to data_received() (``first``, or all of ``more`` when
        it has several records), then report the TLS error that ended the read, if any.
        False when the transport failed: the read stops there."""
        if first is not None:
            self._in_app = True  # the application's writes wait for its return
            try:
                self._data_received(first if more is None else b"".join(more))
            except (SystemExit, KeyboardInterrupt):
                self._in_app = False
                raise
            except BaseException as exc:
                self._in_app = False
                self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
                return False
            self._in_app = False
        if error is not None:
            self._fatal_error(error, "Fatal error on SSL transport")
            return False
        return True

    def _do_read_buffered(self) -> bool:
        """The read path of a BufferedProtocol (in the transport's context); True as
        _do_read_copied."""
        self._in_app = True
        try:
            how = self._read_buffered()
        finally:
            self._in_app = False
        self._read_done(how == _READ_CLOSE_NOTIFY)
        if how == _READ_HANDED_OVER:
            return self._read_rest_copied()
        return how == _READ_RECORD_END

    def _read_rest_copied(self) -> bool:
        """A Protocol's read that may begin inside a record, where a BufferedProtocol's
        read stopped: its buffer_updated() set the Protocol (the rest of that read is the
        Protocol's, as in the stream transport), or paused reading.  The plaintext OpenSSL
        holds of that record goes first: the Protocol's read path takes whole records from
        the BIO only.  In the transport's context; True as _do_read_copied."""
        if self._state != _WRAPPED or self._reading_paused:
            return False
        left = self._ssl_pending()
        if left:
            try:
                chunk = self._ssl_read(left)
            except _SSLError as exc:  # (not expected: the record is decrypted already)
                self._fatal_error(exc, "Fatal error on SSL transport")
                return True
            if not self._deliver(chunk, None, None):
                return True
            self._read_done(False)
            if self._state != _WRAPPED or self._reading_paused:
                return False
        if not self._incoming.pending:
            return True  # (after a BufferedProtocol's read of data: a record's end)
        return self._reader()  # (a BufferedProtocol's again, if data_received set one)

    def _read_done(self, close_notify: bool) -> None:
        if self._backlog is not None:
            self._write_backlog()
        self._flush_out()
        if close_notify:
            self._peer_closed()

    def _read_buffered(self) -> int:
        protocol = self._protocol
        incoming = self._incoming
        pending = self._ssl_pending
        read = self._ssl_read
        n: Any = 0  # bytes of the last read (SSLObject.read into a buffer gives an int)
        while not self._reading_paused and self._state == _WRAPPED:
            hint = incoming.pending + pending()
            if not hint:
                return _READ_RECORD_END if n else _READ_STOPPED
            try:
                buf = protocol.get_buffer(hint)
                size = len(buf)
                if not size:
                    raise RuntimeError("get_buffer() returned an empty buffer")
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
                return _READ_STOPPED
            try:
                # Straight into the application's buffer; one record (or the part that
                # fits) per call, the rest on the next turn with a new get_buffer().
                n = read(size, buf)
            except _WantRead:
                return _READ_STOPPED
            except _ZeroReturn:
                return _READ_CLOSE_NOTIFY
            except _SSLError as exc:
                self._fatal_error(exc, "Fatal error on SSL transport")
                return _READ_STOPPED
            if not n:
                return _READ_CLOSE_NOTIFY
            try:
                protocol.buffer_updated(n)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")
                return _READ_STOPPED
            if self._protocol is not protocol:  # buffer_updated() set another protocol
                if not self._buffered:
                    return _READ_HANDED_OVER
                protocol = self._protocol
        return _READ_STOPPED

    def _read_into_void(self) -> bool:
        """Closing: decrypt and discard application data, watching for close_notify.
        RFC 8446 6.1: data after a closure alert MUST be ignored; and OpenSSL's unwrap()
        fails with APPLICATION_DATA_AFTER_CLOSE_NOTIFY on data it did not read first."""
        incoming = self._incoming
        read = self._ssl_read
        try:
            while incoming.pending or self._ssl_pending():
                if not read(_RECORD_MAX):
                    return True
        except _WantRead:
            return False
        except _ZeroReturn:
            return True
        return False

    def _peer_closed(self) -> None:
        """The peer's close_notify arrived (in the transport's context)."""
        self._call_eof_received()
        if self._state == _WRAPPED:
            self._begin_shutdown()

    def _call_eof_received(self) -> None:
        if not self._app_connected or self._app_eof or self._app_lost:
            return
        self._app_eof = True
        self._in_app = True
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Error calling eof_received()")
            return
        finally:
            self._in_app = False
        if keep_open:
            logger.warning("returning true from eof_received() has no effect when using ssl")

    def pause_reading(self) -> None:
        """Pause the receiving end: no data_received() until resume_reading().  The
        socket stops being read; data already received is delivered after the resume."""
        if self._reading_paused:
            return
        self._reading_paused = True
        lower = self._lower
        if lower is not None and self._state == _WRAPPED:
            self._lower_paused = True
            lower.pause_reading()
        if self._debug:
            logger.debug("%r pauses reading", self)

    def resume_reading(self) -> None:
        """Resume the receiving end: data that arrived while paused is delivered first,
        from the loop, in the transport's context."""
        if not self._reading_paused:
            return
        self._reading_paused = False
        if self._state == _WRAPPED:
            if self._eof_pending or self._has_pending():
                self._schedule_read()  # it resumes the socket after delivering
            else:
                self._resume_lower()
        if self._debug:
            logger.debug("%r resumes reading", self)

    def _resume_lower(self) -> None:
        self._lower_paused = False
        lower = self._lower
        if lower is not None:
            lower.resume_reading()

    def is_reading(self) -> bool:
        """True unless pause_reading() is in effect."""
        return not self._reading_paused

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write bytes-like ``data``: encrypted at once and sent without blocking (what
        the socket does not take is buffered).  TypeError for other types; data written
        after close() is dropped (with a warning after a few)."""
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"data: expecting a bytes-like instance, "
                                f"got {type(data).__name__}")
            if _SSL_WRITES_LEN_OF_VIEWS and isinstance(data, memoryview):
                view = self._byte_view(data)
                if view is None:
                    return
                data = view
        if not data:
            return
        if self._state != _WRAPPED or self._backlog is not None:
            self._write_slow(data)
            return
        try:
            # (CPython's SSLObject.write() takes any C-contiguous buffer, in bytes, and
            # raises BufferError for a view that is not: asyncio's failure, here too)
            self._ssl_write(data)
        except _WantRead:
            self._add_backlog(data)  # renegotiating: waits for the peer's records
            return
        except Exception as exc:
            self._fatal_error(exc, "Fatal error on SSL transport")
            return
        if not self._in_app:
            self._flush_out()

    def _byte_view(self, view: memoryview) -> memoryview | None:
        """A view written as what it is, bytes: one dimension of one-byte items, so that
        len() and slices count bytes (PyPy's ssl module writes len() bytes of a view, items
        or rows; the PyPy path below cuts it in chunks of bytes; the backlog counts it).
        None for a view that is not C-contiguous: asyncio hands it to SSLObject.write(),
        whose BufferError fails the connection, and so does this (a write after the close
        is dropped first)."""
        if view.c_contiguous:
            return view if view.ndim == 1 and view.itemsize == 1 else view.cast("B")
        state = self._state
        if self._closing or (state != _WRAPPED and state != _HANDSHAKE):
            self._write_slow(view)
        else:
            self._fatal_error(BufferError("memoryview: underlying buffer is not C-contiguous"),
                              "Fatal error on SSL transport")
        return None

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write an iterable of bytes-like objects: one TLS record stream for all."""
        data = b"".join(list_of_data)
        if data:
            self.write(data)

    def _write_slow(self, data: bytes | bytearray | memoryview) -> None:
        state = self._state
        if self._closing or state == _CLOSED or state == _SHUTDOWN or state == _FLUSHING:
            if self._conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("SSL connection is closed")
            self._conn_lost += 1
            return
        if isinstance(data, memoryview):
            view = self._byte_view(data)  # (what the write would have refused, refused)
            if view is None:
                return
            data = view
        self._add_backlog(data)
        if state == _WRAPPED:
            self._write_backlog()
            if not self._in_app:
                self._flush_out()

    def _add_backlog(self, data: bytes | bytearray | memoryview) -> None:
        if self._backlog is None:
            self._backlog = []
        data = bytes(data)  # the caller may reuse its buffer
        self._backlog.append(data)
        self._backlog_size += len(data)  # (in bytes, whatever view it was)
        self._maybe_pause_app()

    def _write_backlog(self) -> None:
        """Encrypt the plaintext that waited; stop again at SSLWantReadError."""
        backlog = self._backlog
        write = self._ssl_write
        try:
            while backlog:
                data = backlog[0]
                write(data)
                del backlog[0]
                self._backlog_size -= len(data)
        except _WantRead:
            return
        except Exception as exc:
            self._fatal_error(exc, "Fatal error on SSL transport")
            return
        self._backlog = None
        self._backlog_size = 0
        self._maybe_resume_app()

    def _flush_out(self) -> None:
        """Hand the records waiting in the outgoing BIO to the lower transport (one write
        for all of them)."""
        data = self._out_read()
        if data and self._state != _CLOSED:  # (closed: the lower transport is going)
            self._lower.write(data)

    def can_write_eof(self) -> bool:
        """False: TLS has no half-close (close_notify ends both directions here)."""
        return False

    def write_eof(self) -> None:
        """Not supported by TLS transports (asyncio's raise NotImplementedError too)."""
        raise NotImplementedError

    def get_write_buffer_size(self) -> int:
        """Bytes written and not sent yet: plaintext waiting for a renegotiation, records
        not encrypted out of the BIO yet, and records the socket has not taken."""
        lower = self._lower
        size = self._backlog_size + self._outgoing.pending
        if lower is not None:
            size += lower.get_write_buffer_size()
        return size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """The (low, high) water marks of the write buffer."""
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the marks: pause_writing() above ``high``, resume_writing() at or below
        ``low``.  Defaults as asyncio's TLS transports: high 512 KiB (or 4 * low), low
        high // 4."""
        if high is None and low is None:
            high = WRITE_HIGH_WATER
        self._high_water, self._low_water = water_marks(high, low)
        lower = self._lower
        if lower is not None and self._state != _CLOSED:
            lower.set_write_buffer_limits(self._high_water, self._low_water)
        self._maybe_pause_app()

    @property
    def _protocol_paused(self) -> bool:
        # sendfile's fallback asks whether the protocol is paused (loop/_streams.py)
        return self._app_writing_paused

    def _maybe_pause_app(self) -> None:
        # (Not before connection_made: the lower transport may call this while the
        # handshake runs, when it is given this transport's water marks.)
        if self._app_writing_paused or self._app_lost or not self._app_connected:
            return
        if self.get_write_buffer_size() <= self._high_water:
            return
        self._app_writing_paused = True
        notify_protocol(self, self._context, "pause_writing")

    def _maybe_resume_app(self) -> None:
        if not self._app_writing_paused or self._app_lost:
            return
        if self.get_write_buffer_size() > self._low_water:
            return
        self._app_writing_paused = False
        notify_protocol(self, self._context, "resume_writing")

    # ------------------------------------------------------------------ closing

    def is_closing(self) -> bool:
        """True once close() or abort() was called, or the connection is closing."""
        return self._closing

    def close(self) -> None:
        """Close the transport: what was written is sent, then close_notify; once the
        peer's close_notify arrives (or ssl_shutdown_timeout passes: connection_lost
        gets TimeoutError) the connection closes and connection_lost(None) is called.
        No more data is delivered (what arrives meanwhile is discarded)."""
        if self._closing:
            return
        self._closing = True
        state = self._state
        if state == _WRAPPED:
            if self._eof_pending:
                self._shutdown_done()  # the peer has gone: no close_notify to wait for
            else:
                self._begin_shutdown()
        elif state == _HANDSHAKE:
            self._state = _CLOSED
            self._cancel_timers()
            # Closed before TLS was up (start_tls() cancelled): as on asyncio, the protocol
            # given to start_tls() hears nothing of a connection it never had.
            self._app_lost = True
            lower = self._lower
            if lower is not None:
                lower.abort()

    def _begin_shutdown(self) -> None:
        self._closing = True
        self._state = _FLUSHING
        self._shutdown_handle = self._loop.call_later(self._shutdown_timeout,
                                                      self._shutdown_timed_out)
        # The peer's close_notify must still be read, whatever the application paused.
        # Asking whether the lower transport is paused, not whether the application is:
        # after a resume_reading() the lower one stays paused until the data held in the
        # BIO is delivered, and a close() before that, or from inside that delivery,
        # leaves _WRAPPED, so the delivery never resumes it.  Left paused, the close
        # waited out the shutdown timeout (connection_lost(TimeoutError)).
        if self._lower_paused:
            self._resume_lower()
        # From close() (any context, this one included) or from the read path (in it).
        run_in_context(self._context, self._shutdown_step)

    def _shutdown_step(self) -> None:
        """Advance the close: encrypt what waits, send close_notify, wait for the peer's."""
        if self._state == _FLUSHING:
            if self._backlog is not None:
                self._write_backlog()
                if self._backlog is not None:
                    self._flush_out()
                    return  # renegotiation still running: more records needed
            self._state = _SHUTDOWN
        if self._state != _SHUTDOWN:
            return
        try:
            if self._read_into_void():
                # The peer's close_notify: the application hears its EOF (if it has not)
                self._call_eof_received()
            self._sslobj.unwrap()
        except _WantRead:
            self._flush_out()  # our close_notify; the peer's is still to come
            return
        except Exception as exc:
            self._flush_out()
            self._cancel_timers()
            self._state = _CLOSED
            self._fatal_error(exc, "Error occurred during shutdown")
            return
        self._flush_out()
        # Both close_notify are through: closed now (writes are dropped from here on),
        # the lower transport from the loop, as asyncio does.  A close_notify that came
        # with data: the handler task that data woke takes its next step first, and its
        # write() + drain() still returns (drain() raised ConnectionResetError when the
        # lower transport's connection_lost came ahead of it).
        self._shutdown_done(lower_later=True)

    def _shutdown_timed_out(self) -> None:
        self._shutdown_handle = None
        if self._state in (_FLUSHING, _SHUTDOWN):
            self._state = _CLOSED
            lower = self._lower
            if lower is not None:
                lower._force_close(asyncio.TimeoutError("SSL shutdown timed out"))

    def _shutdown_done(self, lower_later: bool = False) -> None:
        self._cancel_timers()
        self._state = _CLOSED
        self._closing = True
        if lower_later:
            self._loop.call_soon(self._close_lower)
        else:
            self._close_lower()

    def _close_lower(self) -> None:
        lower = self._lower
        if lower is not None:  # (None: the lower transport is gone already)
            lower.close()  # sends what is buffered (our close_notify), then connection_lost

    def abort(self) -> None:
        """Close the transport at once: buffered data is lost, no close_notify;
        connection_lost(None) follows."""
        self._force_close(None)

    def _force_close(self, exc: BaseException | None) -> None:
        self._closing = True
        self._state = _CLOSED
        self._cancel_timers()
        lower = self._lower
        if lower is not None:
            lower._force_close(exc) if hasattr(lower, "_force_close") else lower.abort()

    def _cancel_timers(self) -> None:
        handle = self._handshake_handle
        if handle is not None:
            self._handshake_handle = None
            handle.cancel()
        handle = self._shutdown_handle
        if handle is not None:
            self._shutdown_handle = None
            handle.cancel()

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on transport") -> None:
        """Report ``exc`` (OSErrors, the peer's doing, only in debug mode, as asyncio) and
        drop the connection; connection_lost(exc) follows."""
        if isinstance(exc, OSError):
            if self._debug:
                logger.debug("%r: %s", self, message, exc_info=exc)
        elif not isinstance(exc, asyncio.CancelledError):
            self._loop.call_exception_handler({
                "message": message,
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            })
        self._force_close(exc)
        leave_if_interrupted(exc)  # (after its fate in asyncio: see there)

    def _app_call(self, callback: Callable[..., _T], *args: Any, what: str) -> bool:
        """An application callback during the handshake's end (in the context)."""
        self._in_app = True
        try:
            self._ctx_run(callback, *args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, f"Fatal error: protocol.{what}() call failed.")
            return False
        finally:
            self._in_app = False
        return True  # (what it wrote is sent by the caller: see _handshake_done)

    # ------------------------------------------------------------------ information

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """asyncio's names: sslcontext, ssl_object, peercert, cipher, compression (after
        the handshake), and the lower transport's (socket, peername, sockname, ...)."""
        extra = self._extra
        if name in extra:
            return extra[name]
        lower = self._lower
        if lower is not None:
            return lower.get_extra_info(name, default)
        return default

    def __repr__(self) -> str:
        info = [self.__class__.__name__, _STATE_NAMES.get(self._state, "?")]
        if self._closing:
            info.append("closing")
        if self._reading_paused:
            info.append("reading paused")
        info.append(f"lower={self._lower!r}")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_app_connected", False) and not getattr(self, "_closing", True):
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)


# ---------------------------------------------------------------------------- PyPy

try:
    import _pypy_openssl  # PyPy's cffi binding of OpenSSL, which its ssl module uses
except ImportError:
    _pypy_openssl = None


class _DirectSSLTransport(SSLTransport):
    """PyPy: the hot calls straight to OpenSSL, through the binding PyPy's own ssl module
    is written on (``_pypy_openssl``), with the SSL and BIO pointers of the very
    SSLObject and MemoryBIOs above (their ``_sslobj.ssl`` and ``bio``).

    Why: PyPy's ssl module is Python over cffi, and its wrappers copy.  MemoryBIO.write()
    turns a memoryview into bytes first, SSLObject.read() and MemoryBIO.read() allocate
    and copy, and each re-checks sockets and timeouts it does not have here.  Measured on
    the 10 KiB TLS echo (loop/bench/RESULTS.md): these wrappers were most of uvcffi's own
    time on PyPy.  Here a read goes from the loop's arena into the BIO (one memcpy), is
    decrypted into a buffer of the loop's, and becomes the bytes data_received() gets;
    the records written go from the outgoing BIO into a buffer of the loop's and from
    there to the socket (libuv copies only what the socket does not take).  Everything
    rare (handshake, shutdown, errors, BufferedProtocol reads) stays on the ssl module's
    API, which also makes the exceptions."""

    __slots__ = ("_ssl_ptr", "_in_bio", "_out_bio", "_arena_ptr", "_rbuf", "_wbuf", "_sbuf")

    def __init__(self, loop: AbstractEventLoop, *args: Any, **kwargs: Any) -> None:
        SSLTransport.__init__(self, loop, *args, **kwargs)
        # (PyPy's cffi ssl module: its objects' attributes are not in typeshed)
        self._ssl_ptr = self._sslobj._sslobj.ssl  # type: ignore[attr-defined]
        self._in_bio = self._incoming.bio  # type: ignore[attr-defined]
        self._out_bio = self._outgoing.bio  # type: ignore[attr-defined]
        self._arena_ptr = _ffi.cast("char *", _lib.uvc_arena(owners.uv(loop)))
        # Scratch buffers of the loop (one thread runs it): filled and emptied within
        # one call, so every TLS transport of the loop shares them.
        self._rbuf, self._wbuf, self._sbuf = owners.loop_buffer(
            loop, "tls_scratch", lambda: (_ffi.new("char[]", _RECORD_MAX),
                                          _ffi.new("char[]", _OUT_CHUNK),
                                          _ffi.new("char[]", _OUT_CHUNK)))

    def _feed_from_arena(self, off: int, length: int) -> None:
        _BIO_write(self._in_bio, self._arena_ptr + off, length)
        if self._state == _WRAPPED:
            if not self._read_scheduled and not self._reading_paused:
                if self._ctx_run(self._reader):  # (see SSLTransport._feed_from_arena)
                    if self._rec_left:
                        self._rec_left = 0
                    return
            self._track_records(self._arena_view, off, off + length)
        else:
            self._track_records(self._arena_view, off, off + length)
            self._incoming_other()

    def _do_read_copied(self) -> bool:
        """SSLTransport._do_read_copied, with OpenSSL called directly."""
        ssl_ptr = self._ssl_ptr
        in_bio = self._in_bio
        rbuf = self._rbuf
        first = None
        more = None
        close_notify = False
        error = None
        ended = False
        while _BIO_ctrl_pending(in_bio):
            n = _SSL_read(ssl_ptr, rbuf, _RECORD_MAX)
            if n > 0:
                chunk = _unpack(rbuf, n)  # the bytes data_received() gets
            else:
                code = _SSL_get_error(ssl_ptr, n)
                if code == _SSL_ERROR_WANT_READ:
                    break  # see SSLTransport._do_read_copied
                if code == _SSL_ERROR_ZERO_RETURN:
                    close_notify = True
                    break
                # Anything else: the ssl module's read() says what, as an exception.
                try:
                    chunk = self._ssl_read(_RECORD_MAX)
                except _WantRead:
                    break
                except _ZeroReturn:
                    close_notify = True
                    break
                except _SSLError as exc:
                    error = exc
                    break
                if not chunk:
                    close_notify = True
                    break
            if first is None:
                first = chunk
            elif more is None:
                more = [first, chunk]
            else:
                more.append(chunk)
        else:
            ended = True
        if not self._deliver(first, more, error):
            return True
        self._read_done(close_notify)
        return ended

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write bytes-like ``data``: encrypted at once and sent without blocking (what
        the socket does not take is buffered).  TypeError for other types; data written
        after close() is dropped (with a warning after a few)."""
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"data: expecting a bytes-like instance, "
                                f"got {type(data).__name__}")
            if isinstance(data, memoryview):
                # (n and the slices below count bytes: a view of wider items is cast)
                view = self._byte_view(data)
                if view is None:
                    return
                data = view
        n = len(data)
        if not n:
            return
        if self._state != _WRAPPED or self._backlog is not None:
            self._write_slow(data)
            return
        # Copied into a buffer of the loop's, then encrypted from there: PyPy's
        # ffi.from_buffer() of a fresh bytes object copies it into non-moving memory
        # first, slower than this copy and the encryption together (measured: 6.5 us
        # for 10 KiB, against 0.2 us for the memmove).
        sbuf = self._sbuf
        ssl_ptr = self._ssl_ptr
        pos = 0
        while pos < n:
            k = n - pos
            if k > _OUT_CHUNK:
                k = _OUT_CHUNK
            _memmove(sbuf, data if k == n else memoryview(data)[pos:pos + k], k)
            if _SSL_write(ssl_ptr, sbuf, k) != k:
                # Not written (renegotiating, or an error): the ssl module's write()
                # tries again (the same bytes, as OpenSSL requires) and raises what it is.
                rest = data if not pos else memoryview(data)[pos:]
                try:
                    self._ssl_write(rest)
                except _WantRead:
                    self._add_backlog(rest)
                    return
                except Exception as exc:
                    self._fatal_error(exc, "Fatal error on SSL transport")
                    return
                break
            pos += k
        if not self._in_app:
            self._flush_out()

    def _flush_out(self) -> None:
        out_bio = self._out_bio
        wbuf = self._wbuf
        while True:
            n = _BIO_read(out_bio, wbuf, _OUT_CHUNK)
            if n <= 0:
                return
            if self._state != _CLOSED:
                # libuv sends what it can at once and copies only the rest: the buffer
                # is free again when write() returns.
                self._lower.write(memoryview(_ffi.buffer(wbuf, n)))
            if n < _OUT_CHUNK:
                return


_OUT_CHUNK = 256 * 1024  # records handed to the socket per write (a burst is rarely more)
if _pypy_openssl is not None:
    from .._uv import ffi as _ffi
    from .._uv import lib as _lib

    _memmove = _ffi.memmove
    _unpack = _ffi.unpack

    _BIO_write = _pypy_openssl.lib.BIO_write
    _BIO_read = _pypy_openssl.lib.BIO_read
    _BIO_ctrl_pending = _pypy_openssl.lib.BIO_ctrl_pending
    _SSL_read = _pypy_openssl.lib.SSL_read
    _SSL_write = _pypy_openssl.lib.SSL_write
    _SSL_get_error = _pypy_openssl.lib.SSL_get_error
    _SSL_ERROR_WANT_READ = _pypy_openssl.lib.SSL_ERROR_WANT_READ
    _SSL_ERROR_ZERO_RETURN = _pypy_openssl.lib.SSL_ERROR_ZERO_RETURN


def _direct_usable(sslobj: Any, incoming: ssl.MemoryBIO) -> bool:
    return (_pypy_openssl is not None and hasattr(getattr(sslobj, "_sslobj", None), "ssl")
            and hasattr(incoming, "bio"))


_direct_checked = None


def tls_transport_class() -> type[SSLTransport]:
    """The SSLTransport class for this runtime: _DirectSSLTransport on a PyPy whose ssl
    module is the cffi one this was written for (checked once), else SSLTransport."""
    global _direct_checked
    if _direct_checked is None:
        ok = False
        if _pypy_openssl is not None:
            try:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                incoming = ssl.MemoryBIO()
                ok = _direct_usable(ctx.wrap_bio(incoming, ssl.MemoryBIO(),
                                                 server_hostname="localhost"), incoming)
            except Exception:
                ok = False
        _direct_checked = _DirectSSLTransport if ok else SSLTransport
    return _direct_checked
