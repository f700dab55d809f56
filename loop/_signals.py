"""Loop methods: add_signal_handler / remove_signal_handler, and Python's signal wakeup fd
pointed at a loop, so a signal (Ctrl-C included) interrupts a loop blocked in libuv."""
from __future__ import annotations

import contextvars
import dis
import errno
import functools
import logging
import os
import signal
import sys
import threading
import warnings
import weakref
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Callable

from ._handles import Handle, is_coroutine_callback
from ._uv import lib

if TYPE_CHECKING:
    import collections

    from typing_extensions import TypeVarTuple, Unpack

    _Ts = TypeVarTuple("_Ts")

logger = logging.getLogger("asyncio")


def _sighandler_noop(signum: int, frame: FrameType | None) -> None:
    """Python-level handler for signals the loop handles: the C-level handler already wrote
    the signal number to the wakeup fd, which is what the loop reacts to."""


def _file_identity(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


# How an exception that reached one of the loop's catch-alls (the events' dispatch, the
# ready queue's batch) came to be: see interruption().
OWN = 0  # the code that was called raised it: its failure, logged as asyncio logs it
INTERRUPT = 1  # Ctrl-C, SystemExit, or a signal handler's exception: it leaves the loop
INTERRUPT_BEFORE_START = 2  # the same, landed on the first instruction of the called code
INTERRUPT_TAKING = 3  # the same, landed in the catching frame as it took what it would hand on
INTERRUPT_INSIDE = 4  # the same, landed inside the called code once it had begun: cut short


def _handler_code(handler: object) -> Any:
    """The code object a Python-level signal handler runs (None for SIG_DFL, SIG_IGN,
    a handler in C); methods, functools.partial and callable objects are followed."""
    for _ in range(8):
        code = getattr(handler, "__code__", None)
        if code is not None:
            return code
        if hasattr(handler, "__func__"):
            handler = handler.__func__
        elif isinstance(handler, functools.partial):
            # partial(context.run, f), how transports call their protocols: f runs
            run = getattr(handler.func, "__name__", None) == "run" and handler.args
            handler = handler.args[0] if run else handler.func
        elif callable(handler) and not isinstance(handler, (int, type)):
            handler = type(handler).__call__
        else:
            return None
    return None


def interruption(exc: BaseException, callee_depth: int,
                 taking_lines: frozenset[int] = frozenset(), callees: tuple[object, ...] = ()
                 ) -> int:
    """Tell a loop's catch-all whether ``exc`` is the failure of the code it called (OWN)
    or an interruption that must leave the loop: Ctrl-C's KeyboardInterrupt, SystemExit,
    or whatever a Python signal handler raised (INTERRUPT).

    A signal handler runs wherever the interpreter next looks for signals: between two of
    the loop's own steps as often as inside a callback.  asyncio's loop lets what lands in
    its own code out of run_forever(); uvcffi's dispatch and batch loops sit in one try per
    batch, so without this check pytest-timeout's Failed or an alarm's TimeoutError became
    a logged "callback failed" (or a transport's fatal error) and the run went on, hung.

    INTERRUPT_BEFORE_START: the interruption landed on the first instruction of the called
    code (``callee_depth`` traceback entries below the catching frame): the callback did
    nothing, and the caller keeps it for the next run instead of losing it.  ``callees``
    are what the caller may have called: the frame must run one's code, else code in C in
    between may have acted already (a Task's step takes an exception its coroutine raised
    at its first instruction for the task's result; a protocol in Cython may have buffered
    the data it then hands to a Python callback).  A Python Context.run (PyPy's) in
    between has done nothing that lasts.
    INTERRUPT_TAKING: it landed in the catching frame itself (``callee_depth`` 1), on one of
    ``taking_lines``: just after a C call that took the data the frame was about to hand
    on (the interpreter looks for signals as a call returns), which the caller keeps.
    INTERRUPT_INSIDE: it landed in the called code (``callee_depth`` >= 0) after it began:
    that code was cut short (a transport makes it its protocol callback's failure).
    INTERRUPT: anywhere else (the catching frame, between two calls)."""
    entries = []
    tb = exc.__traceback__
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    codes = set()
    for sig in signal.valid_signals():
        try:
            code = _handler_code(signal.getsignal(sig))
        except (OSError, ValueError):
            continue
        if code is not None:
            codes.add(code)
    landed = -1
    for depth, entry in enumerate(entries):
        if entry.tb_frame.f_code in codes:
            landed = depth - 1  # the frame the handler interrupted
            break
    else:
        if not isinstance(exc, (SystemExit, KeyboardInterrupt)):
            return OWN
        landed = len(entries) - 1  # raised where it landed (default_int_handler is C)
    if (0 <= callee_depth <= landed and _at_entry(entries[landed])
            and all(entries[d].tb_frame.f_code is _CONTEXT_RUN
                    for d in range(callee_depth, landed))
            and (entries[landed].tb_frame.f_code is _CONTEXT_RUN
                 or any(entries[landed].tb_frame.f_code is _handler_code(c) for c in callees))):
        return INTERRUPT_BEFORE_START
    if landed == 0 and callee_depth == 1 and entries[0].tb_lineno in taking_lines:
        return INTERRUPT_TAKING
    if 0 <= callee_depth <= landed and entries[landed].tb_frame.f_code not in _WRAPPERS:
        return INTERRUPT_INSIDE
    return INTERRUPT


def leave_if_interrupted(exc: BaseException) -> None:
    """Raise ``exc`` again if a signal handler raised it (see interruption()): for a
    transport that has just made it the failure of the protocol callback it landed in.

    asyncio's transports make any exception but an exit that a protocol callback raises
    the callback's failure (the transport's fatal error, or a report), and go on.  Whatever
    a signal handler raises there (pytest-timeout's Failed, an alarm's TimeoutError) is
    that too: the callback was cut short, so the transport it belongs to is no longer
    sound, and asyncio's fate for it (closed, connection_lost(exc)) is the right one.  But
    the exception is also the program's, not the protocol's: it leaves the loop, as it
    does wherever else it lands.  asyncio swallows it and runs on (a timed-out test then
    hangs instead of failing)."""
    if exc.__traceback__ is not None and interruption(exc, -1):
        raise exc


def failed_a_transport(exc: BaseException) -> bool:
    """Whether ``exc`` comes out of leave_if_interrupted: a transport made it its failure
    already (a raise keeps the traceback it had and adds the raising frame)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is _LEAVE_IF_INTERRUPTED:
            return True
        tb = tb.tb_next
    return False


_LEAVE_IF_INTERRUPTED = leave_if_interrupted.__code__


_RESUME = dis.opmap.get("RESUME")  # CPython 3.11+: where a function's own code begins
# PyPy's Context.run is Python code, a frame between the loop and what it runs
_CONTEXT_RUN = getattr(contextvars.Context.run, "__code__", None)
# Frames that only pass a call on (PyPy's Context.run and functools.partial are Python): an
# interruption landing in one has not cut the code they call short (not begun, or done).
_WRAPPERS = frozenset(code for code in (
    _CONTEXT_RUN, getattr(functools.partial.__call__, "__code__", None)) if code is not None)


def _at_entry(entry: TracebackType) -> bool:
    """Whether ``entry`` stopped before its function's own code began: at its first
    instruction, or (CPython 3.11+) at RESUME, after the ops that set up cells and free
    variables (a closure) or make the generator."""
    lasti = entry.tb_lasti
    if lasti <= 0:
        return True
    if _RESUME is None:
        return False
    code = entry.tb_frame.f_code.co_code
    for offset in range(0, len(code), 2):
        if code[offset] == _RESUME:
            return lasti <= offset
    return False


class _Claim:
    __slots__ = ("loop", "running")

    def __init__(self, loop: weakref.ref[SignalMethods], running: bool) -> None:
        self.loop = loop
        self.running = running


class _WakeupFd:
    """Which of the process's loops Python's signal wakeup fd points to.

    There is one wakeup fd for the process, and any number of loops: saving and restoring it
    around each loop's use assumes they nest, which they need not (a loop with a handler
    closes while another runs).  So the loops that want it are kept here, and whenever that
    set changes the fd goes to the one that needs it most: the loop running in the main
    thread (the newest run, for runs nested by hand), else a loop with signal handlers.
    When none wants it, it goes back to the fd that was there before, if that fd is still
    the same open file.  Loops in other threads never run set_wakeup_fd (Python refuses it
    there); what they change is applied by the next change made from the main thread.
    """

    def __init__(self) -> None:
        # Reentrant: a Python-level signal handler may close a loop in the middle of a change.
        self._lock = threading.RLock()
        self._claims: list[_Claim] = []  # oldest first
        self._owner: weakref.ref[SignalMethods] | None = None
        # The fd set_wakeup_fd was last given by us (None: not ours now), and the fd we found
        # there, to be put back, with the (st_dev, st_ino) it had then.
        self._installed: int | None = None
        self._previous = -1
        self._previous_identity: tuple[int, int] | None = None

    def claim(self, loop: SignalMethods, want: bool) -> None:
        """Record whether ``loop`` wants the wakeup fd now, and move the fd if need be."""
        with self._lock:
            claim = next((c for c in self._claims if c.loop() is loop), None)
            running = loop._in_main_thread
            if not want:
                if claim is not None:
                    self._claims.remove(claim)
            elif claim is None:
                self._claims.append(_Claim(weakref.ref(loop), running))
            elif running and not claim.running:
                # A run starting is the newest claim, so that a run nested in another's
                # callback hands the fd back to the outer one when it stops.
                self._claims.remove(claim)
                claim.running = True
                self._claims.append(claim)
            else:
                claim.running = running
            self._move(self._elect())

    def _elect(self) -> SignalMethods | None:
        candidates = []
        for claim in list(self._claims):
            loop = claim.loop()
            if loop is None:  # collected unclosed: its __del__ closes it (or has)
                self._claims.remove(claim)
            elif loop._signal_fd >= 0:
                candidates.append((claim, loop))
        for claim, loop in reversed(candidates):
            if claim.running:
                return loop
        owner = self._owner() if self._owner is not None else None
        # Among idle loops with handlers, the holder keeps it: no needless set_wakeup_fd.
        if any(loop is owner for _, loop in candidates):
            return owner
        return candidates[-1][1] if candidates else None

    def _move(self, loop: SignalMethods | None) -> None:
        if loop is None:
            if self._installed is not None:
                self._give_back()
            return
        # Set even when the record says this fd is in place already: it may have been
        # reset since (asyncio 3.12+ resets it in every forked child; a library may), and
        # a loop that went by its record then never got its signals again.  (asyncio's
        # add_signal_handler sets its fd each time, too.)
        try:
            found = signal.set_wakeup_fd(loop._signal_fd, warn_on_full_buffer=False)
        except (ValueError, OSError):
            # not the main thread (the loop's signals wait for a change made there)
            if loop._signal_fd == self._installed:
                self._owner = weakref.ref(loop)
            return
        if found != self._installed:
            # We held nothing, or someone else set the fd since we did: theirs is what goes
            # back when no loop wants the fd any more.
            self._previous = found
            self._previous_identity = _file_identity(found) if found >= 0 else None
        self._installed = loop._signal_fd
        self._owner = weakref.ref(loop)

    def _give_back(self) -> None:
        previous = self._previous
        if previous >= 0 and _file_identity(previous) != self._previous_identity:
            # Closed since we took its place, its number maybe reused by another file:
            # signal bytes would go to whoever has it now.
            previous = -1
        try:
            found = signal.set_wakeup_fd(previous)
        except (ValueError, OSError):
            try:
                found = signal.set_wakeup_fd(-1)
            except (ValueError, OSError) as exc:
                logger.info("set_wakeup_fd(-1) failed: %s", exc)
                return  # not the main thread: the next change made there gives it back
        if found != self._installed:
            # Someone else set the fd over ours: it is theirs, not ours to give back.
            try:
                signal.set_wakeup_fd(found)
            except (ValueError, OSError):
                pass
        self._installed = None
        self._owner = None
        self._previous = -1
        self._previous_identity = None

    def forward(self, loop: SignalMethods, sig: int) -> None:
        """Pass a signal that reached ``loop``, which has no handler for it, to the newest
        other loop that has one.

        The fd follows the running loop, so a signal an idle loop handles arrives in the
        running one; written to the idle loop's own fd, it is handled when that loop runs,
        as if that loop had held the wakeup fd.
        """
        with self._lock:  # held while writing: a loop leaves the claims before its fd closes
            for claim in reversed(self._claims):
                other = claim.loop()
                if other is None or other is loop or sig not in other._signal_handlers:
                    continue
                try:
                    os.write(other._signal_fd, bytes((sig,)))
                except OSError:
                    pass  # full: dropped, as Python drops the byte on a full wakeup fd
                return


    def after_fork_in_child(self) -> None:
        """A forked child: the lock may have been held by a thread that the child does not
        have (a loop starting or stopping in it), and would be held for good: the child
        gets a new one.  The child's loops keep their fd numbers (see uvc_loop_fork), so the
        record stays true; a change that thread had half made is finished by the child's
        next one, which elects the fd's loop afresh."""
        self._lock = threading.RLock()


