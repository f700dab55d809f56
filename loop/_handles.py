"""asyncio's Handle and TimerHandle, made cheaply.

call_soon and call_later are the hottest loop methods (every Future callback goes through
call_soon).  asyncio.Handle.__init__ asks the loop for its debug flag on every call; these
subclasses fill the same slots directly when the loop is not in debug mode, and stay
asyncio.Handle / asyncio.TimerHandle instances for every user and library.
"""
import contextvars
from asyncio import events

Handle = events.Handle
TimerHandle = events.TimerHandle

_copy_context = contextvars.copy_context
_HANDLE_SLOTS = {"_callback", "_args", "_cancelled", "_loop", "_source_traceback", "_repr", "_context"}


class _Handle(Handle):
    __slots__ = ()


class _TimerHandle(TimerHandle):
    __slots__ = ()

    def cancel(self):
        # TimerHandle.cancel tells the loop, then Handle.cancel asks it for debug mode:
        # do the same in one step when not in debug mode.
        if self._cancelled:
            return
        loop = self._loop
        if loop._debug:
            TimerHandle.cancel(self)
            return
        self._cancelled = True
        if self._scheduled:
            loop._timer_cancelled_count += 1
        self._callback = None
        self._args = None


def _slow_new_handle(callback, args, loop, context):
    return Handle(callback, args, loop, context)


def _slow_new_timer_handle(when, callback, args, loop, context):
    return TimerHandle(when, callback, args, loop, context)


def _fast_new_handle(callback, args, loop, context, _new=object.__new__, _cls=_Handle):
    if loop._debug:
        return Handle(callback, args, loop, context)
    h = _new(_cls)
    h._context = _copy_context() if context is None else context
    h._loop = loop
    h._callback = callback
    h._args = args
    h._cancelled = False
    h._repr = None
    h._source_traceback = None
    return h


def _fast_new_timer_handle(when, callback, args, loop, context, _new=object.__new__, _cls=_TimerHandle):
    if loop._debug:
        return TimerHandle(when, callback, args, loop, context)
    h = _new(_cls)
    h._context = _copy_context() if context is None else context
    h._loop = loop
    h._callback = callback
    h._args = args
    h._cancelled = False
    h._repr = None
    h._source_traceback = None
    h._when = when
    h._scheduled = False
    return h


def _layout_is_known():
    """The fast path fills asyncio's slots itself: use it only when they are the ones it knows."""
    slots = set()
    for cls in Handle.__mro__:
        slots.update(s for s in getattr(cls, "__slots__", ()) if s != "__weakref__")
    timer_slots = set(TimerHandle.__slots__)
    return slots == _HANDLE_SLOTS and timer_slots == {"_scheduled", "_when"}


if _layout_is_known():
    new_handle = _fast_new_handle
    new_timer_handle = _fast_new_timer_handle
else:  # a Python whose Handle has other fields: build it the regular way
    new_handle = _slow_new_handle
    new_timer_handle = _slow_new_timer_handle
