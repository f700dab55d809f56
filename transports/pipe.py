"""Pipe transports: connect_read_pipe() and connect_write_pipe() on libuv pipe handles.

Built on the stream machinery of transports/stream.py (reads held while paused, write
buffering in C with exact accounting, flow control, close-after-flush, abort), with what
asyncio's unix pipe transports do differently from sockets:

- the fd may be a pipe, FIFO, socket or character device (pty); a regular file is refused;
- the reader sees EOF as eof_received() and then connection_lost(None), whatever
  eof_received() returns; EIO (a pty whose other side is gone) is not reported as an error;
- write_eof() closes the pipe once the buffer is flushed (a pipe cannot be half-closed) and
  writes after it, or after close(), are dropped rather than refused;
- the write end is watched for its reader going away (POLLERR/POLLHUP on a pipe, EOF on a
  socket), so connection_lost() comes at once, not on the next write.

libuv gets a duplicate of the fd (uv_pipe_open takes ownership and closes it with the
handle), so the pipe object the caller passed stays a normal file object: the transport
closes it after connection_lost(), as asyncio does.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import warnings
from typing import TYPE_CHECKING, Any, Callable

from .. import _owners as owners
from .._errors import uv_error
from .._signals import leave_if_interrupted
from .._uv import lib
from ._base import LOG_THRESHOLD_FOR_CONNLOST_WRITES
from .stream import StreamTransportBase

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop, BaseProtocol

logger = logging.getLogger("asyncio")


def _open_uv_pipe(loop: AbstractEventLoop, fd: int) -> int:
    """A libuv pipe slot over a duplicate of ``fd``."""
    dup = os.dup(fd)
    slot = lib.uvc_pipe_new(owners.uv(loop), 0)
    if slot < 0:
        os.close(dup)
        raise uv_error(slot)
    err = lib.uvc_stream_open(owners.uv(loop), slot, dup)
    if err < 0:
        os.close(dup)
        lib.uvc_close(owners.uv(loop), slot)
        raise uv_error(err)
    return slot


def _pipe_fd(
    pipe: Any, allowed: tuple[Callable[[int], bool], ...], message: str,
) -> tuple[int, int]:
    """The fd of ``pipe`` and its mode; ValueError(message) unless ``allowed`` accepts it."""
    fileno = pipe.fileno()
    mode = os.fstat(fileno).st_mode
    if not any(test(mode) for test in allowed):
        raise ValueError(message)
    return fileno, mode


class _PipeTransport(StreamTransportBase):
    """What both pipe directions add to the stream machinery."""

    _kind = "pipe"
    _pipe = None
    _detached = False
    _dropped_writes = 0

    def __init__(
        self, loop: AbstractEventLoop, pipe: Any, fileno: int, protocol: BaseProtocol,
        waiter: asyncio.Future[Any] | None, extra: dict[str, Any] | None, reading: bool,
    ) -> None:
        self._fileno = fileno
        os.set_blocking(fileno, False)
        slot = _open_uv_pipe(loop, fileno)
        extra = {} if extra is None else dict(extra)
        extra["pipe"] = pipe
        StreamTransportBase.__init__(
            self, loop, slot, protocol, extra=extra, waiter=waiter, reading=reading
        )
        self._pipe = pipe  # only now: __del__ warns about an open pipe
        owners.claim_fd(loop, fileno, self)

    def __repr__(self) -> str:
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

    def _state_words(self) -> list[str]:
        return []

    def _release_resource(self) -> None:
        # After connection_lost() (or from __del__): the pipe object is closed, as asyncio
        # does.  Not when the loop closes under an open transport: the pipe stays the
        # caller's until the transport is collected (asyncio's behaviour too).
        if self._detached:
            return
        owners.release_fd(self._loop, self._fileno, self)
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.close()

    def _detach_from_loop(self) -> None:
        self._detached = True
        StreamTransportBase._detach_from_loop(self)
        self._detached = False

    def _closed_with_loop(self) -> bool:
        """close()/abort() after the loop was closed under the transport: no callback can
        run any more, so just let go of the pipe."""
        if self._uv is not None:
            return False
        self._closing = True
        self._release_resource()
        return True

    def _write_refused(self, n: int) -> bool:
        # A pipe drops writes after close()/write_eof() or once lost, as asyncio's does;
        # an empty one is dropped before any check, as there.
        if not n:
            return True
        if self._closing or self._conn_lost:
            if self._dropped_writes >= LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("pipe closed by peer or os.write(pipe, data) raised exception.")
            self._dropped_writes += 1
            return True
        return StreamTransportBase._write_refused(self, n)

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if self._pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._pipe.close()
            self._pipe = None


class _NotHere:
    """A method a subclass does not have: getting it raises AttributeError, so hasattr()
    is False, as for a class that never defined it."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        raise AttributeError(
            f"{(owner or type(obj)).__name__!r} object has no attribute {self.name!r}")


