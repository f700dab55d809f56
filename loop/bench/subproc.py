"""Subprocess benchmarks: pipe throughput through `cat`, and spawn rate.

Both go through the public asyncio API (asyncio.create_subprocess_exec), which
runs on the loop under test, so they measure that loop's subprocess transport,
pipes and child-exit handling.
"""
from __future__ import annotations

import asyncio
import shutil
import time
from typing import Any

perf = time.perf_counter
CHUNK = b"x" * (64 * 1024)


def _cat_argv() -> Any:
    # The worker is pinned to CPU 0; `cat` would inherit that and share the
    # core with the loop it is measuring.  Put it on CPU 1 when we can.
    cat = shutil.which("cat") or "/bin/cat"
    taskset = shutil.which("taskset")
    return [taskset, "-c", "1", cat] if taskset else [cat]


async def pipe_throughput(loop: asyncio.AbstractEventLoop, secs: float) -> Any:
    """Bytes/s echoed back by `cat`: write 64 KiB chunks honouring drain(),
    read concurrently, stop writing after `secs`, read to EOF."""
    proc = await asyncio.create_subprocess_exec(
        *_cat_argv(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    got = [0]
    deadline = perf() + secs

    async def writer() -> None:
        try:
            while perf() < deadline:
                proc.stdin.write(CHUNK)  # type: ignore[union-attr]  # a PIPE
                await proc.stdin.drain()  # type: ignore[union-attr]
        finally:
            proc.stdin.close()  # type: ignore[union-attr]

    async def reader() -> None:
        while True:
            data = await proc.stdout.read(256 * 1024)  # type: ignore[union-attr]  # a PIPE
            if not data:
                break
            got[0] += len(data)

    t0 = perf()
    try:
        await asyncio.wait_for(asyncio.gather(writer(), reader()), secs + 30)
        await asyncio.wait_for(proc.wait(), 10)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
        raise
    return got[0], perf() - t0


async def spawn_rate(loop: asyncio.AbstractEventLoop, secs: float) -> Any:
    """Sequential /bin/true spawns: spawn, wait for exit, repeat."""
    true = shutil.which("true") or "/bin/true"
    n = 0
    deadline = perf() + secs
    t0 = perf()
    while True:
        proc = await asyncio.create_subprocess_exec(true)
        await asyncio.wait_for(proc.wait(), 10)
        n += 1
        if perf() >= deadline:
            return n, perf() - t0
