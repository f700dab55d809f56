"""Stream transports over libuv stream slots (csrc/uvc_stream.c).

``StreamTransportBase`` is the machinery every stream transport shares, whatever the fd
is (TCP socket, Unix socket, pipe, tty): reading with pause/resume, write buffering in C
with exact accounting and flow control, write_eof, close-after-flush, abort, and asyncio's
error semantics.  It assumes no socket: subclasses add what their kind of fd knows
(``SocketTransport`` here: peername, sockname, the socket object; the pipe transports in
transports/pipe.py).

How the loop talks to a transport (see loop/_core.py): the transport owns a handle slot;
the loop's event drain calls ``_uv_read(data)`` for each read (``_uv_read_at(offset,
length)`` when a BufferedProtocol reads: the bytes go from the loop's arena straight into
its buffer), ``_uv_event(kind, a, b, c)`` for the other events and ``_uv_closed()`` once
libuv has freed the handle.

Internal interface kept stable for subclasses (the pipe transports use it):
  __init__(loop, slot, protocol, *, context=None, extra=None, server=None, waiter=None,
           reading=True)              starts the transport: connection_made, then reading
  _kind                              "socket" / "pipe": the word in asyncio's messages
  _get_extra_lazy(name)              extra info computed on demand (default: None)
  _on_eof()                          what EOF does (default: eof_received, keep-open or close)
  _release_resource()                drop the fd's Python owner before libuv closes it
  _fatal_error(exc, message), _force_close(exc), _call_connection_lost(exc)
  _make_empty_waiter() / _reset_empty_waiter()   (sendfile: wait for the writes to drain)
  _sendfile_lost_waiter()            (sendfile: then learn that the connection is lost)
"""
from __future__ import annotations

import asyncio
import contextvars
import errno
import functools
import logging
import socket
import sys
import warnings
from asyncio import trsock
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable

from .. import _accelerated
from .. import _owners as owners
from .._errors import uv_error
from .._uv import ffi, lib
from . import _sockref
from ._base import TransportBase, data_received_of
from ._flow import water_marks

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop, BaseProtocol

    from .._server import Server

logger = logging.getLogger("asyncio")


_uvc_write = _accelerated.stream_write  # lib.uvc_write, or the accelerator's on CPython
_uvc_read_start = lib.uvc_read_start
_uvc_read_stop = lib.uvc_read_stop
_uvc_readable_start = lib.uvc_readable_start
_NO_BUFFER = object()  # what _uv_readable holds until get_buffer() returns
_read_into = _accelerated.read_into  # lib.uvc_read_into, or the accelerator's on CPython
_uvc_stream_recv = lib.uvc_stream_recv
_RECV_MAX = lib.UVC_RECV_MAX
_buffer = ffi.buffer
# From this size on PyPy, ffi.buffer(ptr, n)[:] makes bytes faster than a slice of a
# bigger buffer (loop/_core.py reads the arena the same way).
_BIG_READ = 16384
_UV_EAGAIN = -errno.EAGAIN  # libuv's errors are negated errnos on Unix
_UV_EBADF = -errno.EBADF
_UV_ECANCELED = -errno.ECANCELED
_from_buffer = ffi.from_buffer
_write_buffer = _accelerated.write_buffer
# The accelerator's write takes a bytearray as it is (always contiguous); cffi's needs
# ffi.from_buffer of it.  (bytes, in the test before this one, either way.)
_WRITTEN_AS_IS: type = bytearray if _accelerated.accel is not None else bytes
_arena_copy = _accelerated.arena_copy
# Copying into a protocol's buffer: PyPy's memoryview slice assignment copies slowly (about
# 3 GB/s), ffi.memmove at memcpy speed; on CPython slice assignment is the faster one.
_COPY_WITH_MEMMOVE = sys.implementation.name == "pypy"
_memmove = ffi.memmove
_uvc_arena_copy = lib.uvc_arena_copy
# From this size glibc's memcpy switches to REP MOVSB, whose speed depends on where the
# destination lies (see uvc_arena_copy): bigger reads are copied by the C core.
_C_COPY_MIN = 4096
EV_READ = lib.UVC_EV_READ
EV_WRITE_DONE = lib.UVC_EV_WRITE_DONE
EV_EOF = lib.UVC_EV_EOF
EV_READ_ERROR = lib.UVC_EV_READ_ERROR
EV_FD_LOST = lib.UVC_EV_FD_LOST
EV_READABLE = lib.UVC_EV_READABLE
EV_SHUTDOWN = lib.UVC_EV_SHUTDOWN
EV_WRITE_QUEUED = lib.UVC_EV_WRITE_QUEUED
_uvc_stream_held = lib.uvc_stream_held
_uvc_stream_flush = lib.uvc_stream_flush
_BufferedProtocol = asyncio.BufferedProtocol


def _write_data(data: object) -> Any:
    """bytes-like ``data`` as something uvc_write takes (bytes or a cffi buffer)."""
    if isinstance(data, bytes):
        return bytes(data)  # a subclass of bytes
    if isinstance(data, (bytearray, memoryview)):
        view = memoryview(data)
        if not view.c_contiguous:
            return view.tobytes()
        # from_buffer shares the memory; uvc_write copies what it cannot send at once.
        return _write_buffer(view)
    raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")


