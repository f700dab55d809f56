"""uvcffi: an asyncio event loop whose I/O runs on libuv, bound with cffi.

    asyncio.run(main(), loop_factory=uvcffi.new_event_loop)   # Python 3.12+
    uvcffi.run(main())
    uvcffi.install(); asyncio.run(main())
    python -m uvcffi app.py
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._loop import Loop
from ._policy import EventLoopPolicy, install, new_event_loop, run

__all__ = ["Loop", "EventLoopPolicy", "install", "new_event_loop", "run", "libuv_version",
           "instrument"]


if TYPE_CHECKING:
    from ._instrument import Instrumentation


def instrument(meter_provider: Any = None, tracer_provider: Any = None) -> Instrumentation:
    """Export the loops' stats() through OpenTelemetry (see uvcffi._instrument)."""
    from ._instrument import instrument as _instrument

    return _instrument(meter_provider, tracer_provider)


def libuv_version() -> str:
    """The version of the libuv uvcffi runs on, as "major.minor.patch"."""
    from ._uv import lib

    v = lib.uvc_libuv_version()
    return f"{v >> 16}.{(v >> 8) & 0xFF}.{v & 0xFF}"
__version__ = "0.1.0"