class ReadPipeTransport(_PipeTransport, asyncio.ReadTransport):
    """The read end of a pipe, FIFO, socket or pty as an asyncio.ReadTransport."""

    # asyncio's read pipe transport is a ReadTransport only: no write methods at all, so a
    # write() is an AttributeError there, not a write into the read end (a fatal error).
    write = _NotHere()
    writelines = _NotHere()
    write_eof = _NotHere()
    can_write_eof = _NotHere()
    abort = _NotHere()
    get_write_buffer_size = _NotHere()
    get_write_buffer_limits = _NotHere()
    set_write_buffer_limits = _NotHere()

    def __init__(
        self, loop: AbstractEventLoop, pipe: Any, protocol: BaseProtocol,
        waiter: asyncio.Future[Any] | None = None, extra: dict[str, Any] | None = None,
    ) -> None:
        fileno, _ = _pipe_fd(
            pipe, (stat.S_ISFIFO, stat.S_ISSOCK, stat.S_ISCHR),
            "Pipe transport is for pipes/sockets only.",
        )
        _PipeTransport.__init__(self, loop, pipe, fileno, protocol, waiter, extra, True)

    def _state_words(self) -> list[str]:
        return ["paused"] if self._paused else []

    def _on_eof(self) -> None:
        # asyncio: eof_received() and connection_lost(None) follow, whatever the former
        # returns (a read pipe has nothing to keep open).
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        self._loop.call_soon(self._protocol.eof_received, context=self._context)
        self._force_close(None)

    def _fatal_error(
        self, exc: BaseException, message: str = "Fatal error on pipe transport",
    ) -> None:
        # EIO is what a pty's master reads once the other side is gone: not an error.  Other
        # read errors are reported, as asyncio's read pipe does.
        if isinstance(exc, OSError) and exc.errno == errno.EIO:
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=exc)
        else:
            self._report(exc, message)
        self._force_close(exc)
        leave_if_interrupted(exc)

    def close(self) -> None:
        """Stop reading and close: connection_lost(None) is called soon, then the pipe
        object is closed."""
        if not self._closed_with_loop():
            StreamTransportBase.close(self)


class WritePipeTransport(_PipeTransport, asyncio.Transport):
    """The write end of a pipe, FIFO, socket or pty as an asyncio.WriteTransport.

    Also an asyncio.Transport (so an asyncio.ReadTransport), as asyncio's write pipe
    transport is (through its flow-control mixin): code may check isinstance() against
    either.  Its reading methods raise NotImplementedError, as asyncio's do."""

    def __init__(
        self, loop: AbstractEventLoop, pipe: Any, protocol: BaseProtocol,
        waiter: asyncio.Future[Any] | None = None, extra: dict[str, Any] | None = None,
    ) -> None:
        fileno, mode = _pipe_fd(
            pipe, (stat.S_ISFIFO, stat.S_ISSOCK, stat.S_ISCHR),
            "Pipe transport is only for pipes, sockets and character devices",
        )
        # libuv's duplicate, while watched for the reader going away
        self._hangup_fd: int | None = None
        _PipeTransport.__init__(self, loop, pipe, fileno, protocol, waiter, extra, False)
        # A pty gives no sign of its reader going away (asyncio does not watch it either).
        if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
            loop.call_soon(self._watch_hangup, context=self._context)

    def _state_words(self) -> list[str]:
        return [f"bufsize={self.get_write_buffer_size()}"]

    # asyncio.ReadTransport's abstract methods, as asyncio's write pipe transport leaves
    # them: a write pipe has no reading to pause or resume.
    def pause_reading(self) -> None:
        """Not supported: NotImplementedError."""
        raise NotImplementedError

    def resume_reading(self) -> None:
        """Not supported: NotImplementedError."""
        raise NotImplementedError

    def is_reading(self) -> bool:
        """Not supported: NotImplementedError."""
        raise NotImplementedError

    def set_protocol(self, protocol: BaseProtocol) -> None:
        """Use ``protocol`` from now on (a BaseProtocol: a write pipe never reads)."""
        self._protocol = protocol
        self._protocol_connected = True
        self._data_received = None
        self._deliver = self._drop_read
        self._route_reads()

    def _watch_hangup(self) -> None:
        if self._closing or self._handle_closed:
            return
        # Readable when a socket's peer closed, EPOLLERR/EPOLLHUP when a pipe's last reader
        # closed.  Watched on libuv's duplicate of the fd, through the loop's fd set: the
        # caller may close its own fd at any time.
        fd = lib.uvc_fileno(self._uv, self._slot)
        if fd < 0:
            return
        try:
            owners.watch_fd(self._loop, fd, "reader", self._hangup_ready, ())
        except OSError:
            return  # not pollable: the next write reports the lost reader instead
        self._hangup_fd = fd

    def _unwatch_hangup(self) -> None:
        fd, self._hangup_fd = self._hangup_fd, None
        if fd is not None:
            owners.unwatch_fd(self._loop, fd, "reader")

    def _hangup_ready(self) -> None:
        if self._hangup_fd is not None:
            self._ctx_run(self._hangup)

    def _hangup(self) -> None:
        """The read end is gone: connection_lost(BrokenPipeError) if data was still
        buffered, else connection_lost(None), as asyncio does."""
        self._unwatch_hangup()
        if self._conn_lost:
            return
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        self._force_close(BrokenPipeError() if self.get_write_buffer_size() else None)

    def _force_close(self, exc: BaseException | None) -> None:
        self._unwatch_hangup()
        StreamTransportBase._force_close(self, exc)

    def _release_resource(self) -> None:
        self._unwatch_hangup()
        _PipeTransport._release_resource(self)

    def can_write_eof(self) -> bool:
        """True: write_eof() closes the pipe once the buffer is flushed."""
        return True

    def write_eof(self) -> None:
        """Close the pipe once the buffered data is written (a pipe cannot be half-closed):
        connection_lost(None) follows.  Later writes are dropped."""
        self.close()

    def close(self) -> None:
        """Close after flushing the buffered data; connection_lost(None) follows."""
        if self._closing or self._closed_with_loop():
            return
        self._block_writes()
        StreamTransportBase.close(self)

    def abort(self) -> None:
        """Close at once, dropping buffered data; connection_lost(None) follows."""
        if self._closed_with_loop():
            return
        self._block_writes()
        StreamTransportBase.abort(self)
