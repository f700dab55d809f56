"""Python's signal wakeup fd with several loops in the process.

Only one fd can receive the byte Python's C-level signal handler writes, and a loop blocked in
libuv is woken by nothing else (libuv retries an epoll_wait a signal interrupts).  So the fd
must follow the loop that needs it: the one running in the main thread, else one with signal
handlers; and when no loop needs it any more, go back to what was there before, unless that
fd has been closed since (its number may now be an application's socket).

A loop waits here on a future that only its signal handler resolves, under a watchdog timer
that fails the test if it fires first: the check does not depend on how fast the signal comes.
"""
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import uvcffi

pytestmark = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals need the main thread"
)

WATCHDOG = 30.0  # seconds: a failure's cost, never a pass's condition


def peek_wakeup_fd():
    """The current wakeup fd (set_wakeup_fd only tells it by replacing it: it is put back)."""
    fd = signal.set_wakeup_fd(-1)
    if fd != -1:
        try:
            signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
        except (ValueError, OSError):  # a closed fd: Python refuses it, -1 stays
            pass
    return fd


@pytest.fixture(autouse=True)
def wakeup_fd_before():
    """The wakeup fd the test starts with; it and SIGUSR1/2's handlers are restored after."""
    before = peek_wakeup_fd()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR1, signal.SIGUSR2)}
    yield before
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    try:
        signal.set_wakeup_fd(before)
    except (ValueError, OSError):
        signal.set_wakeup_fd(-1)


@pytest.fixture
def loops():
    """new() makes a loop that is closed after the test."""
    made = []

    def new():
        lp = uvcffi.new_event_loop()
        made.append(lp)
        return lp

    yield new
    for lp in made:
        if not lp.is_closed():
            lp.close()


def run_until_signalled(loop, fut):
    """Run ``loop`` until ``fut`` (resolved by a signal handler) is done; fail if the watchdog
    fires first, i.e. if the signal never woke the loop."""

    def watchdog():
        if not fut.done():
            fut.set_exception(AssertionError("the signal never woke the loop"))

    timer = loop.call_later(WATCHDOG, watchdog)
    try:
        return loop.run_until_complete(fut)
    finally:
        timer.cancel()


def resolver(fut):
    return lambda: fut.done() or fut.set_result(True)


@pytest.mark.parametrize("give_up", ["close", "remove_signal_handler"])
def test_running_loop_keeps_the_wakeup_fd_when_an_idle_loop_gives_it_up(loops, give_up):
    """Loop A (idle) has a signal handler, loop B runs: A closing or dropping its handler must
    not take the wakeup fd away from B, whose own signal must still wake it."""
    a, b = loops(), loops()
    a.add_signal_handler(signal.SIGUSR1, print)
    got = b.create_future()
    b.add_signal_handler(signal.SIGUSR2, resolver(got))

    def step():
        if give_up == "close":
            a.close()
        else:
            assert a.remove_signal_handler(signal.SIGUSR1)
        signal.raise_signal(signal.SIGUSR2)  # delivered before it returns: the byte is written

    b.call_soon(step)
    assert run_until_signalled(b, got)


def test_an_idle_loop_adding_a_handler_leaves_the_wakeup_fd_to_the_running_loop(loops):
    """A handler added to idle loop A while B runs must not divert B's signals to A; A's own
    signal, received by B, is A's to handle when A runs."""
    a, b = loops(), loops()
    got_a, got_b = a.create_future(), b.create_future()
    b.add_signal_handler(signal.SIGUSR2, resolver(got_b))

    def step():
        a.add_signal_handler(signal.SIGUSR1, resolver(got_a))
        signal.raise_signal(signal.SIGUSR1)
        signal.raise_signal(signal.SIGUSR2)

    b.call_soon(step)
    assert run_until_signalled(b, got_b)
    assert not got_a.done()  # A's handler runs in A, not while B runs
    assert run_until_signalled(a, got_a)


