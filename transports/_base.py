"""What the stream, pipe and datagram transports share.

Write flow control with asyncio's water marks, the report of a fatal error and the close
that follows it, and the warning about writes to a lost connection: asyncio's
``_FlowControlMixin`` and ``_SelectorTransport`` parts, written once here.  Each kind says
only what differs: how it stops reading when it closes (``_stop_reading_for_close``), what
its buffered data is and how it drops it (``_pending``, ``_drop_pending``), and its
``_call_connection_lost``.
"""
from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any, Callable

from .._signals import leave_if_interrupted
from ._context import notify_protocol
from ._flow import water_marks

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop
    from contextvars import Context

logger = logging.getLogger("asyncio")

# asyncio.constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES: after this many writes to a lost
# connection, each further write logs a warning.
LOG_THRESHOLD_FOR_CONNLOST_WRITES = 5


def _data_received_late(protocol: Any, data: bytes) -> object:
    return protocol.data_received(data)


def data_received_of(protocol: Any) -> Callable[[bytes], object]:
    """``protocol.data_received``, looked up now.  asyncio takes any object as a protocol
    (set_protocol(), protocol_factory()) and fails only when data arrives: a protocol
    without the method gets one that raises its AttributeError then, through the
    transport's fatal-error path, instead of an error here after the protocol was set."""
    try:
        return protocol.data_received  # type: ignore[no-any-return]
    except AttributeError:
        return functools.partial(_data_received_late, protocol)


class TransportBase:
    """Mixed in before the asyncio transport class.  The transport has ``_loop``,
    ``_protocol``, ``_context``, ``_pending`` (bytes buffered, not yet given to the kernel),
    ``_high_water``, ``_low_water``, ``_protocol_paused``, ``_closing`` and ``_conn_lost``
    (> 0 once connection_lost is scheduled; counts the writes refused since)."""

    if not TYPE_CHECKING:  # (hidden from mypy, which would refuse the attributes below)
        __slots__ = ()

    if TYPE_CHECKING:  # each transport kind's (see the docstring)
        _loop: AbstractEventLoop
        _protocol: Any
        _context: Context
        _pending: int
        _high_water: int
        _low_water: int
        _protocol_paused: bool
        _closing: bool
        _conn_lost: int

        def _stop_reading_for_close(self) -> None: ...
        def _drop_pending(self) -> None: ...
        def _call_connection_lost(self, exc: BaseException | None) -> None: ...

    # ---------------------------------------------------------------- flow control

    def get_write_buffer_size(self) -> int:
        """Bytes given to the transport to send and not handed to the kernel yet."""
        return self._pending

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """The (low, high) water marks of the write buffer."""
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the marks: pause_writing() above ``high``, resume_writing() at or below
        ``low``.  Defaults as asyncio: high 64 KiB (or 4 * low), low = high // 4;
        ValueError unless high >= low >= 0."""
        self._high_water, self._low_water = water_marks(high, low)
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if self._pending <= self._high_water or self._protocol_paused:
            return
        self._protocol_paused = True
        # Called from write()/sendto() or set_write_buffer_limits(): in the caller's
        # context, which must not leak into the protocol; the caller may be this
        # transport's own callback, already in its context (transports/_context.py).
        notify_protocol(self, self._context, "pause_writing")

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and self._pending <= self._low_water:
            self._protocol_paused = False
            notify_protocol(self, self._context, "resume_writing")

    # ---------------------------------------------------------------- errors and closing

    def _report(self, exc: BaseException, message: str) -> None:
        """``exc`` to the loop's exception handler, with asyncio's keys."""
        self._loop.call_exception_handler({
            "message": message,
            "exception": exc,
            "transport": self,
            "protocol": self._protocol,
        })

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on transport") -> None:
        # OSErrors (resets, broken pipes) are the peer's doing: logged in debug mode only.
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=exc)
        else:
            self._report(exc, message)
        self._force_close(exc)
        leave_if_interrupted(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        """Close at once: stop reading, drop what is buffered, connection_lost(exc) soon."""
        if self._conn_lost:
            return
        if not self._closing:
            self._closing = True
            self._stop_reading_for_close()
        self._drop_pending()
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc, context=self._context)

    def _count_lost_write(self, warning: str = "socket.send() raised exception.") -> None:
        """A write after the connection was lost: dropped, and from the fifth on logged."""
        if self._conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES:
            logger.warning(warning)
        self._conn_lost += 1
