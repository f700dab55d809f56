"""asyncio's Handle and TimerHandle, made cheaply.

call_soon and call_later are the hottest loop methods (every Future callback goes through
call_soon).  asyncio.Handle.__init__ asks the loop for its debug flag on every call; the
loop instead fills the same slots directly when it is not in debug mode (see
CoreLoop.call_soon), making instances of these subclasses, which stay asyncio.Handle /
asyncio.TimerHandle for every user and library.  FAST_HANDLES says whether this Python's
Handle has the slots that fast path knows; if not, the loop builds handles the regular way.
"""
from __future__ import annotations

import asyncio
import contextvars
from asyncio import events
from typing import TYPE_CHECKING, Any, Callable

Handle = events.Handle
TimerHandle = events.TimerHandle

_copy_context = contextvars.copy_context
_HANDLE_SLOTS = {
    "_callback",
    "_args",
    "_cancelled",
    "_loop",
    "_source_traceback",
    "_repr",
    "_context",
}


class _Handle(Handle):
    __slots__ = ()
    if TYPE_CHECKING:
        # asyncio's slots, which typeshed's Handle leaves out: the loop fills and reads
        # them directly (loop/_core.py), on every Handle of the ready queue.
        _callback: Callable[..., object]  # None once cancelled
        _loop: Any
        _context: contextvars.Context
        _repr: str | None
        _source_traceback: Any


class _TimerHandle(TimerHandle):
    __slots__ = ()
    if TYPE_CHECKING:  # as _Handle's, and TimerHandle's own two
        _callback: Callable[..., object]  # None once cancelled
        _loop: Any
        _context: contextvars.Context
        _repr: str | None
        _source_traceback: Any
        _when: float
        _scheduled: bool

    def cancel(self) -> None:
        # TimerHandle.cancel tells the loop, then Handle.cancel asks it for debug mode:
        # do the same in one step when not in debug mode.
        if self._cancelled:
            return
        loop = self._loop
        if loop._debug:
            TimerHandle.cancel(self)
            return
        loop._timer_handle_cancelled(self)
        self._cancelled = True
        self._callback = None  # type: ignore[assignment]  # as asyncio's Handle.cancel()
        self._args = None  # type: ignore[assignment]  # (typeshed: never None)


# A handle's repr names its class (asyncio's Handle._repr_info): these are asyncio's
# Handle and TimerHandle to everyone who looks, so they carry those names.
_Handle.__name__ = _Handle.__qualname__ = "Handle"
_TimerHandle.__name__ = _TimerHandle.__qualname__ = "TimerHandle"


def is_coroutine_callback(callback: object) -> bool:
    """True for what asyncio refuses as a callback: a coroutine or coroutine function."""
    return asyncio.iscoroutine(callback) or asyncio.iscoroutinefunction(callback)


def callback_error_context(handle: Any, exc: BaseException) -> dict[str, Any]:
    """The exception-handler context Handle._run() would build for ``exc``."""
    try:
        from asyncio.format_helpers import _format_callback_source

        cb = _format_callback_source(handle._callback, handle._args)
    except Exception:  # a Python without that helper, or a broken repr
        cb = object.__repr__(handle._callback)
    context = {"message": f"Exception in callback {cb}", "exception": exc, "handle": handle}
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    return context


def _layout_is_known() -> bool:
    """The fast path fills asyncio's slots itself: use it only when they are the ones it knows."""
    slots: set[str] = set()
    for cls in Handle.__mro__:
        slots.update(s for s in getattr(cls, "__slots__", ()) if s != "__weakref__")
    timer_slots = set(TimerHandle.__slots__)
    return slots == _HANDLE_SLOTS and timer_slots == {"_scheduled", "_when"}


FAST_HANDLES = _layout_is_known()
