"""Pipe transports: connect_read_pipe() and connect_write_pipe() on libuv pipe handles.

A pipe transport works on a pipe, FIFO, socket or character device (pty) fd, as asyncio's
unix pipe transports do.  libuv gets its own duplicate of the fd (uv_pipe_open takes
ownership and closes it with the handle), so the pipe object the caller passed stays theirs
to close: the transport closes it in connection_lost, as asyncio does.

Reads land in the loop's arena and arrive as ``_uv_read(bytes)``; writes go through
``uvc_write`` (write now what the fd takes, queue the rest in C), so the write buffer size is
exactly the bytes libuv still holds.
"""
import contextvars
import errno
import logging
import os
import stat
import warnings

import asyncio

from uvcffi._errors import uv_error
from uvcffi._uv import ffi, lib

logger = logging.getLogger("asyncio")

# As asyncio: after this many writes to a lost pipe, each one logs a warning.
LOG_THRESHOLD_FOR_CONNLOST_WRITES = 5


def _set_result_unless_cancelled(fut, result):
    if not fut.cancelled():
        fut.set_result(result)


def _open_uv_pipe(loop, fd):
    """A libuv pipe slot over a duplicate of ``fd``; the caller registers it."""
    dup = os.dup(fd)
    try:
        slot = lib.uvc_pipe_new(loop._uv, 0)
        if slot < 0:
            raise uv_error(slot)
    except BaseException:
        os.close(dup)
        raise
    err = lib.uvc_stream_open(loop._uv, slot, dup)
    if err < 0:
        os.close(dup)
        lib.uvc_close(loop._uv, slot)
        raise uv_error(err)
    return slot


class _PipeTransportBase:
    """What both pipe directions share: the slot, the pipe object, the protocol's context,
    close bookkeeping and the repr.  Subclasses set ``_slot`` and call ``_setup``."""

    _pipe = None
    _slot = None

    def _setup(self, loop, pipe, protocol):
        self._closing = False
        self._loop = loop
        self._fileno = pipe.fileno()
        self._protocol = protocol
        self._pipe = pipe  # only now: __del__ warns about an open pipe
        # Protocol callbacks run in the context the transport was created in.
        self._context = contextvars.copy_context()

    def _check_mode(self, allowed, message):
        """Return the fd's mode; ValueError(message) unless one of ``allowed`` accepts it."""
        try:
            mode = os.fstat(self._fileno).st_mode
        except OSError:
            self._pipe = None
            raise
        if not any(test(mode) for test in allowed):
            self._pipe = None
            self._fileno = None
            self._protocol = None
            raise ValueError(message)
        return mode

    def _attach(self):
        os.set_blocking(self._fileno, False)
        self._slot = _open_uv_pipe(self._loop, self._fileno)
        self._loop._slot_register(self._slot, self)
        self._loop._fd_transports[self._fileno] = self

    def _call_soon(self, callback, *args):
        self._loop.call_soon(callback, *args, context=self._context)

    def _schedule_connection_lost(self, exc):
        if self._loop.is_closed():
            # No callback can run any more (a transport closed from __del__ after its
            # loop): just let go of the pipe.
            if self._pipe is not None:
                self._pipe.close()
            self._pipe = None
            return
        self._call_soon(self._call_connection_lost, exc)

    def _state_words(self):
        return []

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._pipe is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._fileno}")
        if self._pipe is not None:
            info.append("open")
            info.extend(self._state_words())
        return "<{}>".format(" ".join(info))

    def set_protocol(self, protocol):
        """Use ``protocol`` for the callbacks from now on."""
        self._protocol = protocol

    def get_protocol(self):
        """Return the current protocol."""
        return self._protocol

    def is_closing(self):
        """True once the transport is closing or closed."""
        return self._closing

    def _release_slot(self):
        slot, self._slot = self._slot, None
        if slot is not None:
            self._loop._uv_close(slot)

    def _uv_closed(self):
        self._slot = None

    def _call_connection_lost(self, exc):
        try:
            self._protocol.connection_lost(exc)
        finally:
            if self._pipe is not None:
                self._pipe.close()
            self._pipe = None
            self._protocol = None
            self._loop = None

    def __del__(self, _warn=warnings.warn):
        if self._pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._pipe.close()


