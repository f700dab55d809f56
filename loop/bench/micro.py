"""In-process benchmarks, run by a worker process per loop.

    python -m uvcffi.bench.micro --loop uvloop --secs 1 --warm 0.3 sched-call_soon ...

Each benchmark prints one line "RESULT {json}" as soon as it is done, so the
orchestrator can give every benchmark its own timeout and, when one hangs (a
loop that never wakes up), kill the worker and restart it on the rest.

Every benchmark is bounded by wall time, checked with time.perf_counter() every
so many operations rather than with loop.call_later(): a timer bug in the loop
under test must not turn into an endless run.  The check costs the same on
every loop, so ratios are unaffected.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import threading
import time
from typing import Any

from . import subproc
from .loadgen import _busy_share, cpu_times
from .loops import describe, new_loop

perf = time.perf_counter


def _noop() -> None:
    pass


async def call_soon(loop: asyncio.AbstractEventLoop, secs: float) -> Any:
    """call_soon throughput: 100 independent self-rescheduling callbacks, so the
    per-iteration cost of the loop is spread over many callbacks."""
    count = [0]
    stop = [False]
    done = loop.create_future()
    deadline = perf() + secs
    call_soon = loop.call_soon

    def cb() -> None:
        n = count[0] = count[0] + 1
        if stop[0]:
            return
        if not n & 1023 and perf() >= deadline:
            stop[0] = True
            done.set_result(None)
            return
        call_soon(cb)

    t0 = perf()
    for _ in range(100):
        call_soon(cb)
    await done
    return count[0], perf() - t0


async def call_later_cancel(loop: asyncio.AbstractEventLoop, secs: float) -> Any:
    """Schedule a far timer and cancel it at once: the timeout idiom of every
    network library.  Yielding every 1000 lets the loop purge cancelled timers
    as it would in real use."""
    n = 0
    deadline = perf() + secs
    call_later = loop.call_later
    t0 = perf()
    while True:
        for _ in range(1000):
            call_later(3600.0, _noop).cancel()
        n += 1000
        await asyncio.sleep(0)
        if perf() >= deadline:
            return n, perf() - t0


async def call_soon_threadsafe(loop: asyncio.AbstractEventLoop, secs: float) -> Any:
    """Callbacks posted from another thread.  The producer never gets more than
    20,000 ahead of the loop, so memory stays bounded whatever the loop's speed."""
    count = [0]
    done = loop.create_future()
    deadline = perf() + secs
    errors = []

    def cb() -> None:
        count[0] += 1

    def producer() -> None:
        try:
            sent = 0
            post = loop.call_soon_threadsafe
            while perf() < deadline:
                for _ in range(256):
                    post(cb)
                sent += 256
                while sent - count[0] > 20000 and perf() < deadline + 5:
                    time.sleep(0.0002)
            post(done.set_result, None)
        except BaseException as e:
            errors.append(e)
            try:
                loop.call_soon_threadsafe(done.set_result, None)
            except BaseException:
                pass

    t0 = perf()
    th = threading.Thread(target=producer, daemon=True)
    th.start()
    await done
    elapsed = perf() - t0
    th.join(5)
    if errors:
        raise errors[0]
    return count[0], elapsed


async def sleep0(loop: asyncio.AbstractEventLoop, secs: float) -> Any:
    """100 tasks each awaiting asyncio.sleep(0) in a loop: the cost of one task
    step (yield to the loop, be rescheduled, resume)."""
    count = [0]
    stop = [False]
    deadline = perf() + secs

    async def chain() -> None:
        while not stop[0]:
            await asyncio.sleep(0)
            n = count[0] = count[0] + 1
            if not n & 1023 and perf() >= deadline:
                stop[0] = True

    t0 = perf()
    await asyncio.gather(*[loop.create_task(chain()) for _ in range(100)])
    return count[0], perf() - t0


async def _nothing() -> None:
    pass


