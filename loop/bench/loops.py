"""The event loops under comparison, and how to make one of each.

Loop construction happens only inside the server and worker processes, never in
the orchestrating process: a loop still being built (uvcffi) may fail to import,
raise, or crash, and that must cost one table cell, not the run.
"""
from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from typing import Any

ALL = ("uvcffi", "asyncio", "uvloop", "rloop")
# Loops compared when they are installed and import on this interpreter.
OPTIONAL = ("uvloop", "rloop")
BASELINE = "asyncio"
FLOOR = "C floor"  # the pseudo-loop of echo_floor.c in the network workloads


def new_loop(name: str) -> Any:
    """A new, not yet running event loop of kind `name`."""
    if name == "asyncio":
        return asyncio.new_event_loop()
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    if name == "uvcffi":
        import uvcffi
        return uvcffi.new_event_loop()
    if name == "rloop":
        import rloop
        return rloop.new_event_loop()
    raise ValueError("unknown loop %r (known: %s)" % (name, ", ".join(ALL)))


def importable(name: str) -> Any:
    """Whether the module for loop `name` can be found, without importing it."""
    if name == "asyncio":
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def import_error(name: str) -> Any:
    """None when loop `name` imports on this interpreter, else the reason.

    Tried in a child process: finding the module is not enough (rloop's PyPy
    wheel installs, then fails to load: "undefined symbol: PyContext_Enter"),
    and the orchestrator itself never imports a loop under test.
    """
    if name == "asyncio":
        return None
    if not importable(name):
        return "not installed"
    try:
        r = subprocess.run([sys.executable, "-c", "import " + name], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return describe(e)
    if r.returncode == 0:
        return None
    lines = [line for line in r.stderr.decode(errors="replace").splitlines() if line.strip()]
    why = lines[-1].strip() if lines else "exit status %d" % r.returncode
    return why if len(why) <= 160 else why[:157] + "..."


def default_loops(skipped: Any = None) -> Any:
    """uvcffi and asyncio always (uvcffi's cells say why when it cannot run);
    uvloop and rloop only where they are installed and import (uvloop never
    is on PyPy; rloop's PyPy wheel does not load).  `skipped`, a dict, gets
    {loop: reason} for those left out."""
    out = []
    for n in ALL:
        why = import_error(n) if n in OPTIONAL else None
        if why is None:
            out.append(n)
        elif skipped is not None:
            skipped[n] = why
    return out


def describe(exc: Any) -> Any:
    """One-line reason for an n/a cell."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
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