_wakeup_fd = _WakeupFd()


class SignalMethods:
    """Mixed into CoreLoop: signal handlers and the wakeup fd."""

    if TYPE_CHECKING:  # the core loop's (loop/_core.py), which this is mixed into
        _uv: Any
        _closed: bool
        _ready: collections.deque[Any]

        def _check_closed(self) -> None: ...

    def _init_signals(self) -> None:
        self._signal_handlers: dict[int, Handle] = {}
        self._signal_fd: int = lib.uvc_signal_fd(self._uv)  # -1 if its socketpair failed
        self._in_main_thread = False

    def _teardown_signals(self) -> None:
        if not sys.is_finalizing():
            for sig in list(self._signal_handlers):
                self.remove_signal_handler(sig)
        elif self._signal_handlers:
            warnings.warn(
                f"Closing the loop {self!r} on interpreter shutdown stage, "
                "skipping signal handlers removal",
                ResourceWarning,
                source=self,
                stacklevel=1,  # warnings.warn's default, said explicitly (ruff B028)
            )
            self._signal_handlers.clear()
        self._sync_wakeup_fd(force_off=True)

    def _sync_wakeup_fd(self, force_off: bool = False) -> None:
        """Tell the process's wakeup fd whether this loop needs it now.

        The loop needs it while signal handlers are installed, and while it runs in the main
        thread: libuv retries an epoll_wait interrupted by a signal, so without the wakeup
        byte a Ctrl-C would wait for the next I/O event before KeyboardInterrupt is raised.
        """
        want = not force_off and not self._closed and (
            bool(self._signal_handlers) or self._in_main_thread
        )
        _wakeup_fd.claim(self, want)

    def _check_signal(self, sig: int) -> None:
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def add_signal_handler(self, sig: int, callback: Callable[[Unpack[_Ts]], object],
                           *args: Unpack[_Ts]) -> None:
        """Call callback(*args) in the loop when signal ``sig`` arrives.

        Raises RuntimeError outside the main thread or for a signal that cannot be caught,
        ValueError/TypeError for an invalid signal, TypeError for a coroutine callback.
        """
        if is_coroutine_callback(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("set_wakeup_fd only works in main thread of the main interpreter")
        handle = Handle(callback, args, self, None)  # type: ignore[arg-type]  # a loop
        self._signal_handlers[sig] = handle
        self._sync_wakeup_fd()
        try:
            signal.signal(sig, _sighandler_noop)
            signal.siginterrupt(sig, False)
        except (OSError, RuntimeError, ValueError) as exc:
            del self._signal_handlers[sig]
            self._sync_wakeup_fd()
            if isinstance(exc, OSError) and exc.errno != errno.EINVAL:  # cannot be caught
                raise
            raise RuntimeError(f"sig {sig:d} cannot be caught") from None

    def remove_signal_handler(self, sig: int) -> bool:
        """Remove the handler of ``sig`` (restoring the default); True if there was one."""
        self._check_signal(sig)
        try:
            del self._signal_handlers[sig]
        except KeyError:
            return False
        handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from None
            raise
        self._sync_wakeup_fd()
        return True

    def _handle_signal(self, sig: int) -> None:
        handle = self._signal_handlers.get(sig)
        if handle is None:
            _wakeup_fd.forward(self, sig)
            return
        if handle._cancelled:
            self.remove_signal_handler(sig)
        else:
            self._ready.append(handle)