class ReadPipeTransport(_PipeTransportBase, asyncio.ReadTransport):
    """The read end of a pipe, FIFO, socket or pty as an asyncio.ReadTransport."""

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        asyncio.ReadTransport.__init__(self, extra)
        self._extra["pipe"] = pipe
        self._setup(loop, pipe, protocol)
        self._paused = False
        # Reads and EOF that arrived in the same libuv batch after pause_reading(): kept
        # for resume_reading(), never dropped.
        self._held = []
        self._held_eof = False
        self._check_mode(
            (stat.S_ISFIFO, stat.S_ISSOCK, stat.S_ISCHR),
            "Pipe transport is for pipes/sockets only.",
        )
        self._attach()
        self._call_soon(self._protocol.connection_made, self)
        # Only after connection_made has run: no data_received before it.
        self._call_soon(self._start_reading)
        if waiter is not None:
            self._call_soon(_set_result_unless_cancelled, waiter, None)

    def _state_words(self):
        return ["paused"] if self._paused else []

    def _start_reading(self):
        if self._closing or self._paused or self._slot is None:
            return
        err = lib.uvc_read_start(self._loop._uv, self._slot)
        if err < 0:
            self._fatal_error(uv_error(err), "Fatal read error on pipe transport")

    # ---- events from the loop (run outside any protocol context)

    def _uv_read(self, data):
        if self._closing:
            return
        if self._paused:
            self._held.append(data)
            return
        try:
            self._context.run(self._protocol.data_received, data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")

    def _uv_event(self, kind, a, b, c):
        if self._closing:
            return
        if kind == lib.UVC_EV_EOF:
            if self._paused:
                self._held_eof = True
                return
            self._eof()
        elif kind == lib.UVC_EV_READ_ERROR:
            self._fatal_error(uv_error(a), "Fatal read error on pipe transport")

    def _eof(self):
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        self._closing = True
        self._release_slot()
        self._call_soon(self._protocol.eof_received)
        self._schedule_connection_lost(None)

    # ---- public API

    def is_reading(self):
        """True while the transport is receiving data (not paused, not closing)."""
        return not self._paused and not self._closing

    def pause_reading(self):
        """Stop calling data_received() until resume_reading(); no-op when paused or
        closing."""
        if self._closing or self._paused:
            return
        self._paused = True
        if self._slot is not None:
            lib.uvc_read_stop(self._loop._uv, self._slot)
        if self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self):
        """Resume data_received() calls after pause_reading(); no-op when not paused or
        closing."""
        if self._closing or not self._paused:
            return
        self._paused = False
        if self._held or self._held_eof:
            self._call_soon(self._deliver_held)
        else:
            self._start_reading()
        if self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    def _deliver_held(self):
        # Runs in the protocol's context already (a callback of the transport).
        while self._held and not self._paused and not self._closing:
            data = self._held.pop(0)
            try:
                self._protocol.data_received(data)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
                return
        if self._paused or self._closing:
            return
        if self._held_eof:
            self._held_eof = False
            self._eof()
        else:
            self._start_reading()

    def close(self):
        """Close the transport: stop reading, then connection_lost(None) is called soon
        and the pipe object is closed."""
        if not self._closing:
            self._close(None)

    def _fatal_error(self, exc, message="Fatal error on pipe transport"):
        # EIO is what a pty's master reads once the other side is gone: not an error.
        if isinstance(exc, OSError) and exc.errno == errno.EIO:
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._close(exc)

    def _close(self, exc):
        self._closing = True
        self._held.clear()
        self._held_eof = False
        self._release_slot()
        self._schedule_connection_lost(exc)


