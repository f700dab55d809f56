"""Type stub of uvcffi._accel, the CPython-only accelerator (csrc/cpython/accel.c).

Written by hand after the module's method tables (module_methods, Accel_methods); cffi
cdata arguments (the loop's ``uvc_loop_t *``, lib.uvc_write) are ``Any``: cffi has no
type stubs.
"""
from asyncio import Handle, TimerHandle
from contextvars import Context
from typing import Any, Callable

def setup_copy(uvc_arena_copy_address: int, /) -> None: ...
def arena_copy(uv: Any, off: int, total: int, buf: Any, /) -> bool:
    """A read of ``total`` bytes at ``off`` in the arena copied into ``buf``; False if
    ``buf`` is not a writable byte buffer that holds it."""

def setup_read_into(uvc_read_into_address: int, /) -> None: ...
def read_into(uv: Any, slot: int, buf: Any, /) -> int:
    """One read of the stream in ``slot`` into the writable buffer ``buf``: the bytes
    read or a negative uv error (csrc/uvc_stream.h, uvc_read_into)."""

def setup_fdset(uvc_fdset_ctl_address: int, /) -> None: ...
def fdset_ctl(uv: Any, fd: int, old: int, events: int, /) -> int:
    """lib.uvc_fdset_ctl, called directly."""

def setup_sock(uvc_sock_recv_address: int, uvc_recv_buffer_address: int, /) -> None: ...
def sock_recv(uv: Any, fd: int, n: int, /) -> bytes | None:
    """The bytes received, None for nothing yet (csrc/uvc_sock.h); OSError on error."""

def setup_writes(
    gc_cdata: Any, plain_cdata: Any, address: int, lib_uvc_write: Callable[..., int],
    uvc_write_address: int, /,
) -> None: ...
def stream_write(uv: Any, slot: int, data: Any, n: int, /) -> int:
    """lib.uvc_write(uv, slot, data, n) for a bytes-like ``data``, without the cffi call."""

class SlotMethod:
    """A method without arguments returning the slot ``name`` of ``cls``'s instances, in
    C; it stands in ``cls`` for ``func``, which it calls otherwise."""

    __wrapped__: Callable[[Any], Any]
    def __init__(self, func: Callable[[Any], Any], cls: type, name: str, /) -> None: ...
    def __call__(self, obj: Any, /) -> Any: ...
    def __get__(self, obj: Any, objtype: type | None = None) -> Any: ...

class StreamWrite:
    """A stream transport's write(), accelerated: stands in ``cls`` for its Python
    ``write`` (``func``), which it calls for anything but bytes on an unblocked stream."""

    __wrapped__: Callable[[Any, Any], None]
    def __init__(self, func: Callable[[Any, Any], None], cls: type, /) -> None: ...
    def __call__(self, transport: Any, data: Any, /) -> None: ...
    def __get__(self, obj: Any, objtype: type | None = None) -> Any: ...

class Accel:
    """The accelerated scheduling and dispatch paths of one uvcffi loop."""

    def __init__(
        self, loop: Any, loop_type: type, handle_type: type[Handle],
        timer_type: type[TimerHandle], uv_address: int, wakeup_address: int,
        fallback: dict[str, Callable[..., Any]], /,
    ) -> None: ...
    def call_soon(
        self, callback: Callable[..., object], *args: Any, context: Context | None = None
    ) -> Handle: ...
    def call_soon_threadsafe(
        self, callback: Callable[..., object], *args: Any, context: Context | None = None
    ) -> Handle: ...
    def call_later(
        self, delay: float, callback: Callable[..., object], *args: Any,
        context: Context | None = None,
    ) -> TimerHandle: ...
    def call_at(
        self, when: float, callback: Callable[..., object], *args: Any,
        context: Context | None = None,
    ) -> TimerHandle: ...
    def handle(self, callback: Callable[..., object], args: tuple[Any, ...], /) -> Handle:
        """An asyncio.Handle, not scheduled."""

    def run_handles(self, next_handle: Callable[[], Handle], ntodo: int, /) -> None:
        """Run a batch of ``ntodo`` ready handles taken with ``next_handle()``."""

    def create_task(self, coro: Any, *, name: str | None = None,
                    context: Context | None = None) -> Any:
        """asyncio's create_task()."""
    def create_future(self) -> Any:
        """An asyncio.Future attached to the loop."""
    def run_once(self) -> None:
        """One iteration of the loop (loop/_core.py's _run_once), in C when it is an
        ordinary one."""
    def dispatch(self, n: int, /) -> None:
        """Hand the last run's ``n`` events to their slot owners."""
