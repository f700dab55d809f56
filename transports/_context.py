"""Running a protocol callback in its transport's context.

asyncio's rule: every protocol callback runs in the context the transport was created in,
never in the context of whoever happened to call into the transport.  Callbacks that the
loop starts (reads, write completions, EOF) just ``context.run(...)`` them.  A few callbacks
happen synchronously inside a call the application made: pause_writing() inside write(),
resume_writing() inside set_write_buffer_limits(), error_received() inside sendto().  The
caller may already be running in the transport's own context (a write() from
data_received, which the transport entered itself), and a contextvars.Context cannot be
entered twice ("cannot enter context: ... is already entered"), so those go through
``run_in_context``.
"""
from __future__ import annotations

from contextvars import Context
from typing import Any, Callable, TypeVar

_T = TypeVar("_T")

__all__ = ["run_in_context", "notify_protocol"]


def _noop() -> None:
    pass


def run_in_context(context: Context, callback: Callable[..., _T], *args: Any) -> _T:
    """``callback(*args)`` in ``context``: directly when ``context`` is the context running
    now, else through ``context.run``.

    The check enters the context once with a no-op: Context.run raises RuntimeError only
    when the context is entered already.  Two runs cost ~0.2 us, which is why this serves
    the rare synchronous callbacks (flow control, send errors) and not the read path."""
    try:
        context.run(_noop)
    except RuntimeError:
        return callback(*args)  # already inside it: the caller is this transport's code
    return context.run(callback, *args)


def notify_protocol(transport: Any, context: Context, what: str) -> None:
    """Flow control's callback (the protocol's ``what``: pause_writing or resume_writing)
    in the transport's ``context``; an exception from it goes to the loop's exception
    handler (``"protocol.<what>() failed"``, asyncio's keys), never to whoever wrote.  So
    does a protocol without the method (looked up inside the try, as asyncio does): a
    write() must not raise after its data was buffered."""
    try:
        run_in_context(context, getattr(transport._protocol, what))
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        transport._loop.call_exception_handler({
            "message": "protocol.%s() failed" % what,
            "exception": exc,
            "transport": transport,
            "protocol": transport._protocol,
        })
