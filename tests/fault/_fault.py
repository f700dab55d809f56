"""What the fault tests share: a watchdog that turns a loop which stops making progress into
a recorded stall (and wakes the loop, so the test goes on and fails instead of hanging),
and the counts of a process's fds and memory."""
import asyncio
import os
import threading
import time


class Watchdog:
    """Watch a running loop from a thread.

    A heartbeat timer on the loop (``call_later(beat_every)``, rescheduling itself) bumps a
    counter; the watchdog thread checks it every ``check_every`` seconds.  When the counter
    has not moved for ``stall_after`` seconds, a stall is recorded (``stalls``: how long the
    loop had been silent, and a note from ``describe()`` when given) and the loop is woken
    with ``call_soon_threadsafe``: a loop blocked in its poll past a due timer then goes on,
    and the test fails on ``stalls`` instead of hanging.

    Only the watchdog's own punctual checks count towards ``stall_after``: a check that comes
    late (the whole process was descheduled on the shared machine) adds at most twice its
    interval, so a paused process is not taken for a stalled loop.

    Use inside the coroutine under test::

        async with Watchdog(stall_after=2.0) as wd:
            ...
        assert not wd.stalls
    """

    def __init__(self, stall_after=2.0, *, beat_every=0.02, check_every=0.05, describe=None):
        self.stall_after = stall_after
        self.beat_every = beat_every
        self.check_every = check_every
        self.describe = describe
        self.beats = 0
        self.stalls = []
        self.wakeups = 0
        self._loop = None
        self._timer = None
        self._done = threading.Event()
        self._thread = None

    def _beat(self):
        self.beats += 1
        self._timer = self._loop.call_later(self.beat_every, self._beat)

    def _watch(self):
        seen = self.beats
        silent = 0.0
        last = time.monotonic()
        while not self._done.wait(self.check_every):
            now = time.monotonic()
            silent += min(now - last, 2 * self.check_every)
            last = now
            beats = self.beats
            if beats != seen:
                seen = beats
                silent = 0.0
                continue
            if silent >= self.stall_after:
                note = self.describe() if self.describe is not None else ""
                self.stalls.append((round(silent, 2), note))
                silent = 0.0
                try:
                    self._loop.call_soon_threadsafe(self._woken)
                except RuntimeError:  # the loop closed meanwhile
                    return

    def _woken(self):
        self.wakeups += 1

    async def __aenter__(self):
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(self.beat_every, self._beat)
        self._thread = threading.Thread(target=self._watch, name="fault-watchdog", daemon=True)
        self._thread.start()
        return self

    async def __aexit__(self, *exc):
        self._done.set()
        self._thread.join()
        self._timer.cancel()
        return False


def open_fds():
    """The fd numbers this process has open (without the one listdir uses)."""
    return sorted(int(fd) for fd in os.listdir("/proc/self/fd") if _still_open(fd))


def _still_open(fd):
    try:
        os.fstat(int(fd))
    except OSError:
        return False
    return True


def rss_kib():
    """This process's resident set size in KiB (VmRSS)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def run_fresh(path, *args, timeout=300):
    """Run the test module at ``path`` as a script in a fresh interpreter (its
    ``__main__`` prints one JSON report as its last line) and return the report.

    The heavy scenarios run this way: a fresh process measures its memory without the
    history of earlier tests, and the test run's own process does not grow (PyPy's GC
    keeps what it once used: hundreds of MiB would make every later fork, and so every
    later subprocess test, slower)."""
    import json
    import subprocess
    import sys

    p = subprocess.run([sys.executable, path, *args], capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stderr[-3000:]}"
    return json.loads(p.stdout.splitlines()[-1])
