"""Scenario 1: many short timers, watched for a loop that stops waking up for them.

The bug this catches (as uvcffi had it until 43873ec): ``uvc_run_once`` armed libuv's
one-shot timer for the next Python timer right after ``uv_update_time``; when libuv's
millisecond clock ticked before ``uv_run`` updated it again, the timer fired in uv_run's
first pass, before the poll, and the poll then computed its timeout with no timer left
(-1) and blocked until some I/O came: with only timers pending, for ever. The window is
a few hundred nanoseconds per loop iteration, about one timer wait of 1 ms in 10,000
(measured), so the test gives it many chances: 32 loops, each in its own thread, each
going through 20 rounds of 1,000 concurrent ``asyncio.sleep``s of 0-5 ms and a chain of
300 ``call_later``s of 0-1 ms (about one wait for a clock tick per link). A loop thread
descheduled inside the window also loses, so threads outnumbering the cores help.
Measured on the loop this test was written against (0fe569e, before 43873ec made the
wake-up timer's callback call uv_stop): 10-17 stalls per run on CPython and 11-17 on
PyPy (about one per 15,000 chained timers), in every one of 8 runs; with timer_cb
calling uv_stop, none in 5 runs.

Each loop has a watchdog: when its heartbeat timer has not run for ``STALL_AFTER`` seconds
the watchdog records a stall and wakes the loop (call_soon_threadsafe), so the scenario
finishes and the test fails on the recorded stalls instead of hanging.  The loops run in a
fresh interpreter (see _fault.run_fresh): 32 loops' worth of memory stays out of the test
run's own process.
"""
import asyncio
import json
import os
import random
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _fault import Watchdog, run_fresh  # noqa: E402

import uvcffi  # noqa: E402

LOOPS = 32
ROUNDS = 20
SLEEPS = 1000
CHAIN = 300
# Nothing in this scenario waits for more than 5 ms: a heartbeat (every 20 ms) missing for
# 2 s is a stall.  Generous for 32 loops sharing 2 cores (and one GIL on CPython): the
# longest iteration (1,000 tasks completing at once) takes tens of milliseconds of CPU.
STALL_AFTER = 2.0


async def timer_rounds(seed):
    """Run the rounds on the running loop; return (watchdog, counts of what ran)."""
    loop = asyncio.get_running_loop()
    rnd = random.Random(seed)
    counts = {"sleeps": 0, "links": 0, "early": 0}

    async def sleeper(delay):
        await asyncio.sleep(delay)
        counts["sleeps"] += 1

    def link(done, left, when):
        # The loop must never run a timer before its time.
        if loop.time() < when:
            counts["early"] += 1
        counts["links"] += 1
        if left == 0:
            done.set_result(None)
            return
        delay = rnd.random() * 0.001
        loop.call_later(delay, link, done, left - 1, loop.time() + delay)

    async with Watchdog(stall_after=STALL_AFTER) as wd:
        for _ in range(ROUNDS):
            chain_done = loop.create_future()
            loop.call_later(0, link, chain_done, CHAIN - 1, loop.time())
            await asyncio.gather(*[sleeper(rnd.random() * 0.005) for _ in range(SLEEPS)])
            await chain_done
    return wd, counts


def measure():
    """Run the loops (in this fresh process); return what each saw."""
    results = [None] * LOOPS
    errors = []

    def run_loop(i):
        try:
            wd, counts = uvcffi.run(asyncio.wait_for(timer_rounds(i), 120))
            results[i] = {"stalls": wd.stalls, "wakeups": wd.wakeups, "counts": counts}
        except BaseException as exc:  # reported, with the thread's index
            errors.append((i, repr(exc)))

    threads = [threading.Thread(target=run_loop, args=(i,)) for i in range(LOOPS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"errors": errors, "results": results}


def test_many_short_timers_never_stall_the_loop():
    report = run_fresh(os.path.abspath(__file__))
    assert report["errors"] == []
    results = report["results"]
    stalls = [(i, r["stalls"]) for i, r in enumerate(results) if r["stalls"]]
    nstalls = sum(len(s) for _, s in stalls)
    assert not stalls, (
        f"{nstalls} stall(s) in {LOOPS} loops x {ROUNDS} rounds: a loop stopped waking up "
        f"for its due timers until the watchdog woke it: {stalls}"
    )
    for r in results:
        assert r["counts"] == {"sleeps": ROUNDS * SLEEPS, "links": ROUNDS * CHAIN, "early": 0}
        assert r["wakeups"] == 0


if __name__ == "__main__":
    print(json.dumps(measure()))