async def task_create(loop: asyncio.AbstractEventLoop, secs: float) -> Any:
    """Create and run trivial tasks, 1000 at a time (tasks run FIFO, so when the
    last of a batch is done all of them are)."""
    n = 0
    deadline = perf() + secs
    create = loop.create_task
    t0 = perf()
    while True:
        for _ in range(999):
            create(_nothing())
        await create(_nothing())
        n += 1000
        if perf() >= deadline:
            return n, perf() - t0


# name -> (coroutine function, unit, scale from ops/s to the unit)
BENCHES = {
    "sched-call_soon": (call_soon, "ops/s", 1.0),
    "sched-call_later_cancel": (call_later_cancel, "ops/s", 1.0),
    "sched-call_soon_threadsafe": (call_soon_threadsafe, "ops/s", 1.0),
    "sched-sleep0": (sleep0, "ops/s", 1.0),
    "sched-task_create": (task_create, "ops/s", 1.0),
    "subproc-pipe": (subproc.pipe_throughput, "MiB/s", 1.0 / (1 << 20)),
    "subproc-spawn": (subproc.spawn_rate, "spawns/s", 1.0),
}


def _cpu() -> Any:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


def run_one(
    loop: asyncio.AbstractEventLoop, name: str, secs: float, warm: float, cpu: int | None = None,
) -> Any:
    fn, unit, scale = BENCHES[name]
    if warm > 0:
        # Warm-up matters most on PyPy, whose JIT needs the loop hot.
        loop.run_until_complete(fn(loop, warm))
    t0 = cpu_times()
    u0, s0 = _cpu()
    ops, elapsed = loop.run_until_complete(fn(loop, secs))
    u1, s1 = _cpu()
    t1 = cpu_times()
    if ops <= 0 or elapsed <= 0:
        raise RuntimeError("no operation completed")
    # For the pipe benchmark ops are bytes, so cpu per op is per byte: report
    # per MiB instead, which is the unit of the figure itself.
    per = ops * scale
    res = {
        "value": ops / elapsed * scale,
        "unit": unit,
        "cpu_us": (u1 - u0 + s1 - s0) / per * 1e6,
        "user_us": (u1 - u0) / per * 1e6,
        "sys_us": (s1 - s0) / per * 1e6,
    }
    share = _busy_share(t0, t1, cpu) if cpu is not None else None
    if share is not None and name.startswith("sched-"):
        # Only where the worker has no children: their CPU would count as "others".
        res["others_cpu0"] = max(0.0, share - (u1 - u0 + s1 - s0) / elapsed)
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m uvcffi.bench.micro")
    ap.add_argument("--loop", required=True)
    ap.add_argument("--secs", type=float, default=1.0)
    ap.add_argument("--warm", type=float, default=0.3)
    ap.add_argument("--cpu", type=int, default=None)
    ap.add_argument("benches", nargs="+", choices=sorted(BENCHES))
    args = ap.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {args.cpu})
        except OSError:
            pass

    def out(obj: Any) -> None:
        os.write(1, ("RESULT " + json.dumps(obj) + "\n").encode())

    try:
        loop = new_loop(args.loop)
        asyncio.set_event_loop(loop)
    except BaseException as e:
        os.write(1, ("ERROR " + describe(e) + "\n").encode())
        os._exit(3)
    for name in args.benches:
        out({"name": name, "started": True})
        try:
            res = run_one(loop, name, args.secs, args.warm, args.cpu)
            res["name"] = name
        except BaseException as e:
            res = {"name": name, "error": describe(e)}
            # A half-run benchmark may leave tasks behind that would skew the
            # next one: start the next one on a fresh loop.
            try:
                for t in asyncio.all_tasks(loop):
                    t.cancel()
                loop.close()
            except BaseException:
                pass
            try:
                loop = new_loop(args.loop)
                asyncio.set_event_loop(loop)
            except BaseException as e2:
                out(res)
                os.write(1, ("ERROR " + describe(e2) + "\n").encode())
                os._exit(3)
        out(res)
    sys.stdout.flush()
    os._exit(0)  # skip teardown: a half-built loop's close() must not hang us


if __name__ == "__main__":
    main()