def test_a_signal_for_an_idle_loop_is_kept_for_it_while_another_loop_runs(loops):
    """B runs with no handler (it holds the wakeup fd for Ctrl-C): a signal A (idle) handles
    arrives in B, which passes it on; A's handler runs when A runs."""
    a, b = loops(), loops()
    got = a.create_future()
    a.add_signal_handler(signal.SIGUSR1, resolver(got))

    async def in_b():
        signal.raise_signal(signal.SIGUSR1)
        # Each iteration polls libuv: the byte is read (and passed on) before B stops.
        for _ in range(3):
            await asyncio.sleep(0)

    b.run_until_complete(in_b())
    assert not got.done()
    assert run_until_signalled(a, got)


def test_a_loop_in_another_thread_gets_its_signals_while_the_main_thread_runs_a_loop(loops):
    """A (handler added in the main thread) runs in a thread, where it cannot hold the wakeup
    fd; B runs in the main thread and holds it.  A's signal must still wake A."""
    a, b = loops(), loops()
    got_a = a.create_future()
    got_b = b.create_future()
    a.add_signal_handler(signal.SIGUSR1, resolver(got_a))
    a_running = threading.Event()
    result = []

    def in_thread():
        a.call_soon(a_running.set)
        try:
            result.append(run_until_signalled(a, got_a))
        except BaseException as exc:
            result.append(exc)
        finally:
            b.call_soon_threadsafe(resolver(got_b))

    t = threading.Thread(target=in_thread)

    def step():
        t.start()
        assert a_running.wait(WATCHDOG)
        signal.raise_signal(signal.SIGUSR1)

    b.call_soon(step)
    b.run_until_complete(got_b)
    t.join()
    assert result == [True]


def test_nested_runs_give_the_wakeup_fd_back_to_the_outer_loop(loops):
    """B run inside a callback of A (as nest_asyncio allows): when B stops, A, still running,
    must get the wakeup fd back."""
    a, b = loops(), loops()
    got = a.create_future()
    a.add_signal_handler(signal.SIGUSR1, resolver(got))

    def step():
        asyncio._set_running_loop(None)
        try:
            b.run_until_complete(asyncio.sleep(0))
        finally:
            asyncio._set_running_loop(a)
        signal.raise_signal(signal.SIGUSR1)

    a.call_soon(step)
    assert run_until_signalled(a, got)


def nonblocking_socketpairs_until(fd, pairs):
    """Open socketpairs (non-blocking, as an asyncio application's) into ``pairs`` until one
    gets the number ``fd``: the lowest free number is the one a new socket gets."""
    while len(pairs) < 64 and not any(fd in (x.fileno(), y.fileno()) for x, y in pairs):
        x, y = socket.socketpair()
        x.setblocking(False)
        y.setblocking(False)
        pairs.append((x, y))
    assert any(fd in (x.fileno(), y.fileno()) for x, y in pairs)


@contextlib.contextmanager
def socketpairs():
    """A list for nonblocking_socketpairs_until(), whose sockets are closed on the way out."""
    pairs = []
    try:
        yield pairs
    finally:
        for x, y in pairs:
            x.close()
            y.close()


def assert_no_signal_byte_in(pairs):
    signal.signal(signal.SIGUSR2, lambda *args: None)  # Python-level: the byte is written
    signal.raise_signal(signal.SIGUSR2)
    for x, y in pairs:
        for s in (x, y):
            with pytest.raises(BlockingIOError):
                s.recv(16)


def test_the_wakeup_fd_of_a_closed_loop_is_never_restored(loops, wakeup_fd_before):
    """A (handler) is closed while B runs, and an application socket gets A's fd number; then
    B stops.  The wakeup fd must be what it was before A, not that number: each signal would
    write a byte into the application's socket."""
    a, b = loops(), loops()
    a.add_signal_handler(signal.SIGUSR1, print)
    a_fd = peek_wakeup_fd()
    assert a_fd not in (-1, wakeup_fd_before)
    with socketpairs() as pairs:
        def step():
            a.close()
            nonblocking_socketpairs_until(a_fd, pairs)

        b.call_soon(step)
        b.run_until_complete(asyncio.sleep(0))
        assert peek_wakeup_fd() == wakeup_fd_before
        assert_no_signal_byte_in(pairs)


