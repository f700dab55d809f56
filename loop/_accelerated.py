"""Whether this process runs the CPython accelerator (uvcffi._accel, csrc/cpython/accel.c).

``accel`` is the module on CPython, None on PyPy, when it was not built, or when
UVCFFI_PURE_PYTHON is set (the test command runs the suite on CPython both ways).  The loop
core and the transports take their fast paths from here; the Python code they replace stays
and is what PyPy runs.
"""
from __future__ import annotations

import errno
import os
import sys
from types import ModuleType
from typing import Any, Callable

from ._errors import uv_error
from ._uv import ffi, lib


def _address(name: str) -> int:
    return int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))


def _load() -> ModuleType | None:
    if sys.implementation.name != "cpython" or os.environ.get("UVCFFI_PURE_PYTHON"):
        return None
    try:
        from . import _accel as module
    except ImportError:  # a tree built by build_ffi.py alone
        return None
    # stream_write reads the loop pointer out of cffi's cdata objects: show it both kinds
    # of cdata a loop pointer comes as (ffi.gc's, and a plain one) and where they point.
    probe = lib.uvc_loop_new()
    try:
        owned = ffi.gc(probe, lib.uvc_loop_free)
        plain = ffi.cast("uvc_loop_t *", probe)
        module.setup_writes(owned, plain, int(ffi.cast("uintptr_t", probe)), lib.uvc_write,
                            _address("uvc_write"))
        module.setup_sock(_address("uvc_sock_recv"), _address("uvc_recv_buffer"))
        module.setup_fdset(_address("uvc_fdset_ctl"))
        module.setup_copy(_address("uvc_arena_copy"))
        module.setup_read_into(_address("uvc_read_into"))
    except TypeError:
        return None  # a cffi whose objects the accelerator does not know
    finally:
        del owned
    return module


accel = _load()

# The stream transports' write: lib.uvc_write's arguments either way.  The accelerator
# takes a contiguous bytearray or memoryview as it is; cffi needs ffi.from_buffer of it.
stream_write: Callable[[Any, int, Any, int], int] = (
    accel.stream_write if accel is not None else lib.uvc_write
)


def _byte_view(view: memoryview) -> memoryview:
    """A contiguous memoryview as one of bytes, whose len() counts bytes, as cffi's does."""
    return view if view.ndim == 1 and view.format == "B" else view.cast("B")


write_buffer: Callable[[Any], Any] = _byte_view if accel is not None else ffi.from_buffer

# A BufferedProtocol's read, from the arena into its buffer (None: not accelerated).
arena_copy: Callable[[Any, int, int, Any], bool] | None = (
    accel.arena_copy if accel is not None else None
)


def _read_into(uv: Any, slot: int, buf: Any, _from_buffer: Callable[..., Any] = ffi.from_buffer,
               _read: Callable[[Any, int, Any, int], int] = lib.uvc_read_into) -> int:
    """A read-into-mode read (csrc/uvc_stream.h) straight into the writable buffer
    ``buf``: the bytes read or a negative uv error."""
    dst = _from_buffer(buf, require_writable=True)  # its len() counts bytes
    n = len(dst)
    if not n:
        raise RuntimeError("get_buffer() returned an empty buffer")
    return _read(uv, slot, dst, n)


# A BufferedProtocol's read, straight into its buffer.
read_into: Callable[[Any, int, Any], int] = accel.read_into if accel is not None else _read_into


def _sock_recv(uv: Any, fd: int, n: int, _recv: Callable[[Any, int, int], int] = lib.uvc_sock_recv,
               _again: int = -errno.EAGAIN) -> bytes | None:
    """sock_recv's receive (csrc/uvc_sock.h): bytes of what arrived, None for nothing yet."""
    r = _recv(uv, fd, n)
    if r >= 0:
        return ffi.buffer(lib.uvc_recv_buffer(uv), r)[:]
    if r == _again:
        return None
    raise uv_error(r)


sock_recv: Callable[[Any, int, int], bytes | None] = (
    accel.sock_recv if accel is not None else _sock_recv
)

# The fd set's registration call (csrc/uvc_fdset.h), lib.uvc_fdset_ctl's arguments.
fdset_ctl: Callable[[Any, int, int, int], int] = (
    accel.fdset_ctl if accel is not None else lib.uvc_fdset_ctl
)
