"""The scheduling core of the uvcffi loop: everything that is not a transport.

One C call per iteration: ``uvc_run_once`` runs libuv once, and libuv's callbacks (C)
record events in an array that ``_run_once`` drains here, dispatching each to the Python
object that owns its handle slot.  Timers live in a Python heap; the ready queue is a deque.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import dis
import errno
import heapq
import itertools
import logging
import math
import numbers
import os
import sys
import threading
import time
import traceback
import warnings
import weakref
from asyncio import events, futures, tasks
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from . import _accelerated
from ._fdwatch import FdWatchMethods
from ._handles import (
    FAST_HANDLES,
    Handle,
    TimerHandle,
    _Handle,
    _TimerHandle,
    callback_error_context,
)
from ._handles import is_coroutine_callback as _is_coroutine_callback
from ._signals import (
    INTERRUPT_BEFORE_START,
    INTERRUPT_INSIDE,
    INTERRUPT_TAKING,
    SignalMethods,
    _wakeup_fd,
    failed_a_transport,
    interruption,
)
from ._uv import ffi, lib

if TYPE_CHECKING:
    from asyncio import _AwaitableLike, _CoroutineLike
    from asyncio.events import _ExceptionHandler, _TaskFactory
    from collections.abc import AsyncGenerator
    from concurrent.futures import Executor
    from contextvars import Context

    from typing_extensions import TypeVarTuple, Unpack

    from ._accel import Accel

    _Ts = TypeVarTuple("_Ts")

# cffi has no type stubs: what the C core hands out (the uvc_loop_t pointer, the event
# array) is Any throughout the loop (see _uv.pyi).

_T = TypeVar("_T")

logger = logging.getLogger("asyncio")

EV_READ = lib.UVC_EV_READ
EV_READABLE = lib.UVC_EV_READABLE
EV_CLOSED = lib.UVC_EV_CLOSED
EV_POLL = lib.UVC_EV_POLL
EV_SIGNAL = lib.UVC_EV_SIGNAL
WORDS = lib.UVC_EVENT_WORDS

# Compact the timer heap once more than half of it, and more than 50 entries, are
# cancelled timers (asyncio's rule, also applied on cancel): call_later+cancel churn then
# never grows the heap or the memory behind it.
_COMPACT_MIN_CANCELLED = 50
# libuv timeouts are int milliseconds; a day keeps the value far from overflow and the
# loop wakes (harmlessly) at most once a day when it has nothing to do.
_MAX_TIMEOUT_MS = 86_400_000
# A thread posting with call_soon_threadsafe while more callbacks than this wait sleeps
# briefly after posting.  Threads posting in a tight loop otherwise outran the loop
# thread, which waits for the GIL after every poll and runs its whole ready queue before it
# looks at timers again: the queue grew every iteration, and a 10 ms sleep took a minute.
# asyncio's posters are held back by the self-pipe write of every call.  time.sleep(0)
# hands the GIL over on CPython but not on PyPy; a 10 us sleep does on both.  (The
# benchmark's producer, which stays within 20,000 of the loop, posts faster with it:
# 3.3M/s against 2.7M, its thread no longer fighting the loop's for the GIL.)
_POSTER_YIELD_BACKLOG = 4096
_POSTER_YIELD_SECONDS = 1e-5


def _debug_from_env() -> bool:
    return sys.flags.dev_mode or (
        not sys.flags.ignore_environment and bool(os.environ.get("PYTHONASYNCIODEBUG"))
    )


def _format_callback(callback: object) -> str:
    try:
        return repr(callback)
    except Exception:  # a broken __repr__ must not hide the original error
        return object.__repr__(callback)


def _format_handle(handle: _Handle | _TimerHandle) -> str:
    """What the slow-callback warning names: the task for a task step (asyncio's wording,
    ``Executing <Task finished name=... coro=<...>> took 0.300 seconds``), else the handle."""
    owner = getattr(handle._callback, "__self__", None)
    if isinstance(owner, tasks.Task):
        return _format_callback(owner)
    return _format_callback(handle)


class CoreLoop(FdWatchMethods, SignalMethods, asyncio.AbstractEventLoop):
    """The asyncio event loop on libuv, without the transport methods (see uvcffi.Loop):
    scheduling, the dispatch of libuv's events, and (from its bases) fd watching and
    signals."""

    # The attributes every callback touches are slots: an instance dict this large loses
    # CPython's fast attribute path, which costs ~20 ns per access on the hottest lines.
    # (The rest, and the transport mixins' attributes, live in the instance dict.)
    __slots__ = (
        "_careful", "_closed", "_debug", "_ready", "_timers", "_timer_seq",
        "_timer_cancelled_count", "_polling", "_stopping", "_uv", "_slots", "_arena",
        "_arena_view", "_arena_ptr", "_recv_ptr", "_recv_buffer",
        "_events", "_events_cap", "_backlog", "_new_timers", "_callbacks_run", "_accel",
        "_runs",
    )

    def __init__(self) -> None:
        uv = lib.uvc_loop_new()
        if uv == ffi.NULL:
            err = ffi.errno
            if err and err != errno.ENOMEM:  # out of fds (EMFILE), as asyncio's loop says
                raise OSError(err, os.strerror(err))
            raise MemoryError("uvcffi: cannot create the libuv loop")
        # close() closes the libuv loop; the struct itself is freed with this object, so a
        # late call from another thread (call_soon_threadsafe) finds a closed loop, not
        # freed memory.  The size (the arena and the receive buffer) tells PyPy's collector
        # what a loop holds outside its heap: without it a program that makes and closes
        # loops grew by 32 KB per loop (10 KB with it, levelling off), since the
        # collector saw no reason to free them.
        self._uv = ffi.gc(uv, lib.uvc_loop_free, lib.uvc_arena_size(uv) + _RECV_MAX)
        self._created_ms = time.monotonic() * 1000.0  # libuv's clock is CLOCK_MONOTONIC too
        _live_loops.add(self)
        self._arena_ptr = lib.uvc_arena(self._uv)
        self._arena = ffi.buffer(self._arena_ptr, lib.uvc_arena_size(self._uv))
        # For owners that copy a small read straight into a buffer of their own (see
        # _slot_register): on CPython a slice assignment from a memoryview is the fastest
        # copy of a few KiB (bigger ones go through lib.uvc_arena_copy).
        self._arena_view = memoryview(self._arena)
        # The reads made in the dispatch (a Protocol's stream in read-into mode, sock_recv)
        # land here: see uvc_recv_buffer.  (Untouched memory until then.)
        self._recv_ptr = lib.uvc_recv_buffer(self._uv)
        if self._recv_ptr == ffi.NULL:
            raise MemoryError("uvcffi: cannot allocate the loop's receive buffer")
        self._recv_buffer = ffi.buffer(self._recv_ptr, _RECV_MAX)
        self._events = lib.uvc_events(self._uv)
        self._events_cap = lib.uvc_events_capacity(self._uv)
        # slot -> the Python object that owns the handle (it gets the slot's events)
        # (Any: the dispatch calls _uv_read, _uv_event ... by the event's kind; the owners
        # are the SlotOwner and ReadingOwner of loop/_owners.py)
        self._slots: list[Any] = [None] * 64
        # events a Ctrl-C interrupted the dispatch of (see _keep_undispatched)
        self._backlog: list[list[Any]] = []
        # a handle an interruption landed on before its callback began (see _keep_unrun)
        self._unstarted: _Handle | _TimerHandle | None = None
        # uvc_run_once calls that returned to Python: the C count of runs goes past it only
        # when an exception lost a run's return value (see _keep_lost_run)
        self._runs = 0
        # Typed as uvcffi's own Handle subclass, whose declarations name asyncio's slots
        # (every Handle has them: _handles.FAST_HANDLES); debug mode's plain Handles too.
        self._ready: collections.deque[_Handle | _TimerHandle] = collections.deque()
        self._timers: list[tuple[float, int, _TimerHandle]] = []  # heap of (when, seq, handle)
        # scheduled since the last iteration, not in the heap yet
        self._new_timers: list[_TimerHandle] = []
        self._timer_seq = itertools.count()
        self._timer_cancelled_count = 0
        self._closed = False
        self._stopping = False
        self._thread_id: int | None = None
        # True while the loop thread may block in libuv: call_soon_threadsafe only pays
        # for a wake-up then (see _run_once for why this has no lost-wake-up race).
        self._polling = False
        self._debug = _debug_from_env()
        # One flag for the scheduling fast path: True when closed, in debug mode, or when
        # this Python's Handle cannot be filled directly.
        self._careful = self._debug or not FAST_HANDLES
        self._slow_callback_duration: float = 0.1
        self._callbacks_run = 0  # for stats(): handles run from the ready queue and timers
        # (loop clock ms, idle ms) at the previous stats() call
        self._stats_last: tuple[int, int] | None = None
        self._current_handle: _Handle | _TimerHandle | None = None
        self._exception_handler: _ExceptionHandler | None = None
        self._task_factory: _TaskFactory | None = None
        self._default_executor: Executor | None = None
        self._executor_shutdown_called = False
        self._asyncgens: weakref.WeakSet[AsyncGenerator[Any, Any]] = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth: int | None = None
        self._owner_buffers: dict[str, Any] = {}  # loop_buffer() of loop/_owners.py
        self._init_fd_watching()
        self._init_signals()
        self._accel: Accel | None = None
        if _accel is not None and FAST_HANDLES:
            self._accel = _accel.Accel(
                self, CoreLoop, _Handle, _TimerHandle,
                int(ffi.cast("uintptr_t", uv)),
                int(ffi.cast("uintptr_t", ffi.addressof(lib, "uvc_wakeup"))),
                _ACCEL_FALLBACKS)
            self._bind_accelerator()

    def _bind_accelerator(self) -> None:
        """Make call_soon & co. the accelerator's while the loop is on its fast path (not
        closed, not in debug mode), unless a subclass overrides them; the Python methods
        otherwise (debug mode's source tracebacks then name the caller's frame)."""
        accel = self._accel
        if accel is None:
            return
        attrs = self.__dict__
        cls = type(self)
        for name, accel_name in _ACCEL_METHODS.items():
            if self._careful:
                attrs.pop(name, None)
            elif getattr(cls, name) is getattr(CoreLoop, name):
                attrs[name] = getattr(accel, accel_name)

    # ---------------------------------------------------------------- slots and events

    def _slot_register(self, slot: int, owner: Any) -> None:
        """Make ``owner`` receive the events of the handle in ``slot``.

        ``owner`` has ``_uv_event(kind, a, b, c)``, ``_uv_read(data)`` when it reads a
        stream (UVC_EV_READ), and ``_uv_closed()`` for the handle's last event.

        An owner that copies reads into a buffer of its own sets ``_uv_read`` to None: it
        then gets ``_uv_read_at(offset, length)``, the read in place in the arena (valid
        during the call only: ``_arena_view``, ``lib.uvc_arena_copy``), and
        ``_deliver(data)`` for a read kept as bytes across iterations (after a Ctrl-C in
        the dispatch).  An owner that reads a stream in read-into mode
        (``lib.uvc_readable_start``) gets ``_uv_readable()`` for UVC_EV_READABLE.
        """
        slots = self._slots
        if slot >= len(slots):
            slots.extend([None] * (slot + 1 - len(slots)))
        slots[slot] = owner

    def _slot_report(self) -> list[str]:
        """Debug helper: one line per live handle slot and the object that owns it."""
        return [f"slot {slot}: {owner!r}" for slot, owner in enumerate(self._slots)
                if owner is not None]

    def _uv_close(self, slot: int) -> None:
        """Close a handle slot; its owner's ``_uv_closed`` runs when libuv is done."""
        if not self._closed:
            lib.uvc_close(self._uv, slot)

    def _event_failed(self, owner: Any, kind: int, exc: BaseException) -> None:
        """An event handler raised: the owner deals with it if it can (a transport turns a
        failing data_received into its fatal error), else the exception handler hears."""
        handler = getattr(owner, "_uv_callback_failed", None)
        if handler is not None:
            handler(kind, exc)
        else:
            self.call_exception_handler(
                {
                    "message": f"Exception in {owner!r} while handling a libuv event",
                    "exception": exc,
                }
            )

    def _event_cut_short(self, owner: Any, kind: int, how: int, exc: BaseException) -> None:
        """An interruption (``how``, not an exit) that leaves the dispatch landed inside the
        handling of an event of ``owner``: a transport makes it the failure of the protocol
        callback it cut short, as it makes any other exception (see leave_if_interrupted,
        which raises it again, as the caller does then), unless its own code did already."""
        if (how == INTERRUPT_INSIDE and not isinstance(exc, (SystemExit, KeyboardInterrupt))
                and not failed_a_transport(exc)):
            handler = getattr(owner, "_uv_callback_failed", None)
            if handler is not None:
                handler(kind, exc)

    def _keep_undispatched(self, ev: Any, i: int, end: int) -> None:
        """Ctrl-C (or SystemExit) stopped a dispatch: keep the events not yet handed out,
        with their data copied out of the arena the next run reuses, for the next run.
        ``ev`` is the unpacked event array (None: read it from C, as the accelerator
        leaves it), ``i`` and ``end`` word offsets in it."""
        if ev is None:
            ev = _unpack(lib.uvc_events(self._uv), end)
        backlog = self._backlog
        arena = self._arena
        for j in range(i, end, WORDS):
            record = ev[j:j + WORDS]
            if record[0] == EV_READ:
                record.append(arena[record[2]:record[2] + record[3]])
            backlog.append(record)

    def _event_callees(self, owner: Any) -> tuple[object, ...]:
        """What the dispatch may call for an event of ``owner`` (None: a signal's): an
        interruption that landed on one's first instruction finds the event not begun."""
        if owner is None:
            return (self._handle_signal,)
        names = ("_uv_read", "_uv_read_at", "_uv_recv", "_uv_readable", "_uv_recv_ended",
                 "_uv_closed", "_uv_event", "_deliver")
        return tuple(getattr(owner, name, None) for name in names)

    def _keep_interrupted_event(self, how: int, ev: Any, i: int, end: int, owner: Any,
                                read: bytes | None) -> None:
        """An interruption (``how``, from interruption()) left the dispatch as the event
        whose record ends at word ``i`` was handed out: keep the events after it for the
        next run, and this one too when its owner had not begun (``read``: what a read-into
        event had taken from its stream for the owner, kept as a read).  ``ev`` as for
        _keep_undispatched."""
        first = i
        if how == INTERRUPT_BEFORE_START or how == INTERRUPT_TAKING:
            record = (_unpack(lib.uvc_events(self._uv), i) if ev is None else ev)[i - WORDS:i]
            if read is not None:
                self._backlog.append([EV_READ, record[1], 0, len(read), 0, read])
            else:
                first = i - WORDS
                if record[0] == EV_CLOSED and owner is not None:
                    self._slots[record[1]] = owner  # (the dispatch let go of it)
        self._keep_undispatched(ev, first, end)

    def _keep_lost_run(self, runs: int) -> None:
        """An exception came between the poll and the dispatch of its events: a signal
        handler's (Ctrl-C's KeyboardInterrupt), raised as uvc_run_once returned, or on the
        next call.  libuv has consumed what those events report (a lookup's result, a
        handle's close, a read): keep them for the next run, as a dispatch that Ctrl-C
        stops keeps the rest.  ``runs`` is the run count before the poll: unless the C count
        is one past it, the exception came first, and the events in the C array are the
        previous run's, all dispatched."""
        done = lib.uvc_run_count(self._uv)
        self._runs = done
        if done == runs + 1:
            self._keep_undispatched(None, 0, lib.uvc_event_count(self._uv) * WORDS)

    def _dispatch_backlog(self) -> None:
        """Hand out the kept events (see _keep_undispatched), one by one: in debug mode
        each is timed, and one that runs longer than slow_callback_duration is logged, as
        asyncio logs a slow I/O callback (its I/O callbacks are handles)."""
        backlog, self._backlog = self._backlog, []
        slots = self._slots
        debug = self._debug
        t0 = 0.0
        handed = 0  # the records before this one were handed out (or had no owner)
        try:
            for record in backlog:
                kind, slot, a, b, c = record[:WORDS]
                # (a slot Python never registered may lie past the table: a connection
                # closed before anyone owned it, or a Ctrl-C between a request's start in C
                # and its registration, leaves its events no owner)
                owner = slots[slot] if 0 <= slot < len(slots) else None
                if debug:
                    t0 = time.monotonic()
                handed += 1
                try:
                    if kind == EV_SIGNAL:
                        self._handle_signal(a)
                    elif owner is None:
                        continue
                    elif kind == EV_READ:
                        (owner._uv_read or owner._deliver)(record[WORDS])
                    elif kind == EV_CLOSED:
                        slots[slot] = None
                        owner._uv_closed()
                    else:
                        owner._uv_event(kind, a, b, c)
                except BaseException as exc:
                    how = interruption(exc, 1, callees=self._event_callees(owner))
                    if how:  # kept from this record if its owner had not begun
                        if how == INTERRUPT_BEFORE_START:
                            handed -= 1
                            if kind == EV_CLOSED:
                                slots[slot] = owner
                        self._event_cut_short(owner, kind, how, exc)
                        raise
                    self._event_failed(owner, kind, exc)
                if debug:
                    dt = time.monotonic() - t0
                    if dt >= self.slow_callback_duration:
                        logger.warning("Executing <%s event of %r> took %.3f seconds",
                                       _EVENT_NAMES.get(kind, kind), owner, dt)
        finally:
            # An interruption (see interruption()), from a handler or from between two of
            # them, the timing included: the rest is kept for the next run.
            if handed < len(backlog):
                self._backlog = backlog[handed:] + self._backlog

    def _run_once(self) -> None:
        """One iteration: poll libuv (waiting for the next timer at most), dispatch its
        events, move due timers to the ready queue, run what was ready when it started."""
        if self._backlog:
            self._dispatch_backlog()
        if self._new_timers:
            self._flush_new_timers()
        timers = self._timers
        if self._timer_cancelled_count > _COMPACT_MIN_CANCELLED and (
            self._timer_cancelled_count * 2 > len(timers)
        ):
            self._compact_timers()
        else:
            while timers and timers[0][2]._cancelled:
                self._timer_cancelled_count -= 1
                heapq.heappop(timers)[2]._scheduled = False

        # The flag goes up before the ready queue is looked at: a thread that appends after
        # that look sees the flag and wakes libuv; one that appended before it is seen here.
        self._polling = True
        if self._ready or self._stopping:
            timeout = 0
        elif timers:
            # Round up so that a timer never fires early; an early libuv wake-up (its clock
            # is in whole milliseconds) just leads to another short wait below.  The cap
            # comes before ceil (an infinite deadline, sleep(inf), waits a capped while), and
            # "not > 0" counts NaN as due (asyncio runs call_later(nan, ...) at once).
            delay = (timers[0][0] - time.monotonic()) * 1000.0
            timeout = math.ceil(min(delay, _MAX_TIMEOUT_MS)) if delay > 0 else 0
        else:
            timeout = -1
        runs = self._runs
        due: list[_TimerHandle] = []
        try:
            n = _uvc_run_once(self._uv, timeout)
            self._runs = runs + 1
            self._polling = False

            # asyncio's order within an iteration: the callbacks that were ready before the
            # poll, then the I/O callbacks (run here directly, as libuv's events are
            # dispatched), then the timers that were due when the poll returned.  Callbacks
            # scheduled meanwhile, and timers that fall due while these run, wait for the
            # next iteration: a slow callback does not let a timer overtake the callbacks
            # it scheduled (a timeout fire before the wake-up of a task that finished).
            accel = self._accel
            ev: Any = None  # the accelerator reads the C array itself
            if n and accel is None:
                if n > self._events_cap:  # the C array grew (and moved) during this run
                    self._events_cap = lib.uvc_events_capacity(self._uv)
                    self._events = lib.uvc_events(self._uv)
                ev = _unpack(self._events, n * WORDS)
            ntodo = len(self._ready)
            if timers:
                now = time.monotonic()
                while timers:
                    entry = timers[0]
                    if entry[0] > now:
                        break
                    handle = entry[2]
                    due.append(handle)  # (a cancelled one is skipped when they run)
                    heapq.heappop(timers)
                    handle._scheduled = False
                    if handle._cancelled:
                        self._timer_cancelled_count -= 1
        except BaseException:
            self._polling = False
            self._keep_due(due)
            self._keep_lost_run(runs)
            raise
        try:
            if ntodo:
                try:
                    self._run_handles(self._ready.popleft, ntodo)
                except BaseException:  # only an interruption gets here
                    self._keep_unrun(None)
                    if n:
                        self._keep_undispatched(ev, 0, n * WORDS)
                    raise
            if n and self._debug:
                # One event at a time, each timed (the backlog's dispatch): debug mode's
                # slow-callback warning covers I/O callbacks too, as on asyncio.
                self._keep_undispatched(ev, 0, n * WORDS)
                self._dispatch_backlog()
                n = 0
            elif n and accel is not None:
                accel.dispatch(n)  # _dispatch, in C
                n = 0
            if n:
                self._dispatch(ev, n)
        except BaseException:  # an interruption: the due timers run next
            self._keep_due(due)
            raise

        if due:
            rest = iter(due)
            try:
                self._run_handles(rest.__next__, len(due))
            except BaseException:  # an interruption, in a callback or between two
                # The timers after it are due still: asyncio keeps them in its ready
                # queue, and so they run first when the loop runs again.
                self._keep_unrun(list(rest))
                raise

    def _keep_unrun(self, rest: list[_TimerHandle] | None) -> None:
        """An interruption left a batch of handles: ``rest`` (due timers it did not reach)
        go first in the ready queue, and before them the handle the interruption landed on
        before its callback began (``_unstarted``): it runs when the loop runs again, as if
        the interruption had come just before it."""
        if rest:
            self._ready.extendleft(reversed(rest))
        unstarted, self._unstarted = self._unstarted, None
        if unstarted is not None:
            self._ready.appendleft(unstarted)

    def _keep_due(self, due: list[_TimerHandle]) -> None:
        """An exception leaves the iteration before its due timers ran: they go to the
        ready queue, as asyncio has them there already.  (A timer the exception caught
        on its way out of the heap is in ``due`` and may be in the heap still.)"""
        if due:
            in_heap = {id(entry[2]) for entry in self._timers}
            for handle in due:
                if id(handle) not in in_heap:
                    handle._scheduled = False
                    self._ready.append(handle)

    def _dispatch(self, ev: Any, n: int) -> None:
        """Hand the ``n`` events of the run (unpacked in ``ev``) to the owners of their
        slots (what the accelerator's dispatch does in C)."""
        # This loop is the hottest code of the loop, so it is all in this one method, in one
        # try (free in CPython 3.11+) re-entered after an error: a failing owner neither
        # stops the loop nor loses later events.
        i = 0
        end = n * WORDS
        slots = self._slots
        arena = self._arena
        arena_ptr = self._arena_ptr
        uv = self._uv
        received = self._recv_buffer
        recv_ptr = self._recv_ptr
        # A record is (kind, slot, a, b, c); once i has moved past it, its fields are at
        # these distances back (locals: the cheapest names in this loop).
        SLOT, A, B, C = 4, 3, 2, 1
        size = 0  # a read-into event's read, once taken (the except below reads it)
        while n and i < end:
            owner = None
            try:
                while i < end:
                    kind = ev[i]
                    i += WORDS
                    if kind == EV_READ:  # a = arena offset, b = length
                        owner = slots[ev[i - SLOT]]
                        if owner is not None:
                            off = ev[i - A]
                            read = owner._uv_read
                            if read is not None:
                                size = ev[i - B]
                                if size < _BIG_READ:
                                    read(arena[off:off + size])
                                else:  # on PyPy the slice of a big read costs 1.8x this
                                    data = _buffer(arena_ptr + off, size)[:]  # (taking)
                                    read(data)
                                    del data  # (see below)
                            else:
                                owner._uv_read_at(off, ev[i - B])
                    elif kind == EV_READABLE:  # read-into mode
                        slot = ev[i - SLOT]
                        owner = slots[slot]
                        if owner is not None:
                            recv = owner._uv_recv
                            if recv is None:  # it reads itself (a BufferedProtocol)
                                size = 0
                                owner._uv_readable()
                                continue
                            # A Protocol: one read into the receive buffer, as the
                            # accelerator's dispatch does; the owner's _uv_readable
                            # reads on after a read that fills the buffer.
                            size = _uvc_stream_recv(uv, slot)  # (taking)
                            if 0 < size < _BIG_READ:
                                recv(received[:size])
                            elif size >= _BIG_READ:
                                data = _buffer(recv_ptr, size)[:]  # (taking)
                                recv(data)
                                # Not kept past its owner: on PyPy this frame may be old by
                                # now (a minor collection ran during the batch), and an old
                                # object keeps what it points to through the next minor
                                # collection, dead or not.  The 100 KiB protocol echo
                                # carried 300 KB of such messages into each one; 2 KB now.
                                del data
                                if size == _RECV_MAX:
                                    size = 0  # (handed out: see the except below)
                                    owner._uv_readable()
                            elif size != _UV_EAGAIN:
                                owner._uv_recv_ended(size)
                    elif kind == EV_CLOSED:
                        # (a slot past the table, closed before anyone registered for it:
                        # the IndexError below drops it, as for any kind)
                        slot = ev[i - SLOT]
                        owner = slots[slot]
                        slots[slot] = None
                        if owner is not None:
                            owner._uv_closed()
                    elif kind == EV_SIGNAL:  # a = signal number
                        owner = None
                        self._handle_signal(ev[i - A])
                    else:
                        owner = slots[ev[i - SLOT]]
                        if owner is not None:
                            owner._uv_event(kind, ev[i - A], ev[i - B], ev[i - C])
            except BaseException as exc:
                if exc.__class__ is IndexError and ev[i - SLOT] >= len(slots):
                    # A slot Python never registered (a Ctrl-C between a request's start in
                    # C and its registration; a connection closed before anyone owned it):
                    # no owner to tell, as the accelerator's dispatch drops it.  Checked
                    # here, not per event, off the hot path.
                    continue
                how = interruption(exc, 1, _DISPATCH_TAKING_LINES, self._event_callees(owner))
                if not how:
                    self._event_failed(owner, ev[i - WORDS], exc)
                    continue
                # An interruption keeps the rest, and this event if its owner had not
                # begun.  A read-into event's read is in the receive buffer then: ``size``
                # if it landed on the owner's entry, the C core's record if it landed as
                # the read returned (``size`` not stored yet).
                read = None
                if ev[i - WORDS] == EV_READABLE and (
                        how == INTERRUPT_BEFORE_START or how == INTERRUPT_TAKING):
                    got = lib.uvc_stream_last_recv(uv) if how == INTERRUPT_TAKING else size
                    if got > 0:
                        read = received[:got]
                self._keep_interrupted_event(how, ev, i, end, owner, read)
                self._event_cut_short(owner, ev[i - WORDS], how, exc)
                raise

    def _compact_timers(self, cancelling: TimerHandle | None = None) -> None:
        """Drop cancelled timers from the heap (in place: callers may hold the list), and
        ``cancelling``, a timer being cancelled that does not say so yet."""
        timers = self._timers
        live = []
        for entry in timers:
            if entry[2]._cancelled or entry[2] is cancelling:
                entry[2]._scheduled = False
            else:
                live.append(entry)
        heapq.heapify(live)
        timers[:] = live
        self._timer_cancelled_count = 0

    def _run_handles(self, next_handle: Callable[[], _Handle | _TimerHandle], ntodo: int) -> None:
        """Run ``ntodo`` handles taken with ``next_handle()``, as Handle._run() would but
        without its frame per callback: the batch loop sits inside one try (free in CPython
        3.11+), re-entered after an error."""
        if self._careful:
            self._run_handles_careful(next_handle, ntodo)
            return
        if self._accel is not None:
            self._accel.run_handles(next_handle, ntodo)  # the loop below, in C
            return
        self._callbacks_run += ntodo
        while ntodo:
            try:
                while ntodo:
                    ntodo -= 1
                    handle = next_handle()
                    if not handle._cancelled:
                        handle._context.run(handle._callback, *handle._args)
                    else:
                        self._callbacks_run -= 1
            except BaseException as exc:
                how = interruption(exc, 1, callees=(handle._callback,))
                if how:  # it leaves the loop (_keep_unrun keeps the handle if unbegun)
                    if how == INTERRUPT_BEFORE_START:
                        self._unstarted = handle
                    raise
                self.call_exception_handler(callback_error_context(handle, exc))
            handle = None  # type: ignore[assignment]  # no cycle through the traceback

    def _run_handles_careful(self, next_handle: Callable[[], _Handle | _TimerHandle],
                             ntodo: int) -> None:
        """The same in debug mode (slow-callback warnings) or with asyncio's own Handle._run."""
        debug = self._debug
        for _ in range(ntodo):
            handle = next_handle()
            if handle._cancelled:
                continue
            self._callbacks_run += 1
            if not debug:
                handle._run()
                continue
            self._current_handle = handle
            t0 = time.monotonic()
            try:
                handle._run()
            finally:
                self._current_handle = None
            dt = time.monotonic() - t0
            if dt >= self.slow_callback_duration:
                logger.warning("Executing %s took %.3f seconds", _format_handle(handle), dt)

    # ---------------------------------------------------------------- statistics

    @property
    def slow_callback_duration(self) -> float:
        """Seconds a callback may run before it counts as slow: logged in debug mode, and
        counted in stats()["slow_callbacks"] always."""
        return self._slow_callback_duration

    @slow_callback_duration.setter
    def slow_callback_duration(self, value: float) -> None:
        self._slow_callback_duration = value
        try:
            ms = math.ceil(value * 1000)
        except (TypeError, ValueError, OverflowError):
            return  # asyncio takes any value; the C counter keeps its last threshold
        if not self._closed:
            lib.uvc_set_slow_ms(self._uv, min(ms, 2 ** 62))

    def stats(self) -> dict[str, Any]:
        """A snapshot of what the loop has done (uvcffi's own; asyncio has no such call).

        Cheap enough to call every second: about 10 us on CPython (40 on PyPy) plus 0.3 us
        per live handle (3 ms with 10,000 connections).  Keeping the counters costs the
        loop a few instructions per iteration and per event.  Keys: ``iterations``;
        ``events`` (libuv events by kind); ``callbacks_run``
        (handles run from the ready queue and timers; I/O callbacks are ``events``);
        ``ready`` (callbacks waiting now); ``timers`` (scheduled, not cancelled);
        ``handles`` (live libuv handles by owner kind); ``idle_time`` (seconds spent waiting
        in the poll since the loop was made) and ``utilization`` (the busy share of the time
        since the previous stats() call, or since the loop was made); ``slow_callbacks``
        (iterations in which callbacks ran longer than slow_callback_duration, counted
        outside debug mode too) and ``slow_recent`` (the last of them, as (start, duration)
        in loop.time() seconds); ``bytes_read`` and ``bytes_written`` (by the loop's stream
        and datagram transports).  Times come from libuv's millisecond clock.
        """
        if self._closed:
            raise RuntimeError("Event loop is closed")
        st = ffi.new("uvc_stats_t *")
        lib.uvc_stats(self._uv, st)
        events: dict[str, int] = {}
        for kind, name in _EVENT_NAMES.items():
            n = st.events[kind]
            if n:
                events[name] = n
        handles: dict[str, int] = {}
        for owner in self._slots:
            if owner is not None:
                kind = getattr(owner, "_stats_kind", None) or type(owner).__name__.lstrip("_")
                handles[kind] = handles.get(kind, 0) + 1
        now, idle = st.now_ms, st.idle_ms
        last = self._stats_last
        since, idle_before = last if last is not None else (self._created_ms, 0)
        self._stats_last = (now, idle)
        window = now - since
        utilization = 1.0 - (idle - idle_before) / window if window > 0 else 0.0
        recent: list[tuple[float, float]] = []
        count = st.slow_iterations
        for i in range(max(0, count - lib.UVC_SLOW_RING), count):
            j = i % lib.UVC_SLOW_RING
            recent.append((st.slow_start_ms[j] / 1000.0, st.slow_duration_ms[j] / 1000.0))
        return {
            "iterations": st.iterations,
            "events": events,
            "callbacks_run": self._callbacks_run,
            "ready": len(self._ready),
            "timers": len(self._timers) - self._timer_cancelled_count
                      + sum(1 for t in self._new_timers if not t._cancelled),
            "handles": handles,
            "idle_time": idle / 1000.0,
            "utilization": min(1.0, max(0.0, utilization)),
            "slow_callbacks": count,
            "slow_recent": recent,
            "bytes_read": st.bytes_read,
            "bytes_written": st.bytes_written,
        }

    # ---------------------------------------------------------------- running and stopping

    def _check_closed(self) -> None:
        if self._closed:
            raise RuntimeError("Event loop is closed")

    def _check_running(self) -> None:
        if self._thread_id is not None:
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise RuntimeError("Cannot run the event loop while another loop is running")

    def _check_thread(self) -> None:
        """In debug mode, refuse non-thread-safe calls from a thread the loop is not running in."""
        if self._thread_id is None:
            return
        if threading.get_ident() != self._thread_id:
            raise RuntimeError(
                "Non-thread-safe operation invoked on an event loop other than the current one"
            )

    def _check_callback(self, callback: object, method: str) -> None:
        if _is_coroutine_callback(callback):
            raise TypeError(f"coroutines cannot be used with {method}()")
        if not callable(callback):
            raise TypeError(f"a callable object was expected by {method}(), got {callback!r}")

    def run_forever(self) -> None:
        """Run the event loop until stop() is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        old_agen_hooks = sys.get_asyncgen_hooks()
        self._thread_id = threading.get_ident()
        try:
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook, finalizer=self._asyncgen_finalizer_hook
            )
            events._set_running_loop(self)
            # The time the loop was not running is no callback's: slow-callback counting
            # starts afresh with each run.
            self.slow_callback_duration = self._slow_callback_duration
            self._in_main_thread = threading.current_thread() is threading.main_thread()
            self._sync_wakeup_fd()
            # The stream writes of an iteration leave together when it ends (uvc_write in
            # csrc/uvc_stream.h); off again below, sending what is held, so that nothing
            # written is stranded in a loop that stops (Ctrl-C included) and writes made
            # outside a run go out at once, as asyncio's do.
            _uvc_hold_writes(self._uv, 1)
            while True:
                self._run_once()
                if self._stopping:
                    break
        finally:
            _uvc_hold_writes(self._uv, 0)
            self._stopping = False
            self._thread_id = None
            self._in_main_thread = False
            self._sync_wakeup_fd()
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)

    def run_until_complete(self, future: _AwaitableLike[_T]) -> _T:
        """Run until the future (a Future, Task or coroutine) is done, and return its result.

        A coroutine is wrapped in a Task.  Raises RuntimeError if the loop is stopped before
        the future is done, and the future's exception if it has one.
        """
        self._check_closed()
        self._check_running()
        new_task = not futures.isfuture(future)
        # (a generator-based coroutine, as Python 3.9's @coroutine makes, is taken too)
        future = tasks.ensure_future(future, loop=self)  # type: ignore[arg-type]
        if new_task:
            # If the loop stops first, RuntimeError says so: the task need not also be
            # reported as "destroyed but pending" (the flag is the Task's own, as asyncio sets it).
            try:
                future._log_destroy_pending = False  # type: ignore[attr-defined]
            except AttributeError:
                pass
        future.add_done_callback(self._run_until_complete_cb)
        try:
            self.run_forever()
        except BaseException:
            if new_task and future.done() and not future.cancelled():
                future.exception()
            raise
        finally:
            future.remove_done_callback(self._run_until_complete_cb)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()

    @staticmethod
    def _run_until_complete_cb(fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled():
            exc = fut.exception()
            if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                # Let the exception come out of run_forever(), which stops the loop anyway.
                return
        fut.get_loop().stop()

    def stop(self) -> None:
        """Stop the loop once the callbacks already scheduled have run."""
        self._stopping = True

    def is_running(self) -> bool:
        """True while run_forever() (or run_until_complete()) is running."""
        return self._thread_id is not None

    def is_closed(self) -> bool:
        """True once close() has been called."""
        return self._closed

    def close(self) -> None:
        """Close the loop: drop pending callbacks, shut the default executor down without
        waiting, release every libuv handle.  The loop must not be running; closing twice
        is allowed."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:
            return
        if self._debug:
            logger.debug("Close %r", self)
        for step in self._TEARDOWN:
            teardown = getattr(self, "_teardown_" + step, None)
            if teardown is not None:
                teardown()

    # What close() does, in this order; each area of the loop (a mixin) defines its
    # _teardown_<step> method.  Signals go first (no handler may run on a closing loop);
    # transports learn that libuv is going before it goes (their sockets must not close fds
    # libuv closes); libuv goes last, taking every handle with it.
    _TEARDOWN = ("signals", "scheduling", "executor", "transports", "dns", "fd_watching",
                 "libuv")

    def _teardown_scheduling(self) -> None:
        self._closed = True
        self._careful = True
        self._bind_accelerator()
        self._ready.clear()
        for entry in self._timers:
            entry[2]._scheduled = False
        self._timers.clear()
        self._new_timers.clear()

    def _teardown_executor(self) -> None:
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    def _teardown_libuv(self) -> None:
        lib.uvc_loop_close(self._uv)
        self._slots = []

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_closed", True):
            return
        _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
        if not self.is_running():
            self.close()

    def __repr__(self) -> str:
        return (
            f"<{self.__class__.__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()}>"
        )

    # ---------------------------------------------------------------- scheduling

    def time(self) -> float:
        """The loop's clock: time.monotonic(), in seconds."""
        return time.monotonic()

    def call_soon(self, callback: Callable[[Unpack[_Ts]], object], *args: Unpack[_Ts],
                  context: Context | None = None) -> Handle:
        """Arrange for callback(*args) to be called soon, in FIFO order, in ``context``
        (the current context by default).  Returns an asyncio.Handle."""
        if self._careful:
            return self._call_soon_checked(callback, args, context, "call_soon")
        if not callable(callback):
            self._check_callback(callback, "call_soon")
        # The slots of asyncio.Handle, filled here rather than in a chain of __init__ calls:
        # every Future callback of the program comes through this line.
        handle = _new_object(_Handle)
        handle._context = _copy_context() if context is None else context
        handle._loop = self
        handle._callback = callback
        handle._args = args
        handle._cancelled = False
        handle._repr = None
        handle._source_traceback = None
        self._ready.append(handle)
        return handle

    def _call_soon_checked(self, callback: Callable[..., object], args: tuple[Any, ...],
                           context: Context | None, method: str) -> Handle:
        self._check_closed()
        if self._debug and method != "call_soon_threadsafe":
            self._check_thread()
        self._check_callback(callback, method)
        # (asyncio's own Handle, read through _Handle's declarations of its slots)
        handle: _Handle = Handle(callback, args, self, context)  # type: ignore[assignment]
        if handle._source_traceback:  # (debug mode) end at the caller of call_soon*()
            del handle._source_traceback[-2:]
        self._ready.append(handle)
        return handle

    def call_later(self, delay: float, callback: Callable[[Unpack[_Ts]], object],
                   *args: Unpack[_Ts], context: Context | None = None) -> TimerHandle:
        """Arrange for callback(*args) to be called after ``delay`` seconds (never earlier).
        Returns an asyncio.TimerHandle that can be cancelled."""
        if delay is None:
            raise TypeError("delay must not be None")
        when = time.monotonic() + delay
        if when.__class__ is not float and not isinstance(when, numbers.Real):
            # (a complex delay, say) refused here, as call_at() refuses such a time: in the
            # heap it would break every later iteration of the loop
            raise TypeError(f"delay must be a real number, not {type(delay).__name__!r}")
        return self._call_at(when, callback, args, context, "call_later")

    def call_at(self, when: float, callback: Callable[[Unpack[_Ts]], object], *args: Unpack[_Ts],
                context: Context | None = None) -> TimerHandle:
        """Like call_later(), with an absolute time on the loop's clock (loop.time())."""
        if when is None:
            raise TypeError("when cannot be None")
        if when.__class__ is not float:
            if not isinstance(when, numbers.Real):
                # Refused here: in the heap it would break the next iteration, not this call.
                raise TypeError(f"when must be a real number, not {type(when).__name__!r}")
            # So is a time the clock's float arithmetic overflows on (an int or Fraction
            # past 1e308): first in the heap, every iteration's wait (when - now) would raise
            # OverflowError, as on asyncio, until it was cancelled.  uvloop refuses it too.
            float(when)
        return self._call_at(when, callback, args, context, "call_at")

    def _call_at(self, when: float, callback: Callable[..., object], args: tuple[Any, ...],
                 context: Context | None, method: str) -> TimerHandle:
        if self._careful:
            self._check_closed()
            if self._debug:
                self._check_thread()
            self._check_callback(callback, method)
            # (asyncio's own TimerHandle, read through _TimerHandle's declarations of its slots)
            timer: _TimerHandle = TimerHandle(  # type: ignore[assignment]
                when, callback, args, self, context)
            if timer._source_traceback:  # (debug mode) end at the caller of call_later/at
                del timer._source_traceback[-2:]
        else:
            if not callable(callback):
                self._check_callback(callback, method)
            timer = _new_object(_TimerHandle)
            timer._context = _copy_context() if context is None else context
            timer._loop = self
            timer._callback = callback
            timer._args = args
            timer._cancelled = False
            timer._repr = None
            timer._source_traceback = None
            timer._when = when
        # The heap is only fed at the next iteration: a timer cancelled before then (a
        # timeout that did not fire, the common case) never touches it.
        timer._scheduled = False
        new = self._new_timers
        new.append(timer)
        if len(new) > 1024:
            self._flush_new_timers()
        return timer

    def _flush_new_timers(self) -> None:
        """Move the timers scheduled since the last iteration into the heap, in order;
        (when, sequence) orders the heap in C, FIFO among equal deadlines."""
        timers = self._timers
        seq = self._timer_seq
        new = self._new_timers
        try:
            for timer in new:
                if not timer._cancelled and not timer._scheduled:
                    timer._scheduled = True
                    heapq.heappush(timers, (timer._when, next(seq), timer))
        except BaseException:
            # (KeyboardInterrupt from a signal, say) the list stays for the next flush,
            # which skips the timers already in the heap: none is pushed twice, and so
            # none runs twice.  One marked but not pushed yet is unmarked.
            in_heap = {id(entry[2]) for entry in timers}
            for timer in new:
                if timer._scheduled and id(timer) not in in_heap:
                    timer._scheduled = False
            raise
        new.clear()

    def _timer_handle_cancelled(self, handle: _TimerHandle) -> None:
        """Called by TimerHandle.cancel() (before it marks itself cancelled): count it for
        the heap compaction, and compact now rather than at the next iteration, so a burst
        of call_later+cancel (timeouts that did not fire) never piles up in the heap."""
        if handle._scheduled:
            self._timer_cancelled_count += 1
            if self._timer_cancelled_count > _COMPACT_MIN_CANCELLED and (
                self._timer_cancelled_count * 2 > len(self._timers)
            ):
                self._compact_timers(cancelling=handle)

    def call_soon_threadsafe(self, callback: Callable[[Unpack[_Ts]], object], *args: Unpack[_Ts],
                             context: Context | None = None) -> Handle:
        """Like call_soon(), but safe to call from any thread: wakes the loop if it waits."""
        if self._closed:
            raise RuntimeError("Event loop is closed")
        if self._careful:
            handle = self._call_soon_checked(callback, args, context, "call_soon_threadsafe")
        else:
            # call_soon's fast path, inline: routing through call_soon costs this method
            # a third of its speed (a frame and the *args repacked).
            if not callable(callback):
                self._check_callback(callback, "call_soon_threadsafe")
            handle = _new_object(_Handle)
            handle._context = _copy_context() if context is None else context
            handle._loop = self
            handle._callback = callback
            handle._args = args
            handle._cancelled = False
            handle._repr = None
            handle._source_traceback = None
            self._ready.append(handle)
        if self._polling:
            lib.uvc_wakeup(self._uv)
        if len(self._ready) > _POSTER_YIELD_BACKLOG:
            self._poster_yield()
        return handle

    def _poster_yield(self) -> None:
        """call_soon_threadsafe far ahead of the loop (_POSTER_YIELD_BACKLOG): a thread
        other than the loop's gives up the GIL once, so that the running loop catches up.
        A loop that is not running cannot: then the poster (often the thread that will
        run it) must not sleep for nothing (10k posts took 0.6 s)."""
        running = self._thread_id
        if running is not None and threading.get_ident() != running:
            time.sleep(_POSTER_YIELD_SECONDS)

    def _write_to_self(self) -> None:
        """Wake the loop from another thread (the name asyncio's own helpers call)."""
        if not self._closed:
            lib.uvc_wakeup(self._uv)

    # ---------------------------------------------------------------- futures and tasks

    def create_future(self) -> asyncio.Future[Any]:
        """Create an asyncio.Future attached to this loop."""
        return futures.Future(loop=self)

    def create_task(self, coro: _CoroutineLike[_T], *,
                    name: str | None = None, context: Context | None = None) -> asyncio.Task[_T]:
        """Schedule a coroutine as a Task (or through the task factory); return it."""
        if context is not None and sys.version_info < (3, 11):
            # asyncio's create_task() takes context= from 3.11, as its Task does: before,
            # the Task would refuse it half-made (and complain again when collected).
            raise TypeError("create_task() got an unexpected keyword argument 'context'")
        self._check_closed()
        if self._task_factory is None:
            if context is None:
                task = tasks.Task(coro, loop=self, name=name)
            else:
                task = tasks.Task(coro, loop=self, name=name, context=context)
            if task._source_traceback:  # type: ignore[attr-defined]  # asyncio's, not typeshed's
                del task._source_traceback[-1]  # type: ignore[attr-defined]
        else:
            if context is None:
                # (typeshed's factories return Task[_T], their protocol takes no context=;
                # asyncio's may return any Future, and take context= from Python 3.11)
                task = self._task_factory(self, coro)  # type: ignore[assignment]
            else:
                task = self._task_factory(  # type: ignore[assignment]
                    self, coro, context=context)  # type: ignore[call-arg]
            if name is not None:
                try:
                    task.set_name(name)
                except AttributeError:
                    pass
        return task

    def set_task_factory(self, factory: _TaskFactory | None) -> None:
        """Set the factory create_task() uses: factory(loop, coro[, context=]) -> Future.
        None restores the default (asyncio.Task)."""
        if factory is not None and not callable(factory):
            raise TypeError("task factory must be a callable or None")
        self._task_factory = factory

    def get_task_factory(self) -> _TaskFactory | None:
        """Return the task factory, or None for the default."""
        return self._task_factory

    # ---------------------------------------------------------------- executors

    def run_in_executor(self, executor: Executor | None, func: Callable[[Unpack[_Ts]], _T],
                        *args: Unpack[_Ts]) -> asyncio.Future[_T]:
        """Run func(*args) in ``executor`` (the default ThreadPoolExecutor when None) and
        return an asyncio.Future for its result."""
        self._check_closed()
        if self._debug:
            self._check_callback(func, "run_in_executor")
        if executor is None:
            executor = self._default_executor
            if self._executor_shutdown_called:
                raise RuntimeError("Executor shutdown has been called")
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        return futures.wrap_future(executor.submit(func, *args), loop=self)

    def set_default_executor(self, executor: Executor) -> None:
        """Use ``executor`` (a ThreadPoolExecutor) for run_in_executor(None, ...)."""
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            if sys.version_info >= (3, 11):
                raise TypeError("executor must be ThreadPoolExecutor instance")
            warnings.warn(
                "Using the default executor that is not an instance of "
                "ThreadPoolExecutor is deprecated and will be prohibited in Python 3.9",
                DeprecationWarning,
                2,
            )
        self._default_executor = executor

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        """Shut the default executor down and wait (at most ``timeout`` seconds) for its
        threads; run_in_executor(None, ...) raises RuntimeError afterwards."""
        self._executor_shutdown_called = True
        if self._default_executor is None:
            return
        future = self.create_future()
        thread = threading.Thread(target=self._do_shutdown, args=(future,))
        thread.start()
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            warnings.warn(
                "The executor did not finishing joining its threads within "
                f"{timeout} seconds.",
                RuntimeWarning,
                stacklevel=2,
            )
            self._default_executor.shutdown(wait=False)
        else:
            thread.join()

    def _do_shutdown(self, future: asyncio.Future[None]) -> None:
        try:
            # (set: the thread runs only when there is a default executor)
            self._default_executor.shutdown(wait=True)  # type: ignore[union-attr]
            if not self.is_closed():
                self.call_soon_threadsafe(_set_result_unless_done, future, None)
        except Exception as ex:
            if not self.is_closed() and not future.cancelled():
                self.call_soon_threadsafe(_set_exception_unless_done, future, ex)

    # ---------------------------------------------------------------- async generators

    def _asyncgen_finalizer_hook(self, agen: AsyncGenerator[Any, Any]) -> None:
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    def _asyncgen_firstiter_hook(self, agen: AsyncGenerator[Any, Any]) -> None:
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                "loop.shutdown_asyncgens() call",
                ResourceWarning,
                source=self,
                stacklevel=1,  # warnings.warn's default, said explicitly (ruff B028)
            )
        self._asyncgens.add(agen)

    async def shutdown_asyncgens(self) -> None:
        """Close every asynchronous generator still alive that was iterated on this loop."""
        self._asyncgens_shutdown_called = True
        if not len(self._asyncgens):
            return
        closing = list(self._asyncgens)
        self._asyncgens.clear()
        results = await tasks.gather(*[ag.aclose() for ag in closing], return_exceptions=True)
        for result, agen in zip(results, closing):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": "an error occurred during closing of "
                        f"asynchronous generator {agen!r}",
                        "exception": result,
                        "asyncgen": agen,
                    }
                )

    # ---------------------------------------------------------------- debug

    def get_debug(self) -> bool:
        """True when the loop is in debug mode."""
        return self._debug

    def set_debug(self, enabled: bool) -> None:
        """Turn debug mode on or off (slow-callback warnings, thread checks, origins)."""
        self._debug = bool(enabled)
        self._careful = self._closed or self._debug or not FAST_HANDLES
        self._bind_accelerator()
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, self._debug)

    def _set_coroutine_origin_tracking(self, enabled: bool) -> None:
        if bool(enabled) == bool(self._coroutine_origin_tracking_enabled):
            return
        if enabled:
            self._coroutine_origin_tracking_saved_depth = sys.get_coroutine_origin_tracking_depth()
            sys.set_coroutine_origin_tracking_depth(10)
        else:
            sys.set_coroutine_origin_tracking_depth(
                self._coroutine_origin_tracking_saved_depth)  # type: ignore[arg-type]  # saved when enabled
        self._coroutine_origin_tracking_enabled = enabled

    # ---------------------------------------------------------------- errors

    def get_exception_handler(self) -> _ExceptionHandler | None:
        """Return the exception handler, or None for the default."""
        return self._exception_handler

    def set_exception_handler(self, handler: _ExceptionHandler | None) -> None:
        """Set handler(loop, context) as the exception handler; None restores the default."""
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        """Log ``context`` (message, exception and the rest) on the 'asyncio' logger."""
        message = context.get("message") or "Unhandled exception in event loop"
        exception = context.get("exception")
        if exception is not None:
            exc_info: Any = (type(exception), exception, exception.__traceback__)
        else:
            exc_info = False
        if (
            "source_traceback" not in context
            and self._current_handle is not None
            and self._current_handle._source_traceback
        ):
            context["handle_traceback"] = self._current_handle._source_traceback
        lines = [message]
        for key in sorted(context):
            if key in ("message", "exception"):
                continue
            value = context[key]
            if key == "source_traceback":
                value = "Object created at (most recent call last):\n" + "".join(
                    traceback.format_list(value)
                ).rstrip()
            elif key == "handle_traceback":
                value = "Handle created at (most recent call last):\n" + "".join(
                    traceback.format_list(value)
                ).rstrip()
            else:
                value = repr(value)
            lines.append(f"{key}: {value}")
        logger.error("\n".join(lines), exc_info=exc_info)

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        """Pass ``context`` to the exception handler (or the default one).  An error in a
        custom handler is logged by the default handler, never raised."""
        if self._exception_handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error("Exception in default exception handler", exc_info=True)
            return
        try:
            self._exception_handler(self, context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            # (asyncio passes any context on to the handler: what is not a dict, a
            # handler's bad input, must still be logged here, not raise a second error)
            original = context.get("exception") if isinstance(context, dict) else None
            if exc.__context__ is None and isinstance(original, BaseException) \
                    and original is not exc:
                # Where the error was caught in C (the accelerator's dispatch), the handler
                # did not run inside an except block: chain the error it was reporting, so
                # the log shows both, as where the handler runs in Python's except.
                exc.__context__ = original
            try:
                self.default_exception_handler(
                    {
                        "message": "Unhandled error in exception handler",
                        "exception": exc,
                        "context": context,
                    }
                )
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error(
                    "Exception in default exception handler while handling an "
                    "unexpected error in custom exception handler",
                    exc_info=True,
                )

    # ---------------------------------------------------------------- fork

    def _after_fork(self) -> None:
        """Make the loop usable in a forked child: libuv re-creates its epoll set, which
        the child would otherwise share with its parent (each stealing the other's events),
        and so does the fd set, whose fresh epoll set gets the child's registrations again."""
        if not self._closed:
            lib.uvc_loop_fork(self._uv)
            self._fd_watching_after_fork()


_live_loops: weakref.WeakSet[CoreLoop] = weakref.WeakSet()

# stats()'s names for the event kinds of the C core (csrc/*.h).
_EVENT_NAMES = {
    getattr(lib, "UVC_EV_" + name.upper()): name
    for name in ("read", "eof", "read_error", "write_done", "shutdown", "connect", "accept",
                 "closed", "poll", "signal", "exit", "dns", "udp_recv", "udp_send", "fs",
                 "fd_lost", "readable")
}


def _after_fork_in_child() -> None:
    _wakeup_fd.after_fork_in_child()
    for loop in list(_live_loops):
        loop._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_accel = _accelerated.accel
if _accel is not None:
    # Each C Future asks its loop get_debug() when it is made: in C, no Python frame.
    setattr(CoreLoop, "get_debug",  # noqa: B010  (mypy: no assigning to a method)
            _accel.SlotMethod(CoreLoop.get_debug, CoreLoop, "_debug"))
# The loop's methods bound to the accelerator's (instance attributes) on the fast path.
# _run_handles and _run_once are the loop's own: Python frames less per iteration.
_ACCEL_METHODS = {name: name for name in (
    "call_soon", "call_soon_threadsafe", "call_later", "call_at", "create_future",
    "create_task")}
_ACCEL_METHODS["_run_handles"] = "run_handles"
_ACCEL_METHODS["_run_once"] = "run_once"


# The accelerator's slow paths: the Python code, taking the loop first (see accel.c).
# A method fetched before set_debug(True) stays the accelerator's and comes here in debug
# mode: each path takes its own frame out of the traceback it records, so that
# source_traceback ends at the caller, as asyncio's does (the frames of asyncio's code
# inside are already taken out by the methods it calls).
def _without_own_frame(result: _T, name: str) -> _T:
    stack = getattr(result, "_source_traceback", None)
    if stack:  # debug mode only
        for i in range(len(stack) - 1, -1, -1):
            if stack[i].name == name and stack[i].filename == __file__:
                del stack[i]
                break
    return result


def _call_soon_py(loop: CoreLoop, callback: Callable[..., object], args: tuple[Any, ...],
                  context: Context | None) -> Handle:
    return _without_own_frame(CoreLoop.call_soon(loop, callback, *args, context=context),
                              "_call_soon_py")


def _call_soon_threadsafe_py(loop: CoreLoop, callback: Callable[..., object],
                             args: tuple[Any, ...], context: Context | None) -> Handle:
    return _without_own_frame(
        CoreLoop.call_soon_threadsafe(loop, callback, *args, context=context),
        "_call_soon_threadsafe_py")


def _call_later_py(loop: CoreLoop, delay: float, callback: Callable[..., object],
                   args: tuple[Any, ...], context: Context | None) -> TimerHandle:
    return _without_own_frame(
        CoreLoop.call_later(loop, delay, callback, *args, context=context), "_call_later_py")


def _call_at_py(loop: CoreLoop, when: float, callback: Callable[..., object],
                args: tuple[Any, ...], context: Context | None) -> TimerHandle:
    return _without_own_frame(CoreLoop.call_at(loop, when, callback, *args, context=context),
                              "_call_at_py")


def _call_python(loop: CoreLoop, method: str, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Handle:
    # A call the accelerator does not take apart (keyword arguments other than context=,
    # as call_later(delay=1, callback=cb), or too few arguments) binds as asyncio's does.
    result: Handle = getattr(CoreLoop, method)(loop, *args, **kwargs)
    return _without_own_frame(result, "_call_python")


def _callback_failed(loop: CoreLoop, handle: _Handle, exc: BaseException) -> bool:
    """The accelerator's batch ran ``handle``, which raised ``exc``: True when it is an
    interruption, which leaves the loop (the handle kept if it had not begun)."""
    how = interruption(exc, 0, callees=(handle._callback,))
    if how:
        if how == INTERRUPT_BEFORE_START:
            loop._unstarted = handle
        return True
    loop.call_exception_handler(callback_error_context(handle, exc))
    return False


def _event_failed_at(loop: CoreLoop, owner: Any, kind: int, exc: BaseException,
                     index: int, count: int, read: bytes | None) -> bool:
    """The accelerator's dispatch handed out event ``index`` of ``count``, which raised:
    True when ``exc`` is an interruption, which leaves the dispatch (see
    _keep_interrupted_event), else the owner hears of its failure."""
    how = interruption(exc, 0, callees=loop._event_callees(owner))
    if not how:
        loop._event_failed(owner, kind, exc)
        return False
    loop._keep_interrupted_event(how, None, (index + 1) * WORDS, count * WORDS, owner, read)
    loop._event_cut_short(owner, kind, how, exc)
    return True


def _keep_undispatched_from(loop: CoreLoop, first: int, count: int) -> None:
    loop._keep_undispatched(None, first * WORDS, count * WORDS)


_ACCEL_FALLBACKS: dict[str, Any] = {
    "call_soon": _call_soon_py,
    "call_soon_threadsafe": _call_soon_threadsafe_py,
    "call_later": _call_later_py,
    "call_at": _call_at_py,
    "call_python": _call_python,
    "callback_failed": _callback_failed,
    "event_failed": _event_failed_at,
    "keep_undispatched": _keep_undispatched_from,
    "handle_signal": lambda loop, sig: loop._handle_signal(sig),
    "flush_new_timers": lambda loop: loop._flush_new_timers(),
    "poster_yield": lambda loop: loop._poster_yield(),
    "future_type": futures.Future,
    "task_type": tasks.Task,
    "run_once": lambda loop: CoreLoop._run_once(loop),
    "uvc_run_once_address": int(ffi.cast("uintptr_t", ffi.addressof(lib, "uvc_run_once"))),
    "compact_min_cancelled": _COMPACT_MIN_CANCELLED,
    "max_timeout_ms": _MAX_TIMEOUT_MS,
}

def _lines_calling(function: Any, names: set[str]) -> frozenset[int]:
    """The lines of ``function`` that load any of ``names`` (the calls there)."""
    lines = set()
    line = 0
    for instr in dis.get_instructions(function):
        if instr.starts_line:
            line = instr.starts_line
        if instr.argval in names and instr.opname.startswith("LOAD_"):
            lines.add(line)
    return frozenset(lines)


# Where the pure-Python dispatch takes a read with a C call, before it hands the read on:
# an interruption landing as such a call returns keeps the read (see interruption()).
_DISPATCH_TAKING_LINES = _lines_calling(CoreLoop._dispatch, {"_uvc_stream_recv", "_buffer"})

# From this size the pure-Python dispatch makes a read's bytes with ffi.buffer(ptr, n)[:]:
# on PyPy 100 KiB take 15 us so against 28 us through a slice of the arena's buffer (which
# stays faster for small reads, 0.9 against 1.6 us at 1 KiB).
_BIG_READ = 16384
_buffer = ffi.buffer
_RECV_MAX = lib.UVC_RECV_MAX
_UV_EAGAIN = -errno.EAGAIN  # libuv's errors are negated errnos on Unix
_uvc_stream_recv = lib.uvc_stream_recv
_new_object = object.__new__
_copy_context = contextvars.copy_context
_uvc_run_once = lib.uvc_run_once
_uvc_hold_writes = lib.uvc_hold_writes
_unpack = ffi.unpack


def _set_result_unless_done(fut: asyncio.Future[_T], result: _T) -> None:
    if not fut.done():
        fut.set_result(result)


def _set_exception_unless_done(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