def _set_result_unless_cancelled(fut: asyncio.Future[Any], result: object) -> None:
    if not fut.cancelled():
        fut.set_result(result)


class StreamTransportBase(TransportBase, asyncio.BaseTransport):
    """Transport machinery over a libuv stream slot.  Mixed with an asyncio transport base
    class (Transport, ReadTransport or WriteTransport) by the concrete classes."""

    _kind = "stream"
    # Slots, not an instance dict: a dict of this many keys loses CPython's fast attribute
    # path, and every read and write touches several of these.  Subclasses without
    # __slots__ still get a __dict__ for their own attributes.
    __slots__ = (
        "_loop", "_uv", "_slot", "_context", "_ctx_run", "_protocol", "_protocol_connected",
        "_closing", "_conn_lost", "_eof_written", "_eof_seen", "_paused", "_reading_started",
        "_read_allowed", "_wants_reading", "_held", "_held_scheduled", "_empty_waiter",
        "_pending", "_high_water", "_low_water", "_protocol_paused", "_server",
        "_handle_closed", "_released", "_deliver", "_data_received",
        "_uv_read", "_write_blocked", "_feed_at", "_read_into", "_uv_recv",
    )
    if TYPE_CHECKING:
        _extra: dict[str, Any]  # asyncio.BaseTransport's slot, which typeshed leaves out

    def __init__(self, loop: AbstractEventLoop, slot: int, protocol: BaseProtocol, *,
                 context: contextvars.Context | None = None, extra: dict[str, Any] | None = None,
                 server: Server | None = None, waiter: asyncio.Future[Any] | None = None,
                 reading: bool = True) -> None:
        asyncio.BaseTransport.__init__(self, extra)
        self._loop = loop
        self._uv: Any = owners.uv(loop)  # None once the loop closed
        self._slot = slot
        # While this flag is set, write() goes through _write_refused(): after write_eof(),
        # during sendfile, once the connection is lost, after the loop is closed.  The flag
        # keeps the normal write path to a single test.
        self._write_blocked = False
        self._context = contextvars.copy_context() if context is None else context
        self._ctx_run: Callable[..., Any] = self._context.run
        # (Any: a Protocol or a BufferedProtocol, whose methods are called by kind)
        self._protocol: Any = None
        self._protocol_connected = False
        self._closing = False
        self._conn_lost = 0
        self._eof_written = False       # write_eof() was called
        self._eof_seen = False          # the peer's EOF arrived (reading is over)
        self._paused = False            # pause_reading()
        self._reading_started = False   # uv_read_start is in effect
        self._read_allowed = False      # connection_made has run: reading may start
        self._wants_reading = reading   # a write-only pipe never reads
        self._held: list[Any] | None = None  # reads held while paused (list) / None
        self._held_scheduled = False
        self._empty_waiter: asyncio.Future[None] | None = None
        self._pending = 0               # bytes given to write() and not yet written
        self._high_water, self._low_water = water_marks()
        self._protocol_paused = False   # pause_writing() was called
        self._server: Server | None = server
        self._handle_closed = False
        self._released = False          # the transport let go of its handle (closed)
        self._read_into = False         # reading in read-into mode (see set_protocol)
        self._uv_recv: Callable[[bytes], object] | None = None  # see _route_reads
        self.set_protocol(protocol)
        owners.register_slot(loop, slot, self)
        if server is not None:
            server._attach(self)
        # As asyncio: connection_made, then reading, then the waiter, each its own callback
        # (an exception in connection_made is reported and the rest still happens).
        ctx = self._context
        loop.call_soon(protocol.connection_made, self, context=ctx)
        loop.call_soon(self._start_reading, context=ctx)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None, context=ctx)

    # ------------------------------------------------------------------ start

    def _start_reading(self) -> None:
        self._read_allowed = True
        if self._wants_reading and not self._paused and not self._closing:
            self._read_start()

    def _read_start(self) -> None:
        if (self._reading_started or self._eof_seen or self._handle_closed
                or not self._read_allowed or not self._wants_reading):
            return
        start = _uvc_readable_start if self._read_into else _uvc_read_start
        err = start(self._uv, self._slot)
        if err < 0:
            self._fatal_error(uv_error(err), f"Fatal read error on {self._kind} transport")
            return
        self._reading_started = True
        self._route_reads()

    def _read_stop(self) -> None:
        if self._reading_started:
            self._reading_started = False
            self._route_reads()
            if not self._handle_closed:
                _uvc_read_stop(self._uv, self._slot)

    # ------------------------------------------------------------------ protocol

    def set_protocol(self, protocol: BaseProtocol) -> None:
        """Set a new protocol; the next reads go to it."""
        self._protocol = protocol
        self._protocol_connected = True
        if isinstance(protocol, _BufferedProtocol):
            self._deliver: Callable[[bytes], object] = self._deliver_buffered
            self._data_received: Callable[[bytes], object] | None = None
        else:
            # A C-level partial: a read costs no Python frame before data_received.  If it
            # raises, the loop calls _uv_callback_failed (below).
            self._data_received = data_received_of(protocol)
            self._deliver = functools.partial(self._ctx_run, self._data_received)
        # TLS hook: a protocol that takes reads straight from the loop's arena (the TLS
        # layer's link, transports/tls.py, copies them into its BIO: no bytes object in
        # between) gets them through _uv_read_at as (offset, length).  Reads kept as bytes
        # (held while paused) still go to its data_received.
        self._feed_at: Callable[[int, int], None] | None = getattr(
            protocol, "_feed_from_arena", None
        )
        # Both kinds of protocol are read in read-into mode: libuv only reports that the
        # stream is readable, and the transport reads when asyncio would.  A
        # BufferedProtocol's reads go straight into get_buffer()'s buffer (_uv_readable);
        # a Protocol's into the loop's receive buffer, one buffer that stays in the CPU's
        # caches, copied into bytes at once (_uv_recv, _recv_stream).  Reads of the
        # per-iteration arena (UVC_EV_READ) spread the kernel's copies of large reads
        # over megabytes: a 100 KiB echo cost 1.2x (CPython) to 1.8x (PyPy) the CPU.
        # The TLS link still takes arena reads (_feed_from_arena).
        read_into = self._feed_at is None
        if read_into != self._read_into:
            self._read_into = read_into
            if self._reading_started:  # switch libuv's reading to the other mode
                self._read_stop()
                self._read_start()
        self._route_reads()

    def get_protocol(self) -> BaseProtocol:
        """Return the current protocol."""
        return self._protocol  # type: ignore[no-any-return]  # (Any inside, see __init__)

    def _route_reads(self) -> None:
        # The loop calls self._uv_read; it is bound per state so the hot path has no tests:
        # delivering, holding (paused), or dropping (closing: asyncio reads nothing more).
        if self._closing:
            self._uv_read: Callable[[bytes], object] | None = self._drop_read
        elif self._paused:
            self._uv_read = self._hold_read
        elif self._data_received is None or self._feed_at is not None:
            self._uv_read = None  # a BufferedProtocol (or the TLS link): _uv_read_at
        else:
            self._uv_read = self._deliver
        # In read-into mode, the loop's dispatch (the accelerator's too) reads a Protocol's
        # stream itself and hands each read to _uv_recv, while it is set: only while libuv
        # reads and the protocol takes data.  Otherwise it calls _uv_readable.
        if self._uv_read is self._deliver and self._read_into and self._reading_started:
            self._uv_recv = self._deliver
        else:
            self._uv_recv = None

    # ------------------------------------------------------------------ reading

    def _deliver_data(self, data: bytes) -> None:
        try:
            self._deliver(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")

    def _uv_callback_failed(self, kind: int, exc: BaseException) -> None:
        # A read gets here when data_received raised through the partial (in read-into
        # mode, from the loop's read for a Protocol: a BufferedProtocol's _uv_readable
        # catches what its protocol raises).
        if kind == EV_READ or (kind == EV_READABLE and self._data_received is not None):
            self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
        else:
            self._fatal_error(exc, f"Fatal error on {self._kind} transport")

    def _deliver_buffered(self, data: bytes) -> None:
        """A BufferedProtocol's read kept as bytes (held while paused, or across an
        interrupted iteration); the reads themselves come through _uv_read_at."""
        self._deliver_buffered_in_parts(data, None)

    def _uv_readable(self) -> None:
        """Read-into mode: the stream has data (or EOF, or an error).  As asyncio's
        recv_into path: get_buffer(-1), one read into that buffer, buffer_updated(n); again
        while reads fill the buffer (up to 32 times, as libuv reads), so that small
        buffers do not take one loop iteration each."""
        recv = self._uv_recv
        if recv is not None:  # a Protocol (from a backlog: the dispatch calls it directly)
            self._recv_stream(recv)
            return
        if self._data_received is not None:
            return  # a Protocol that is not reading now: a stale event
        run = self._ctx_run
        budget = 32  # (a counter: range() costs more than the loop's own tests)
        while budget:
            budget -= 1
            if not self._read_into or not self._reading_started or self._paused or self._closing:
                return  # reading stopped (maybe earlier in this iteration: a stale event)
            if self._data_received is not None:  # buffer_updated() set a Protocol
                recv = self._uv_recv
                if recv is not None:
                    self._recv_stream(recv)
                return
            protocol = self._protocol  # buffer_updated() may have set another one
            buf = _NO_BUFFER
            try:
                buf = run(protocol.get_buffer, -1)
                n = _read_into(self._uv, self._slot, buf)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:  # its exception, or no writable contiguous buffer
                self._read_into_failed(exc, buf)
                return
            if n <= 0:
                if n != _UV_EAGAIN:
                    self._uv_recv_ended(n)
                return
            # Whether the read filled the buffer, asked before buffer_updated(): that may
            # release or close the buffer (a memoryview, an mmap), whose len() then fails.
            try:
                filled = n == len(buf)  # (len() counts items: an int array just reads once)
            except TypeError:  # a buffer without a len(): read again next iteration
                filled = False
            try:
                run(protocol.buffer_updated, n)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")
                return
            if not filled:
                return

    def _read_into_failed(self, exc: BaseException, buf: Any) -> None:
        """get_buffer() raised, or the read into what it returned failed: the fatal error
        asyncio reports for each.  Its empty buffer counts as get_buffer()'s fault; a
        buffer the read cannot write is recv_into()'s TypeError there."""
        if buf is _NO_BUFFER or isinstance(exc, RuntimeError):
            self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
            return
        if isinstance(exc, TypeError):
            # asyncio takes len() of what get_buffer() returned, in the same try: no len()
            # (None, say) is get_buffer()'s failure there, with len()'s TypeError.
            try:
                len(buf)
            except TypeError as no_len:
                self._fatal_error(no_len, "Fatal error: protocol.get_buffer() call failed.")
                return
        if isinstance(exc, BufferError):
            error = TypeError(
                f"a read-write bytes-like object is required, not {type(buf).__name__!r}")
            error.__cause__ = exc
            exc = error
        self._fatal_error(exc, f"Fatal read error on {self._kind} transport")

    def _recv_stream(self, recv: Callable[[bytes], object]) -> None:
        """Read-into mode for a Protocol: each read into the loop's receive buffer goes to
        ``recv`` (_uv_recv: data_received in the transport's context) as bytes; again while
        reads fill the buffer and the protocol still reads.  The accelerator's dispatch
        does the same in C."""
        uv = self._uv
        slot = self._slot
        ptr, received = owners.recv_buffer(self._loop)
        budget = 32
        while budget:
            budget -= 1
            n = _uvc_stream_recv(uv, slot)
            if n <= 0:
                if n != _UV_EAGAIN:
                    self._uv_recv_ended(n)
                return
            try:
                recv(received[:n] if n < _BIG_READ else _buffer(ptr, n)[:])
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
                return
            if n != _RECV_MAX:
                return
            recv = self._uv_recv  # type: ignore[assignment]  # (None: see below)
            if recv is None:
                return

    def _uv_recv_ended(self, n: int) -> None:
        """A read in read-into mode found EOF (n = 0) or an error: libuv does not stop
        reading in this mode by itself."""
        self._read_stop()
        self._read_event(EV_EOF if n == 0 else EV_READ_ERROR, n)

    def _uv_read_at(self, off: int, total: int) -> None:
        """A read still in the loop's arena for an owner without _uv_read: the TLS link's,
        or a BufferedProtocol's read made before set_protocol() switched to it (it reads in
        read-into mode after that).  One copy, into the protocol's buffer."""
        feed = self._feed_at
        if feed is not None:  # the TLS link (see set_protocol)
            feed(off, total)
            return
        protocol = self._protocol
        run = self._ctx_run
        try:
            buf = run(protocol.get_buffer, total)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
            return
        loop = self._loop
        try:
            if _arena_copy is not None:  # the accelerator: a buffer view and a C copy
                fits = _arena_copy(self._uv, off, total, buf)
            elif _COPY_WITH_MEMMOVE or total >= _C_COPY_MIN:
                dst = _from_buffer(buf, require_writable=True)  # its len() counts bytes
                fits = len(dst) >= total
                if fits:
                    _uvc_arena_copy(self._uv, off, dst, total)
            else:
                fits = len(buf) >= total
                if fits:  # a bytearray or a byte memoryview (else TypeError/ValueError)
                    buf[:total] = owners.arena_view(loop)[off:off + total]
        except (TypeError, ValueError, BufferError):
            fits = False  # another kind of buffer: copied through a byte view below
        if not fits:
            self._deliver_buffered_in_parts(owners.arena(loop)[off:off + total], buf)
            return
        self._buffer_updated(total)

    def _buffer_updated(self, n: int) -> bool:
        """protocol.buffer_updated(n) in the transport's context; False when it failed
        (the transport then fails too).  _uv_readable makes the same call inline."""
        try:
            self._ctx_run(self._protocol.buffer_updated, n)
            return True
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")
            return False

    def _deliver_buffered_in_parts(self, data: bytes, buf: Any) -> None:
        """A buffer smaller than the read (or not a plain byte buffer): fill buffers
        piecewise, as long as the protocol keeps reading."""
        protocol = self._protocol
        run = self._ctx_run
        view = memoryview(data)
        total = len(view)
        pos = 0
        while pos < total:
            try:
                if buf is None:
                    buf = run(protocol.get_buffer, total - pos)
                target = memoryview(buf).cast("B")
                buf = None
                n = len(target)
                if not n:
                    raise RuntimeError("get_buffer() returned an empty buffer")
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
                return
            if n > total - pos:
                n = total - pos
            try:
                if _COPY_WITH_MEMMOVE:
                    _memmove(target, view[pos:pos + n], n)
                else:
                    target[:n] = view[pos:pos + n]
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
                return
            pos += n
            if not self._buffer_updated(n):
                return
            if self._closing:
                return
            if self._paused and pos < total:
                # paused in the middle of this read: keep the rest for resume_reading()
                self._hold(data[pos:], first=True)
                return

    def _hold_read(self, data: bytes) -> None:
        self._hold(data)

    def _drop_read(self, data: bytes) -> None:
        pass

    def _hold(self, item: bytes | tuple[int, int], first: bool = False) -> None:
        if self._held is None:
            self._held = []
        if first:
            self._held.insert(0, item)
        else:
            self._held.append(item)

    def _deliver_held(self) -> None:
        self._held_scheduled = False
        held = self._held
        while held and not self._paused and not self._closing:
            item = held.pop(0)
            if type(item) is tuple:
                self._read_event(*item)
            elif self._data_received is not None:
                self._deliver_data(item)
            else:
                self._deliver(item)
        if not held:
            self._held = None
        if not self._paused and not self._closing and self._held is None:
            self._read_start()

    def _uv_event(self, kind: int, a: int, b: int, c: int) -> None:
        if kind == EV_WRITE_DONE:
            self._write_done(a, b)
        elif kind == EV_WRITE_QUEUED:
            self._count_held()
        elif kind == EV_EOF or kind == EV_READ_ERROR:
            if self._closing:
                return
            if self._paused:
                self._hold((kind, a))
            else:
                self._read_event(kind, a)
        elif kind == EV_READABLE:  # from a backlog (the dispatch calls _uv_readable)
            self._uv_readable()
        elif kind == EV_FD_LOST:
            # os.close() on this transport's fd (csrc/uvc_fdguard.h): libuv lets go of the
            # handle, and whatever was pending (reads held while paused, queued writes, a
            # close waiting for them) can never finish.
            self._reading_started = False
            self._uv_recv = None
            # (EBADF: closed, or its number reused; another error, such as EPERM for a
            # file epoll cannot watch, is the kernel's refusal to watch it at all)
            why = "was closed under the loop" if a == _UV_EBADF else "cannot be watched"
            self._fatal_error(uv_error(a), f"Fatal error on {self._kind} transport: its fd {why}")
        elif kind == EV_SHUTDOWN:
            # write_eof()'s shutdown(SHUT_WR) failed (ENOTCONN: the peer reset the
            # connection).  asyncio's write_eof() raises that OSError; libuv learns it later,
            # so, as uvloop, it is a fatal error: connection_lost(exc).  Ignored, nothing
            # else ever told a protocol that reads no more (paused, or past EOF): it hung.
            if a < 0 and a != _UV_ECANCELED and not self._conn_lost:
                self._fatal_error(uv_error(a), f"Fatal error on {self._kind} transport")

    def _read_event(self, kind: int, err: int) -> None:
        # libuv stops reading at EOF and on a read error by itself.
        self._reading_started = False
        self._uv_recv = None
        if kind == EV_EOF:
            self._eof_seen = True
            self._on_eof()
        else:
            self._fatal_error(uv_error(err), f"Fatal read error on {self._kind} transport")

    def _on_eof(self) -> None:
        if self._loop.get_debug():
            logger.debug("%r received EOF", self)
        try:
            keep_open = self._ctx_run(self._protocol.eof_received)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if not keep_open:
            self.close()

    def pause_reading(self) -> None:
        """Pause the receiving end: no data_received() until resume_reading().
        Reads that already arrived are held and delivered after resume_reading()."""
        if not self.is_reading():
            return
        self._paused = True
        self._route_reads()
        self._read_stop()
        if self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self) -> None:
        """Resume the receiving end: data held while paused is delivered first."""
        if self._closing or not self._paused:
            return
        self._paused = False
        self._route_reads()
        if self._held:
            # Deliver the held reads from the loop, in order, before reading more.
            if not self._held_scheduled:
                self._held_scheduled = True
                # Not in self._context: _deliver_held enters it for each delivery itself.
                self._loop.call_soon(self._deliver_held)
        else:
            self._read_start()
        if self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    def is_reading(self) -> bool:
        """True if the transport is receiving (not paused, not closing)."""
        return not self._paused and not self._closing

    # ------------------------------------------------------------------ writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write bytes-like ``data`` without blocking: what the fd does not take at once is
        buffered (in C) and sent in the background.  TypeError for other types;
        RuntimeError after write_eof() or during sendfile."""
        if type(data) is not bytes and type(data) is not _WRITTEN_AS_IS:
            data = _write_data(data)
        n = len(data)
        if self._write_blocked and self._write_refused(n):
            return
        if not n:
            return
        # While the loop runs, this may only hold the bytes until the iteration ends (see
        # uvc_write in csrc/uvc_stream.h): they count as written here and the C core keeps
        # their number, which get_write_buffer_size() adds.
        sent = _uvc_write(self._uv, self._slot, data, n)
        if sent != n:
            self._write_partial(n, sent)

    def _write_refused(self, n: int) -> bool:
        """The uncommon write states, for a write of ``n`` bytes; True when the write is
        dropped (raises for errors)."""
        if self._eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._empty_waiter is not None:
            raise RuntimeError("unable to write; sendfile is in progress")
        if self._loop is None or self._uv is None:
            raise RuntimeError("Event loop is closed")
        if self._conn_lost and n:  # an empty write is no lost data (nor is it on asyncio)
            self._count_lost_write()
            return True
        return False

    def _write_partial(self, n: int, sent: int) -> None:
        if sent < 0:
            self._fatal_error(uv_error(sent), f"Fatal write error on {self._kind} transport")
            return
        self._pending += n - sent
        # A write that could not be held sends the held bytes before its own, and what of
        # them the fd did not take is queued too: counted from here on.
        self._count_held()

    def _count_held(self) -> None:
        """Send what the C core holds for this stream, and count what it had to queue
        (of this or of earlier flushes) in ``_pending``, which its UVC_EV_WRITE_DONE lowers.
        Called before anything that needs every byte written so far to be in ``_pending``
        (close, write_eof, sendfile, new water marks)."""
        if self._handle_closed or self._uv is None:
            return
        queued = _uvc_stream_flush(self._uv, self._slot)
        if queued < 0:
            self._fatal_error(uv_error(queued), f"Fatal write error on {self._kind} transport")
            return
        self._pending += queued
        if self._pending > self._high_water:
            self._maybe_pause_protocol()

    def get_write_buffer_size(self) -> int:
        """Bytes given to write() and not handed to the kernel yet (held ones included)."""
        if self._handle_closed or self._uv is None:
            return self._pending
        return self._pending + _uvc_stream_held(self._uv, self._slot)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the marks: pause_writing() above ``high``, resume_writing() at or below
        ``low``.  Defaults as asyncio: high 64 KiB (or 4 * low), low = high // 4;
        ValueError unless high >= low >= 0."""
        high_water, low_water = water_marks(high, low)  # (raises before anything changes)
        self._count_held()
        TransportBase.set_write_buffer_limits(self, high_water, low_water)
        if not self._handle_closed and self._uv is not None:
            # Held bytes never exceed the high-water mark, so they never call for a pause.
            # asyncio takes any number for the marks (a float, a huge int): the C core's
            # int64 limit gets it rounded down and capped (passed as is, it raised
            # TypeError/OverflowError after the marks had already changed).
            lib.uvc_stream_hold_limit(self._uv, self._slot, int(min(self._high_water, 1 << 62)))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write an iterable of bytes-like objects as one write of their concatenation."""
        self.write(b"".join(list_of_data))

    def _write_done(self, status: int, nbytes: int) -> None:
        if self._conn_lost:
            return  # cancelled by the close, or a late completion: nothing to account
        self._pending -= nbytes
        if status < 0:
            exc = uv_error(status)
            if self._empty_waiter is not None:
                self._empty_waiter.set_exception(exc)
            self._fatal_error(exc, f"Fatal write error on {self._kind} transport")
            return
        if self._protocol_paused and self._pending <= self._low_water:
            self._maybe_resume_protocol()
            if self._conn_lost:
                # resume_writing() called close() with nothing left to send, or abort(),
                # or a write of its failed: connection_lost() is already scheduled.
                return
        if self._pending == 0:
            if self._empty_waiter is not None and not self._empty_waiter.done():
                self._empty_waiter.set_result(None)
            if self._closing:
                # Now, as asyncio's _write_ready does, not call_soon(): a task that the
                # resume_writing() above woke must find the connection lost, not write on
                # into a closed transport (uvicorn streamed the rest of a response to a
                # client that half-closed, each write logging "socket.send() raised
                # exception.", and took it for sent).
                self._conn_lost += 1
                self._block_writes()
                self._ctx_run(self._call_connection_lost, None)

    def can_write_eof(self) -> bool:
        """True: a stream can be half-closed."""
        return True

    def write_eof(self) -> None:
        """Close the write end after the buffered data is sent; reading goes on."""
        if self._closing or self._eof_written:
            return
        self._count_held()
        if self._closing:
            return  # sending the held bytes failed: the connection is lost
        self._eof_written = True
        self._block_writes()
        if self._handle_closed:
            return
        # uv_shutdown waits for the queued writes itself.
        lib.uvc_shutdown(self._uv, self._slot)

    def _block_writes(self) -> None:
        self._write_blocked = True

    def _make_empty_waiter(self) -> asyncio.Future[None]:
        if self._empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        self._count_held()
        self._empty_waiter = self._loop.create_future()
        self._write_blocked = True
        if self._pending == 0:
            self._empty_waiter.set_result(None)
        return self._empty_waiter

    def _sendfile_lost_waiter(self) -> asyncio.Future[None]:
        """After _make_empty_waiter()'s wait, for a native sendfile that writes on the
        transport's socket itself: a future that losing the connection (close(), abort(),
        a fatal error) fails, so the transfer stops waiting for the socket and ends."""
        self._empty_waiter = self._loop.create_future()
        return self._empty_waiter

    def _reset_empty_waiter(self) -> None:
        self._empty_waiter = None
        self._write_blocked = bool(self._eof_written or self._conn_lost or self._uv is None)

    # ------------------------------------------------------------------ closing

    def is_closing(self) -> bool:
        """True once close() or abort() was called, or the connection was lost."""
        return self._closing

    def close(self) -> None:
        """Close the transport: stop reading, send what is buffered, then call the
        protocol's connection_lost(None)."""
        if self._closing:
            return
        self._count_held()
        if self._closing:
            return  # sending the held bytes failed: the connection is lost
        self._closing = True
        self._route_reads()
        self._read_stop()
        if self._pending == 0:
            self._conn_lost += 1
            self._block_writes()
            self._loop.call_soon(self._call_connection_lost, None, context=self._context)

    def abort(self) -> None:
        """Close the transport at once: buffered data is lost; connection_lost(None)."""
        self._force_close(None)

    def _stop_reading_for_close(self) -> None:
        self._route_reads()
        self._read_stop()

    def _drop_pending(self) -> None:
        self._pending = 0
        if not self._handle_closed and self._uv is not None:
            lib.uvc_stream_drop_held(self._uv, self._slot)
        self._block_writes()

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        if self._empty_waiter is not None and not self._empty_waiter.done():
            self._empty_waiter.set_exception(ConnectionError("Connection is closed by peer"))
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            self._close_handle()
            # Nothing of the protocol stays referenced (its bound methods included): the
            # slot lives until libuv's close callback, and a protocol that holds its own
            # transport (TLS's link does) is freed at once, by reference counting.
            self._protocol = None
            self._data_received = None
            self._deliver = None  # type: ignore[assignment]  # (never called after this)
            self._feed_at = None
            self._held = None
            server = self._server
            if server is not None:
                self._server = None
                server._detach(self)

    def _close_handle(self) -> None:
        if self._handle_closed:
            return
        self._handle_closed = True
        self._released = True
        self._reading_started = False
        self._uv_recv = None
        try:
            self._release_resource()  # may raise: a pipe whose fd the user closed (EBADF)
        finally:
            # libuv's handle (and its duplicate of the fd) goes whatever Python's object
            # did: skipping this left both open until the loop closed.
            owners.close_slot(self._loop, self._slot)

    def _release_resource(self) -> None:
        """Drop Python's hold on the fd before libuv closes it (subclasses)."""

    def _uv_closed(self) -> None:
        # libuv freed the handle (its CLOSED event): nothing of the slot is left.
        self._handle_closed = True

    def _detach_from_loop(self) -> None:
        """The loop is closing with this transport open: libuv will close the fd."""
        if self._handle_closed:
            return
        self._release_resource()
        self._handle_closed = True
        self._uv = None
        self._block_writes()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if not getattr(self, "_released", True):
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._release_resource()

    # ------------------------------------------------------------------ extra info

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Optional transport information: asyncio's names (see the subclasses)."""
        if name in self._extra:
            return self._extra[name]
        value = self._get_extra_lazy(name)
        return default if value is None else value

    def _get_extra_lazy(self, name: str) -> Any:
        return None

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._handle_closed:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"slot={self._slot}")
        if not self._handle_closed:
            info.append("read=polling" if self._reading_started else "read=idle")
            size = self.get_write_buffer_size()
            info.append(f"write=<{'polling' if size else 'idle'}, bufsize={size}>")
        return "<{}>".format(" ".join(info))


