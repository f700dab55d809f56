"""libuv error codes as the OSError subclasses asyncio users expect."""
from __future__ import annotations

import errno
import os

from ._uv import ffi, lib


def uv_error(code: int, what: str | None = None) -> OSError:
    """An OSError for a negative libuv error code.

    On Unix a libuv error is a negated errno, so OSError's constructor picks the subclass
    (ConnectionResetError, BrokenPipeError, ...) asyncio code tests for.
    """
    err = -code
    if err in errno.errorcode:
        msg = os.strerror(err)
    else:
        msg = ffi.string(lib.uvc_strerror(code)).decode()
    if what:
        msg = f"{what}: {msg}"
    return OSError(err, msg)


def check(code: int, what: str | None = None) -> int:
    """Return code, or raise the OSError a negative libuv code stands for."""
    if code < 0:
        raise uv_error(code, what)
    return code
