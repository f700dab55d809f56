"""The event loops under comparison, and how to make one of each.

Loop construction happens only inside the server and worker processes, never in
the orchestrating process: a loop still being built (uvcffi) may fail to import,
raise, or crash, and that must cost one table cell, not the run.
"""

import asyncio
import importlib.util

ALL = ("uvcffi", "asyncio", "uvloop")
BASELINE = "asyncio"
FLOOR = "C floor"  # the pseudo-loop of echo_floor.c in the network workloads


def new_loop(name):
    """A new, not yet running event loop of kind `name`."""
    if name == "asyncio":
        return asyncio.new_event_loop()
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    if name == "uvcffi":
        import uvcffi
        return uvcffi.new_event_loop()
    raise ValueError("unknown loop %r (known: %s)" % (name, ", ".join(ALL)))


def importable(name):
    """Whether the module for loop `name` can be found, without importing it."""
    if name == "asyncio":
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def default_loops():
    """uvcffi and asyncio always (uvcffi's cells say why when it cannot run);
    uvloop only where it is installed (it never is on PyPy)."""
    return [n for n in ALL if n != "uvloop" or importable("uvloop")]


def describe(exc):
    """One-line reason for an n/a cell."""
    text = str(exc).strip().splitlines()
    text = text[0] if text else ""
    name = type(exc).__name__
    out = "%s: %s" % (name, text) if text else name
    if not text:
        # A bare NotImplementedError says nothing; the function that raised
        # it (AbstractEventLoop.sock_accept, ...) says what is missing.
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None:
            out += " in %s()" % tb.tb_frame.f_code.co_name
    return out if len(out) <= 160 else out[:157] + "..."