_PEER_MAX = 28  # sizeof(struct sockaddr_in6): what uvc_stream_peer() keeps at most


def _inet_address(raw: bytes) -> Any:
    """A struct sockaddr_in/_in6 as socket.getpeername() returns it."""
    family = int.from_bytes(raw[:2], sys.byteorder)
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET:
        return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
    if family == socket.AF_INET6:
        host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        flowinfo = int.from_bytes(raw[4:8], "big")
        scope_id = int.from_bytes(raw[24:28], sys.byteorder)
        if scope_id:
            # getpeername() names the scope as getnameinfo() does: 'fe80::1%eth0'.
            host = socket.getnameinfo((host, port, flowinfo, scope_id),
                                      socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)[0]
        return (host, port, flowinfo, scope_id)
    return None


if _accelerated.accel is not None:
    # On CPython, write() of bytes is done in C while writes are not blocked (see
    # StreamWrite in csrc/cpython/accel.c); the Python write() above does the rest.  And
    # is_closing(), which StreamWriter.drain() asks on each write, reads its slot in C.
    _accel = _accelerated.accel
    setattr(StreamTransportBase, "write",  # noqa: B010  (mypy: no assigning to a method)
            _accel.StreamWrite(StreamTransportBase.write, StreamTransportBase))
    setattr(StreamTransportBase, "is_closing",  # noqa: B010
            _accel.SlotMethod(StreamTransportBase.is_closing, StreamTransportBase, "_closing"))


