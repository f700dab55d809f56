"""Scenario 3: a child killed with SIGKILL from outside the loop.

asyncio.create_subprocess_exec of a child that says it is ready and sleeps; the test kills
it with os.kill(pid, SIGKILL), not through the transport.  ``await proc.wait()`` must
return -9 (under the watchdog: a loop that misses the exit hangs here), the stdout and
stderr pipes must see EOF, the child must be reaped, and no fd may stay open: the process
fds are compared before and after, once the loop has been through a first round (a loop
opens fds on first use that it keeps for its lifetime), and again before the loop was made
and after it is closed.  On uvcffi and on asyncio's own loop.
"""
import asyncio
import os
import signal
import sys

import pytest
from _fault import Watchdog, open_fds
from _helpers import LOOP_FACTORIES, run

CHILD = "import sys, time; print('ready', flush=True); time.sleep(60)"
ROUNDS = 3


async def kill_one(loop):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert await proc.stdout.readline() == b"ready\n"
    os.kill(proc.pid, signal.SIGKILL)
    status = await proc.wait()
    out = await proc.stdout.read()
    err = await proc.stderr.read()
    # The transport lets go of its pipes once they are all closed; stdin is ours to close.
    proc.stdin.close()
    await asyncio.sleep(0)
    return proc.pid, status, out, err


def reaped(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.mark.parametrize("kind", sorted(LOOP_FACTORIES))
def test_sigkill_from_outside(kind):
    # libuv's process-wide signal lock pipe comes with the first loop and stays: let a
    # loop have made it before the count.
    LOOP_FACTORIES[kind]().close()
    fds_before_loop = open_fds()
    loop = LOOP_FACTORIES[kind]()
    try:
        async def main():
            async with Watchdog(stall_after=5.0) as wd:
                # A first round, so the fds a loop makes on first use and keeps for its
                # lifetime exist (libuv's SIGCHLD pipe, the /dev/null it holds in reserve
                # for EMFILE on accept, whatever the loop itself opens lazily): those are
                # not leaks.
                results = [await kill_one(loop)]
                await asyncio.sleep(0.05)
                fds_before = open_fds()
                results += [await kill_one(loop) for _ in range(ROUNDS)]
                # The pipes' transports close in callbacks of their own: let them run.
                for _ in range(50):
                    if open_fds() == fds_before:
                        break
                    await asyncio.sleep(0.01)
                fds_after = open_fds()
            return results, fds_before, fds_after, wd

        results, fds_before, fds_after, wd = run(loop, main(), timeout=60)
    finally:
        loop.close()
    for pid, status, out, err in results:
        assert status == -signal.SIGKILL
        assert (out, err) == (b"", b"")  # EOF on both pipes, nothing after "ready"
        assert reaped(pid)
    assert fds_after == fds_before
    assert not wd.stalls
    assert open_fds() == fds_before_loop