def test_a_foreign_wakeup_fd_is_restored_only_if_still_open(loops, wakeup_fd_before):
    """The fd a loop found in place is put back when no loop needs the wakeup fd any more, but
    not once it has been closed: its number may belong to another socket by then."""
    r, w = socket.socketpair()
    w.setblocking(False)
    signal.set_wakeup_fd(w.fileno())
    a = loops()
    a.add_signal_handler(signal.SIGUSR1, print)
    a.remove_signal_handler(signal.SIGUSR1)
    assert peek_wakeup_fd() == w.fileno()  # still open: restored

    a.add_signal_handler(signal.SIGUSR1, print)
    number = w.fileno()
    w.close()
    r.close()
    with socketpairs() as pairs:
        nonblocking_socketpairs_until(number, pairs)
        a.close()
        assert peek_wakeup_fd() == -1
        assert_no_signal_byte_in(pairs)


def test_a_wakeup_fd_set_over_a_loops_is_left_in_place(loops, wakeup_fd_before):
    """Someone else sets the wakeup fd while a loop holds it: when the loop no longer needs
    it, the fd stays theirs (putting back what the loop found would take it from them)."""
    a = loops()
    a.add_signal_handler(signal.SIGUSR1, print)
    r, w = socket.socketpair()
    try:
        w.setblocking(False)
        signal.set_wakeup_fd(w.fileno())
        a.close()
        assert peek_wakeup_fd() == w.fileno()
    finally:
        signal.set_wakeup_fd(wakeup_fd_before)
        r.close()
        w.close()


def test_a_loop_run_alone_leaves_the_wakeup_fd_as_it_was(loops, wakeup_fd_before):
    a = loops()
    a.run_until_complete(asyncio.sleep(0))
    assert peek_wakeup_fd() == wakeup_fd_before
    a.add_signal_handler(signal.SIGUSR1, print)
    a.run_until_complete(asyncio.sleep(0))
    assert peek_wakeup_fd() not in (-1, wakeup_fd_before)  # A's, for its handler
    a.close()
    assert peek_wakeup_fd() == wakeup_fd_before


CTRL_C_AFTER_AN_IDLE_LOOP_GIVES_UP = r"""
import asyncio, os, signal, sys, threading, time
import uvcffi

idle = uvcffi.new_event_loop()
idle.add_signal_handler(signal.SIGUSR1, print)

def ctrl_c_once_the_main_thread_waits_in_libuv():
    # Sent while the main thread sleeps in epoll_wait: there, only the wakeup byte wakes it.
    path = "/proc/self/task/%d/wchan" % os.getpid()
    while True:
        with open(path) as f:
            wchan = f.read()
        if "epoll" in wchan or "ep_poll" in wchan:  # do_epoll_wait, ep_poll: per kernel
            break
        time.sleep(0.001)
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

def watchdog():
    print("watchdog: Ctrl-C did not wake the loop", flush=True)
    os._exit(3)

async def main():
    if GIVE_UP == "close":
        idle.close()
    else:
        idle.remove_signal_handler(signal.SIGUSR1)
    threading.Thread(target=ctrl_c_once_the_main_thread_waits_in_libuv, daemon=True).start()
    timer = threading.Timer(WATCHDOG, watchdog)
    timer.daemon = True
    timer.start()
    await asyncio.sleep(3600)

try:
    if sys.version_info >= (3, 11):  # asyncio.run's SIGINT handling, on a uvcffi loop
        with asyncio.Runner(loop_factory=uvcffi.new_event_loop) as runner:
            runner.run(main())
    else:  # Python's default SIGINT handler
        loop = uvcffi.new_event_loop()
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()
except KeyboardInterrupt:
    print("interrupted", flush=True)
    os._exit(0)
"""


