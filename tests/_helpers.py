"""Helpers shared by the test modules (the fixtures are in conftest.py)."""
import asyncio
import os
import socket
import statistics
import subprocess
import sys

import pytest

import uvcffi

# The loops the side-by-side tests run on: uvcffi, and asyncio's selector loop as the
# specification it must agree with.
LOOP_FACTORIES = {"uvcffi": uvcffi.new_event_loop, "asyncio": asyncio.SelectorEventLoop}


def run(loop, coro, timeout=10):
    """Run ``coro`` to completion on ``loop``, failing after ``timeout`` seconds."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def stream_echo(reader, writer, *, tolerate=()):
    """asyncio.start_server handler that echoes until EOF; exceptions in ``tolerate``
    (a peer going away mid-stream, say) end it quietly."""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except tolerate:
        pass
    finally:
        writer.close()


def socket_refusal(method, *args, family=socket.AF_INET, kind=socket.SOCK_STREAM):
    """(type, message) of what a fresh socket's ``method(*args)`` raises for an address it
    refuses before any system call (a port outside 0-65535, say).  asyncio's loop lets the
    socket module raise these, in its words, which differ by runtime: CPython names the
    call ("connect(): port must be 0-65535."), PyPy does not."""
    with socket.socket(family, kind) as sock:
        try:
            getattr(sock, method)(*args)
        except Exception as exc:  # noqa: BLE001 - the exception is the result
            return type(exc), str(exc)
    raise AssertionError(f"socket.{method}{args!r} raised nothing")


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_generational_gc = pytest.mark.skipif(sys.implementation.name != "pypy", reason=(
    "CPython frees a received message when its last reference goes; only a generational "
    "GC keeps one alive through a dead frame of the old generation"))


def pypy_minor_survivors(script, tmp_path):
    """Run ``script`` (Python source) in a PyPy child with a 2 MiB nursery; return the
    median size of what survived its minor collections (from PyPy's GC log).  What a loop
    keeps alive past its use is promoted at each minor collection, for the old
    generation's collections to free: this counts it without timing anything."""
    path = tmp_path / "script.py"
    path.write_text(script)
    log = tmp_path / "gc.log"
    env = dict(os.environ, PYPY_GC_NURSERY="2M", PYPYLOG="gc-minor:%s" % log)
    subprocess.run([sys.executable, str(path)], env=env, check=True, timeout=120)
    surviving = [int(line.split(":")[1]) for line in log.read_text().splitlines()
                 if line.startswith("total size of surviving objects:")]
    assert len(surviving) > 20  # the script filled the nursery, many times
    return statistics.median(surviving)