class SocketTransport(StreamTransportBase, asyncio.Transport):
    """An asyncio.Transport over a connected TCP or Unix stream socket in a libuv slot.

    ``sock`` is the Python socket object when one exists (create_connection, sock=...);
    for accepted connections it is made on demand for get_extra_info('socket').
    """

    _kind = "socket"
    _sock_held = False  # a close() of the socket object waits for this transport's release

    def __init__(self, loop: AbstractEventLoop, slot: int, fd: int, protocol: BaseProtocol, *,
                 sock: socket.socket | None = None, context: contextvars.Context | None = None,
                 extra: dict[str, Any] | None = None, server: Server | None = None,
                 waiter: asyncio.Future[Any] | None = None) -> None:
        self._sock = sock
        self._fd = fd
        # Accepted here (no socket object): the C core kept the peer address accept4 gave.
        self._peer_pending = sock is None
        if sock is not None:
            # The caller may still close its socket object: that must not close the fd
            # libuv reads and writes (transports/_sockref.py).
            self._sock_held = _sockref.hold(sock)
            # As asyncio: known from the start, still answered after the close.  Accepted
            # connections (no socket object yet) look them up on first use instead, which
            # saves two system calls per connection: sockname while the fd is open,
            # connection_lost() included; peername from the address accept4 gave (kept by
            # the C core), which outlives a reset (getpeername() then fails) and the close,
            # as asyncio's does.
            extra = {} if extra is None else extra
            extra["socket"] = trsock.TransportSocket(sock)
            for name, query in (("sockname", sock.getsockname), ("peername", sock.getpeername)):
                if name not in extra:
                    try:
                        extra[name] = query()
                    except OSError:
                        extra[name] = None
        StreamTransportBase.__init__(self, loop, slot, protocol, context=context, extra=extra,
                                     server=server, waiter=waiter)
        owners.claim_fd(loop, fd, self)

    def _socket(self) -> socket.socket | None:
        sock = self._sock
        if sock is None and not self._handle_closed:
            # The fd stays libuv's: _release_resource() detaches this object before close.
            sock = self._sock = socket.socket(fileno=self._fd)
            # PyPy's socket(fileno=) applies the default timeout (None: blocking) to the
            # fd itself, clearing the O_NONBLOCK libuv relies on: a later write that fills
            # the socket buffer (sendfile's os.sendfile, say) then blocked the whole loop.
            # asyncio's transport sockets are non-blocking (timeout 0.0) too.
            sock.setblocking(False)
            self._sock_held = _sockref.hold(sock)
        return sock

    def _get_extra_lazy(self, name: str) -> Any:
        value: Any
        if name == "socket":
            sock = self._socket()
            if sock is None:
                return None
            value = trsock.TransportSocket(sock)
        elif name == "sockname" or name == "peername":
            value = self._accepted_peer() if name == "peername" else None
            if value is not None:
                self._extra[name] = value
                return value
            sock = self._socket()
            if sock is None:
                return None
            try:
                value = sock.getsockname() if name == "sockname" else sock.getpeername()
            except OSError:
                return None
        else:
            return None
        self._extra[name] = value
        return value

    def _on_eof(self) -> None:
        # Data followed by a reset: libuv reads the data and, seeing POLLHUP after that
        # partial read, reports EOF without reading again; the reset is left pending.
        # asyncio's next recv() would raise it, so it is a read error here too.  Whether
        # that recv() raises is the kernel's to say, so ask it the same way: a peek.  A
        # FIN that came before the reset makes recv() return b"" whatever the pending
        # error is (TCP marks the stream done at the FIN), so the EOF stands then: the
        # peer's FIN then a reset answering a write of ours (filed as EPIPE), or a reset
        # after our own write_eof() too (filed as ECONNRESET: SO_ERROR alone, which this
        # used to read, made that an error where asyncio sees EOF).  An AF_UNIX socket
        # reports a pending reset before its EOF, to the peek as to asyncio's recv().
        sock = self._socket()
        if sock is not None:
            try:
                sock.recv(1, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                self._fatal_error(exc, f"Fatal read error on {self._kind} transport")
                return
        StreamTransportBase._on_eof(self)

    def _accepted_peer(self) -> Any:
        """The peer address accept4 gave this accepted TCP connection, else None."""
        uv = self._uv
        if not self._peer_pending or uv is None:
            return None
        buf = ffi.new("char[]", _PEER_MAX)
        n = lib.uvc_stream_peer(uv, self._slot, buf, _PEER_MAX)
        return _inet_address(ffi.buffer(buf, n)[:]) if n > 0 else None

    def _uv_closed(self) -> None:
        self._peer_pending = False  # the slot is free: it may be another stream's soon
        StreamTransportBase._uv_closed(self)

    def _release_resource(self) -> None:
        # The slot goes after this: keep the peer's address for get_extra_info() after the
        # close (aiohttp logs a request the client reset with it), as asyncio has it.
        if self._peer_pending and "peername" not in self._extra:
            peer = self._accepted_peer()
            if peer is not None:
                self._extra["peername"] = peer
        self._peer_pending = False
        owners.release_fd(self._loop, self._fd, self)
        sock = self._sock
        if sock is not None and sock.fileno() >= 0:
            sock.detach()   # libuv closes the fd
            sock.close()    # marks the Python object closed
        if self._sock_held:
            self._sock_held = False
            _sockref.release(sock)

    def __repr__(self) -> str:
        r = StreamTransportBase.__repr__(self)
        return r[:-1] + f" fd={self._fd}>"