class WritePipeTransport(_PipeTransportBase, asyncio.WriteTransport):
    """The write end of a pipe, FIFO, socket or pty as an asyncio.WriteTransport."""

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        asyncio.WriteTransport.__init__(self, extra)
        self._extra["pipe"] = pipe
        self._setup(loop, pipe, protocol)
        self._buffer_size = 0  # bytes libuv still holds for this pipe
        self._conn_lost = 0
        self._protocol_paused = False
        self._high_water = 64 * 1024
        self._low_water = self._high_water // 4
        self._hangup_slot = None
        mode = self._check_mode(
            (stat.S_ISFIFO, stat.S_ISSOCK, stat.S_ISCHR),
            "Pipe transport is only for pipes, sockets and character devices",
        )
        self._attach()
        self._call_soon(self._protocol.connection_made, self)
        # The reader going away is seen on the write end as readable (a socket's EOF) or
        # as POLLERR/POLLHUP (a pipe whose last reader closed): watch for it, so the
        # protocol learns of it at once rather than on its next write.  A pty gives no
        # such signal (asyncio does not watch it either).
        if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
            self._call_soon(self._watch_hangup)
        if waiter is not None:
            self._call_soon(_set_result_unless_cancelled, waiter, None)

    def _state_words(self):
        return [f"bufsize={self._buffer_size}"]

    def _watch_hangup(self):
        if self._closing or self._loop is None:
            return
        slot = lib.uvc_poll_new(self._loop._uv, self._fileno)
        if slot < 0:
            return  # not pollable: the next write reports the lost reader instead
        self._hangup_slot = slot
        self._loop._slot_register(slot, _HangupWatch(self))
        lib.uvc_poll_set(self._loop._uv, slot, lib.UVC_READABLE)

    def _unwatch_hangup(self):
        slot, self._hangup_slot = self._hangup_slot, None
        if slot is not None:
            self._loop._uv_close(slot)

    def _hangup(self):
        """The read end is gone."""
        if self._closing and self._buffer_size == 0:
            return
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        if self._buffer_size:
            self._close(BrokenPipeError())
        else:
            self._close()

    # ---- events from the loop

    def _uv_read(self, data):  # never reads; present for the slot interface
        pass

    def _uv_event(self, kind, a, b, c):
        if kind != lib.UVC_EV_WRITE_DONE:
            return
        if self._slot is None:
            return  # closed or aborted: the queued writes were cancelled
        self._buffer_size -= b
        if a < 0:
            self._conn_lost += 1
            self._buffer_size = 0
            self._fatal_error(uv_error(a), "Fatal write error on pipe transport")
            return
        if self._buffer_size == 0:
            self._maybe_resume_protocol()
            if self._closing:
                self._unwatch_hangup()
                self._release_slot()
                self._context.run(self._call_connection_lost, None)

    # ---- public API

    def get_write_buffer_size(self):
        """The number of bytes written but not yet taken by the pipe."""
        return self._buffer_size

    def get_write_buffer_limits(self):
        """Return (low, high): pause_writing() above high, resume_writing() at low."""
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high=None, low=None):
        """Set the flow-control water marks (high defaults to 64 KiB, low to high // 4)."""
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water = high
        self._low_water = low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self):
        if self._buffer_size <= self._high_water or self._protocol_paused:
            return
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {
                    "message": "protocol.pause_writing() failed",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )

    def _maybe_resume_protocol(self):
        if not self._protocol_paused or self._buffer_size > self._low_water:
            return
        self._protocol_paused = False
        try:
            self._context.run(self._protocol.resume_writing)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {
                    "message": "protocol.resume_writing() failed",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )

    def write(self, data):
        """Write ``data`` (bytes-like) without blocking: what the pipe does not take at
        once is buffered and sent as it drains.  After the pipe is lost, writes are
        dropped (with a warning once there were several)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._conn_lost or self._closing:
            if self._conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("pipe closed by peer or os.write(pipe, data) raised exception.")
            self._conn_lost += 1
            return
        if type(data) is bytes:
            size = len(data)
            if not size:
                return
            n = lib.uvc_write(self._loop._uv, self._slot, data, size)
        else:
            view = memoryview(data)
            if not view.c_contiguous:
                view = memoryview(view.tobytes())
            size = view.nbytes
            if not size:
                return
            n = lib.uvc_write(self._loop._uv, self._slot, ffi.from_buffer(view), size)
        if n < 0:
            self._conn_lost += 1
            self._fatal_error(uv_error(n), "Fatal write error on pipe transport")
            return
        if n < size:
            self._buffer_size += size - n
            self._maybe_pause_protocol()

    def writelines(self, list_of_data):
        """Write an iterable of bytes-like objects, as one write."""
        self.write(b"".join(list_of_data))

    def can_write_eof(self):
        """Pipes support write_eof() (it closes the pipe once the buffer is flushed)."""
        return True

    def write_eof(self):
        """Close the write end once the buffered data is flushed; connection_lost(None)
        follows."""
        if self._closing:
            return
        self._closing = True
        if not self._buffer_size:
            self._unwatch_hangup()
            self._release_slot()
            self._schedule_connection_lost(None)

    def close(self):
        """Close the transport after flushing the buffered data (as write_eof())."""
        if self._pipe is not None and not self._closing:
            self.write_eof()

    def abort(self):
        """Close at once, dropping buffered data; connection_lost(None) follows."""
        self._close(None)

    def _fatal_error(self, exc, message="Fatal error on pipe transport"):
        # An OSError is the pipe's own fate (EPIPE, ...): asyncio only logs it in debug.
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._close(exc)

    def _close(self, exc=None):
        if self._loop is None:
            return
        already = self._closing and self._slot is None
        self._closing = True
        self._buffer_size = 0
        self._unwatch_hangup()
        self._release_slot()
        if not already:
            self._schedule_connection_lost(exc)


class _HangupWatch:
    """Owner of the poll slot that watches a write pipe for its reader going away."""

    __slots__ = ("transport",)

    def __init__(self, transport):
        self.transport = transport

    def _uv_read(self, data):
        pass

    def _uv_event(self, kind, status, events, c):
        transport = self.transport
        if transport is not None and transport._hangup_slot is not None:
            transport._context.run(transport._hangup)

    def _uv_closed(self):
        self.transport = None