def _wchan_readable():
    """Whether a thread can see where the main thread sleeps (some kernels show "0")."""
    seen = []

    def look():  # while the main thread waits in join(), once it sleeps there
        for _ in range(1000):
            try:
                with open(f"/proc/self/task/{os.getpid()}/wchan") as f:
                    seen.append(f.read())
            except OSError:
                return
            if seen[-1] not in ("", "0"):
                return
            time.sleep(0.001)

    t = threading.Thread(target=look)
    t.start()
    t.join()
    return bool(seen) and seen[-1] not in ("", "0")


@pytest.mark.skipif(not _wchan_readable(), reason="needs /proc/<pid>/task/<tid>/wchan")
@pytest.mark.parametrize("give_up", ["close", "remove_signal_handler"])
def test_ctrl_c_wakes_a_loop_after_an_idle_loop_gave_up_its_handler(give_up):
    """The reported case: an idle loop with a handler closes (or drops it) while asyncio.run
    runs another loop; Ctrl-C must wake that loop at once, not on its next event."""
    code = CTRL_C_AFTER_AN_IDLE_LOOP_GIVES_UP.replace("GIVE_UP", repr(give_up)).replace(
        "WATCHDOG", repr(WATCHDOG)
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=WATCHDOG + 30
    )
    assert out.stdout == "interrupted\n", (out.stdout, out.stderr)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_childs_signals_do_not_reach_the_parents_loop(loops):
    """A child forked while the loop runs inherits Python's wakeup fd, which pointed into the
    loop's socketpair, shared with the parent: a signal the child got was written there and
    handled by the parent's loop (a worker's SIGTERM stopping its parent, say).  asyncio 3.12
    resets the wakeup fd in the child; here the child's copy of the loop gets a socketpair
    of its own, under the same fd numbers.  The parent signals itself once the child is
    gone: its handler runs after any byte the child wrote, which would have come first."""
    loop = loops()
    hits = []
    parents_own = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR1, hits.append, "SIGUSR1")
    loop.add_signal_handler(signal.SIGUSR2, resolver(parents_own))

    def fork_and_signal():
        pid = os.fork()
        if pid == 0:
            try:
                os.kill(os.getpid(), signal.SIGUSR1)  # the C handler writes the byte now
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        os.kill(os.getpid(), signal.SIGUSR2)

    loop.call_soon(fork_and_signal)
    run_until_signalled(loop, parents_own)
    assert hits == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_another_thread_moves_the_wakeup_fd_can_run_a_loop():
    """The loops' record of who wants the wakeup fd has a lock, which a loop starting or
    stopping in another thread holds for a moment.  A fork in that moment gave the child a
    lock held by a thread that does not exist there: the child's first loop run waited for
    it for good.  The thread here holds the lock across the fork, as that thread would."""
    from uvcffi._signals import _wakeup_fd

    held, release = threading.Event(), threading.Event()

    def hold():
        with _wakeup_fd._lock:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                # A hang ends the child (SIGALRM's default action), not the test.
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                signal.alarm(int(WATCHDOG))
                loop = uvcffi.new_event_loop()
                code = 0 if loop.run_until_complete(asyncio.sleep(0, "ran")) == "ran" else 2
                loop.close()
            finally:
                os._exit(code)
    finally:
        release.set()
        holder.join()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_a_loop_puts_its_wakeup_fd_back_after_someone_reset_it(loops):
    """Python's wakeup fd can be reset under a loop that holds it: asyncio 3.12+ does it in
    every forked child (its at-fork hook calls set_wakeup_fd(-1)), a library may do it
    anywhere.  asyncio's add_signal_handler sets its fd again each time; the loop went by
    its record, which said its fd was in place, and never set it again: its signals no
    longer woke it (in a 3.12 child, a loop's signal handlers never ran)."""
    loop = loops()
    loop.add_signal_handler(signal.SIGUSR1, print)
    loop.run_until_complete(asyncio.sleep(0))
    signal.set_wakeup_fd(-1)  # what asyncio 3.12's at-fork hook does in the child
    fut = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR2, resolver(fut))
    threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGUSR2)).start()
    assert run_until_signalled(loop, fut) is True
