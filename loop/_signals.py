"""Loop methods: add_signal_handler / remove_signal_handler, and Python's signal wakeup fd
pointed at the loop, so a signal (Ctrl-C included) interrupts a loop blocked in libuv."""
from __future__ import annotations

import errno
import logging
import signal
import sys
import threading
import warnings
from types import FrameType
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


class SignalMethods:
    """Mixed into CoreLoop: signal handlers and the wakeup fd."""

    if TYPE_CHECKING:  # the core loop's (loop/_core.py), which this is mixed into
        _uv: Any
        _closed: bool
        _ready: collections.deque[Any]

        def _check_closed(self) -> None: ...

    def _init_signals(self) -> None:
        self._signal_handlers: dict[int, Handle] = {}
        self._wakeup_installed = False
        self._wakeup_previous = -1
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
        """Point Python's signal wakeup fd at the loop while it needs it.

        The loop needs it while signal handlers are installed, and while it runs in the main
        thread: libuv retries an epoll_wait interrupted by a signal, so without the wakeup
        byte a Ctrl-C would wait for the next I/O event before KeyboardInterrupt is raised.
        """
        want = not force_off and not self._closed and (
            bool(self._signal_handlers) or self._in_main_thread
        )
        if want == self._wakeup_installed:
            return
        if want:
            try:
                prev = signal.set_wakeup_fd(lib.uvc_signal_fd(self._uv), warn_on_full_buffer=False)
            except (ValueError, OSError):
                return  # not the main thread: only Python's own delivery remains
            self._wakeup_previous = prev
            self._wakeup_installed = True
        else:
            try:
                signal.set_wakeup_fd(self._wakeup_previous)
            except (ValueError, OSError):
                try:
                    signal.set_wakeup_fd(-1)
                except (ValueError, OSError) as exc:
                    logger.info("set_wakeup_fd(-1) failed: %s", exc)
            self._wakeup_installed = False
            self._wakeup_previous = -1

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
            return
        if handle._cancelled:
            self.remove_signal_handler(sig)
        else:
            self._ready.append(handle)
