"""The scheduling side of uvcffi.Loop, compared against what asyncio's loop does."""
import asyncio
import contextvars
import errno
import fractions
import gc
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

import pytest

import uvcffi


def test_is_an_abstract_event_loop(loop):
    assert isinstance(loop, asyncio.AbstractEventLoop)
    assert "running=False" in repr(loop)


def test_call_soon_order_and_args(loop):
    out = []
    for i in range(5):
        loop.call_soon(out.append, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == [0, 1, 2, 3, 4]


def test_call_soon_returns_cancellable_handle(loop):
    out = []
    h = loop.call_soon(out.append, 1)
    assert isinstance(h, asyncio.Handle)
    h.cancel()
    assert h.cancelled()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == []


def test_call_later_never_early_and_ordered(loop):
    fired = []
    start = loop.time()
    for delay in (0.03, 0.001, 0.02, 0.0105):
        loop.call_later(delay, lambda d=delay: fired.append((d, loop.time() - start)))
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert [d for d, _ in fired] == [0.001, 0.0105, 0.02, 0.03]
    # A lower bound, not a measurement: asyncio's contract is that a timer never fires early.
    for delay, waited in fired:
        assert waited >= delay


def test_call_at_uses_loop_time(loop):
    out = []
    loop.call_at(loop.time() + 0.01, out.append, "x")
    loop.call_at(loop.time() + 0.02, loop.stop)
    loop.run_forever()
    assert out == ["x"]


def test_equal_deadlines_run_in_scheduling_order(loop):
    out = []
    when = loop.time() + 0.005
    for i in range(20):
        loop.call_at(when, out.append, i)
    loop.call_at(when, loop.stop)
    loop.run_forever()
    assert out == list(range(20))


def test_timer_handle_cancel_and_heap_compaction(loop):
    out = []
    handles = [loop.call_later(10, out.append, i) for i in range(1000)]
    assert all(isinstance(h, asyncio.TimerHandle) for h in handles)
    for h in handles[:900]:
        h.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    # compaction dropped the cancelled entries
    assert len(loop._timers) == 100
    assert out == []
    assert handles[950].when() > loop.time()


def test_timeout_rounding(loop):
    """Sub-millisecond sleeps neither spin nor fire early (libuv counts whole ms)."""
    calls = 0
    orig = loop._run_once

    def counting():
        nonlocal calls
        calls += 1
        orig()

    loop._run_once = counting

    async def wait():
        for delay in (1e-2, 1e-4, 1e-6, 1e-8, 1e-10):
            t0 = loop.time()
            await asyncio.sleep(delay)
            assert loop.time() - t0 >= delay

    loop.run_until_complete(wait())
    assert calls <= 20


def test_sub_millisecond_clock(loop):
    assert loop.time() == pytest.approx(time.monotonic(), abs=0.01)
    # The clock's resolution is its smallest step: a preemption between two reads can
    # only lengthen a step, so the minimum of a few is the resolution on a busy machine.
    steps = []
    for _ in range(20):
        t1 = loop.time()
        t2 = loop.time()
        while t2 == t1:
            t2 = loop.time()
        steps.append(t2 - t1)
    assert min(steps) < 0.001


def test_call_later_none_delay_is_type_error(loop):
    with pytest.raises(TypeError):
        loop.call_later(None, print)
    with pytest.raises(TypeError):
        loop.call_at(None, print)


@pytest.mark.parametrize("when", [10 ** 400, -10 ** 400, fractions.Fraction(10 ** 400)],
                         ids=["huge-int", "huge-negative-int", "huge-fraction"])
def test_call_at_a_time_no_float_can_hold_is_refused(loop, when):
    """A deadline the clock's float arithmetic overflows on: asyncio takes it, and then
    every iteration of the loop raises OverflowError (its wait is when - now) until the
    timer is cancelled; uvloop refuses it at call_at(), and so does uvcffi, so the loop
    stays usable.  (call_later(10 ** 400) fails in the addition already, everywhere.)"""
    ran = []
    with pytest.raises(OverflowError):
        loop.call_at(when, ran.append, "timer")
    assert loop.run_until_complete(asyncio.sleep(0, "still runs")) == "still runs"
    assert ran == []


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe", "call_later", "call_at"])
def test_non_callable_and_coroutine_callbacks_rejected(loop, method):
    args = (0,) if method in ("call_later", "call_at") else ()

    async def coro():
        pass

    with pytest.raises(TypeError):
        getattr(loop, method)(*args, 42)
    c = coro()
    with pytest.raises(TypeError):
        getattr(loop, method)(*args, c)
    c.close()
    loop.set_debug(True)
    with pytest.raises(TypeError):
        getattr(loop, method)(*args, coro)


def test_exception_in_callback_reaches_handler_and_loop_continues(loop):
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))

    def boom():
        raise ZeroDivisionError("x")

    out = []
    loop.call_soon(boom)
    loop.call_soon(out.append, "after")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["after"]
    assert len(seen) == 1
    assert isinstance(seen[0]["exception"], ZeroDivisionError)
    assert seen[0]["message"].startswith("Exception in callback")
    assert isinstance(seen[0]["handle"], asyncio.Handle)


def test_default_exception_handler_logs(loop, caplog):
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert "Exception in callback" in caplog.text
    assert "ZeroDivisionError" in caplog.text


def test_failing_exception_handler_log_chains_the_callback_error(anyloop, caplog):
    # The log of a handler that fails shows the error it was given as the context of its
    # own, also where the callback's error was caught in C (the accelerator).
    def bad_handler(lp, ctx):
        raise ValueError("handler broke")

    def failing():
        raise KeyError("original")

    anyloop.set_exception_handler(bad_handler)
    anyloop.call_soon(failing)
    anyloop.call_soon(anyloop.stop)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        anyloop.run_forever()
    [record] = [r for r in caplog.records if "Unhandled error" in r.getMessage()]
    exc = record.exc_info[1]
    assert isinstance(exc, ValueError)
    assert isinstance(exc.__context__, KeyError)


def test_exception_handler_quartet(loop, caplog):
    assert loop.get_exception_handler() is None
    with pytest.raises(TypeError):
        loop.set_exception_handler(42)

    def bad_handler(lp, ctx):
        raise ValueError("handler broke")

    loop.set_exception_handler(bad_handler)
    assert loop.get_exception_handler() is bad_handler
    loop.call_exception_handler({"message": "hello"})
    assert "Unhandled error in exception handler" in caplog.text
    loop.set_exception_handler(None)
    loop.default_exception_handler({"message": "plain", "extra": 1})
    assert "plain" in caplog.text and "extra: 1" in caplog.text


def test_run_until_complete_result_and_exception(loop):
    async def ok():
        await asyncio.sleep(0.001)
        return 7

    async def bad():
        raise KeyError("k")

    assert loop.run_until_complete(ok()) == 7
    with pytest.raises(KeyError):
        loop.run_until_complete(bad())
    fut = loop.create_future()
    loop.call_soon(fut.set_result, "f")
    assert loop.run_until_complete(fut) == "f"


def test_run_until_complete_stopped_early(loop):
    async def forever():
        await asyncio.sleep(10)

    loop.call_soon(loop.stop)
    task = loop.create_task(forever())
    with pytest.raises(RuntimeError, match="stopped before Future completed"):
        loop.run_until_complete(task)
    task.cancel()
    loop.run_until_complete(asyncio.gather(task, return_exceptions=True))


def test_run_forever_reentry_and_other_loop_running(loop):
    async def inner():
        with pytest.raises(RuntimeError, match="already running"):
            loop.run_forever()
        other = uvcffi.new_event_loop()
        try:
            with pytest.raises(RuntimeError, match="another loop is running"):
                other.run_forever()
        finally:
            other.close()
        with pytest.raises(RuntimeError, match="running event loop"):
            loop.close()
        return True

    assert loop.run_until_complete(inner())


def test_closed_loop_refuses_work(loop):
    loop.close()
    loop.close()  # twice is fine
    assert loop.is_closed()
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_soon(print)
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_later(1, print)
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_soon_threadsafe(print)
    with pytest.raises(RuntimeError, match="closed"):
        loop.run_forever()
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        loop.create_task(coro)
    coro.close()
    with pytest.raises(RuntimeError):
        loop.add_reader(0, print)


def test_stop_before_run_runs_one_iteration(loop):
    out = []
    loop.call_soon(out.append, 1)
    loop.stop()
    loop.run_forever()
    assert out == [1]


def test_contextvars_on_every_callback(loop):
    var = contextvars.ContextVar("var", default="default")
    seen = []
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in-ctx")
    loop.call_soon(lambda: seen.append(var.get()), context=ctx)
    loop.call_later(0.001, lambda: seen.append(var.get()), context=ctx)
    var.set("current")
    loop.call_soon(lambda: seen.append(var.get()))
    loop.call_later(0.002, loop.stop)
    loop.run_forever()
    assert sorted(seen) == ["current", "in-ctx", "in-ctx"]


def test_call_soon_threadsafe_wakes_a_blocked_loop(loop):
    out = []

    def from_thread():
        time.sleep(0.05)
        loop.call_soon_threadsafe(out.append, threading.get_ident())
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=from_thread)
    t.start()
    loop.run_forever()  # nothing else to do: blocks in libuv until woken
    t.join()
    assert out == [t.ident]  # (without the wake-up, run_forever would never return)


WAKE_A_LOOP_AS_IT_CLOSES = r"""
import socket, threading
import uvcffi
from uvcffi._uv import lib

loop = uvcffi.new_event_loop()
r, w = socket.socketpair()
# Each wake-up that finds the loop open writes a byte to w, then waits 0.5 s before it wakes
# the loop: the byte wakes it first, and the loop stops and closes inside that wait.
lib.uvc_test_set_wakeup_pause(loop._uv, w.fileno(), 500000)
loop.add_reader(r, loop.stop)
waker = threading.Thread(target=loop._write_to_self)
loop.call_soon(waker.start)
loop.run_forever()
loop.close()
waker.join()
print("ok")
"""


def test_a_wake_up_from_another_thread_as_the_loop_closes():
    """call_soon_threadsafe (and _write_to_self) wake the loop with uvc_wakeup, which the
    loop's close could overtake between its check that the loop is open and libuv's send:
    cffi lets go of the GIL for the call (the accelerator's call_soon_threadsafe does not).
    The send then wrote to the closed eventfd, and libuv aborted the process."""
    out = subprocess.run([sys.executable, "-c", WAKE_A_LOOP_AS_IT_CLOSES],
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "ok\n"), out.stderr


def test_call_soon_threadsafe_many_threads(loop):
    count = 2000
    got = []

    def producer():
        for i in range(count // 4):
            loop.call_soon_threadsafe(got.append, i)

    async def main():
        threads = [threading.Thread(target=producer) for _ in range(4)]
        for t in threads:
            t.start()
        while len(got) < count:
            await asyncio.sleep(0.001)
        for t in threads:
            t.join()

    loop.run_until_complete(asyncio.wait_for(main(), 10))
    assert len(got) == count


def test_threads_posting_in_a_tight_loop_do_not_starve_the_timers(loop):
    # Four threads post as fast as they can.  The loop runs its whole ready queue before it
    # looks at timers again; threads that outran it made that queue grow every iteration
    # (millions of callbacks behind, a 10 ms sleep taking a minute).  asyncio's posters
    # are held back by the self-pipe write of every call; uvcffi's sleep briefly while the
    # loop is more than _POSTER_YIELD_BACKLOG (4,096) behind.
    posted = [0] * 4
    ran = [0]
    stop = threading.Event()

    def cb():
        ran[0] += 1

    def producer(i):
        post = loop.call_soon_threadsafe
        while not stop.is_set():
            post(cb)
            posted[i] += 1

    behind = []

    async def main():
        for _ in range(20):
            await asyncio.sleep(0.001)
            behind.append(sum(posted) - ran[0])

    threads = [threading.Thread(target=producer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        loop.run_until_complete(main())
    finally:
        stop.set()
        for t in threads:
            t.join()
    # About 4,100 at most; 130,000 and more without the brake.  (uvcffi only: asyncio is a
    # few behind on CPython but up to 290,000 on PyPy, whose GIL its posters' writes do not
    # hand over as often.)
    assert max(behind) < 50_000, behind


def test_posts_to_a_loop_that_is_not_running_never_sleep(loop, monkeypatch):
    # The brake above lets a running loop catch up; a loop that is not running cannot, so
    # a program that posts thousands of callbacks before it runs the loop (or the suite's
    # million) must not be made to sleep for each (20,000 posts took 1.5 s, not 0.015).
    sleeps = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    ran = []
    for i in range(10_000):
        loop.call_soon_threadsafe(ran.append, i)
    assert sleeps == []
    monkeypatch.undo()
    loop.run_until_complete(asyncio.sleep(0))
    assert ran == list(range(10_000))


def test_create_task_name_context_and_factory(loop):
    var = contextvars.ContextVar("v", default=0)

    async def read():
        return var.get()

    ctx = contextvars.copy_context()
    ctx.run(var.set, 5)
    task = loop.create_task(read(), name="reader")
    assert task.get_name() == "reader"
    assert loop.run_until_complete(task) == 0
    if sys.version_info >= (3, 11):
        assert loop.run_until_complete(loop.create_task(read(), context=ctx)) == 5

    made = []

    def factory(lp, coro, **kw):
        t = asyncio.Task(coro, loop=lp, **kw)
        made.append(t)
        return t

    with pytest.raises(TypeError):
        loop.set_task_factory(1)
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory
    t = loop.create_task(read(), name="made")
    assert made == [t] and t.get_name() == "made"
    loop.run_until_complete(t)
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None


def test_run_in_executor_and_shutdown(loop):
    async def main():
        r = await loop.run_in_executor(None, threading.get_ident)
        assert r != threading.get_ident()
        await loop.shutdown_default_executor()
        with pytest.raises(RuntimeError, match="shutdown"):
            loop.run_in_executor(None, print)

    loop.run_until_complete(main())


def test_set_default_executor(loop):
    import concurrent.futures

    ex = concurrent.futures.ThreadPoolExecutor(1)
    loop.set_default_executor(ex)
    assert loop.run_until_complete(loop.run_in_executor(None, lambda: 3)) == 3
    if sys.version_info >= (3, 11):
        with pytest.raises(TypeError):
            loop.set_default_executor(object())
    loop.close()
    ex.shutdown()


def test_shutdown_asyncgens(loop):
    closed = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    async def main():
        g = agen()
        await g.__anext__()
        return g

    g = loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert closed == [True]
    del g


def test_debug_mode(loop, caplog):
    assert loop.get_debug() in (True, False)
    loop.set_debug(True)
    assert loop.get_debug()
    loop.slow_callback_duration = 0.01
    loop.call_soon(time.sleep, 0.03)
    loop.call_soon(loop.stop)
    with caplog.at_level("WARNING", logger="asyncio"):
        loop.run_forever()
    assert "took" in caplog.text

    errors = []

    async def main():
        def other_thread():
            try:
                loop.call_soon(print)
            except RuntimeError as exc:
                errors.append(exc)

        t = threading.Thread(target=other_thread)
        t.start()
        await loop.run_in_executor(None, t.join)

    loop.run_until_complete(main())
    assert errors and "Non-thread-safe" in str(errors[0])
    loop.set_debug(False)


def test_debug_mode_times_io_callbacks(anyloop, caplog):
    # asyncio's I/O callbacks are handles, so debug mode logs a slow data_received as it
    # logs any slow callback; uvcffi's run from its events, and are timed one by one.
    # (A duration of 0 makes every callback slow: nothing here depends on the clock.)
    anyloop.set_debug(True)
    anyloop.slow_callback_duration = 0.0
    got = []

    class Reader(asyncio.Protocol):
        def data_received(self, data):
            got.append(data)

    async def main():
        a, b = socket.socketpair()
        transport, _ = await anyloop.create_connection(Reader, sock=a)
        b.send(b"slow")
        while not got:
            await asyncio.sleep(0)
        transport.close()
        b.close()

    with caplog.at_level("WARNING", logger="asyncio"):
        anyloop.run_until_complete(main())
    assert got == [b"slow"]
    # asyncio names the transport's reading method, uvcffi the event and its transport.
    io_callback = "_read_ready()" if anyloop.kind == "asyncio" else "event of <SocketTransport"
    io_logs = [r.getMessage() for r in caplog.records
               if r.getMessage().startswith("Executing <") and io_callback in r.getMessage()]
    assert io_logs, caplog.text
    anyloop.set_debug(False)


def test_reader_and_writer(loop):
    r, w = socket.socketpair()
    r.setblocking(False)
    w.setblocking(False)
    got = []

    def on_readable():
        got.append(r.recv(100))
        if b"".join(got) == b"hello":
            assert loop.remove_reader(r)
            loop.stop()

    def on_writable():
        w.send(b"hello")
        assert loop.remove_writer(w.fileno())

    loop.add_reader(r, on_readable)
    loop.add_writer(w, on_writable)
    loop.run_forever()
    assert b"".join(got) == b"hello"
    assert not loop.remove_reader(r)
    assert not loop.remove_writer(w)
    r.close()
    w.close()


def test_reader_replaced_and_shared_poll(loop):
    r, w = socket.socketpair()
    out = []
    loop.add_reader(r, out.append, "first")
    loop.add_reader(r, lambda: (out.append("second"), r.recv(10), loop.stop()))
    loop.add_writer(r, lambda: None)  # same fd, one poll handle for both
    w.send(b"x")
    loop.run_forever()
    assert out == ["second"]
    assert loop.remove_writer(r) and loop.remove_reader(r)
    r.close()
    w.close()


def test_debug_mode_handles_say_where_the_user_created_them(anyloop):
    # repr() of a handle in debug mode ends "created at FILE:LINE" of the user's call.
    loop = anyloop
    loop.set_debug(True)
    here = sys._getframe()
    made = [(loop.call_soon(print), here.f_lineno)]
    made.append((loop.call_soon_threadsafe(print), here.f_lineno))
    made.append((loop.call_later(60, print), here.f_lineno))
    made.append((loop.call_at(loop.time() + 60, print), here.f_lineno))
    for handle, line in made:
        assert repr(handle).endswith(f"created at {__file__}:{line}>"), repr(handle)
        handle.cancel()


def test_debug_mode_tracebacks_end_at_the_caller_of_methods_fetched_before(anyloop):
    # A bound method kept from before set_debug(True) (a callback registry, say) records
    # the same source traceback as a fresh one: its last frame is the caller's.
    loop = anyloop
    call_soon, call_soon_threadsafe = loop.call_soon, loop.call_soon_threadsafe
    call_later, call_at, create_task = loop.call_later, loop.call_at, loop.create_task
    loop.set_debug(True)

    async def nothing():
        pass

    made = {
        "call_soon": call_soon(print),
        "call_soon context=": call_soon(print, context=None),
        "call_soon_threadsafe": call_soon_threadsafe(print),
        "call_later": call_later(60, print),
        "call_later by keyword": call_later(delay=60, callback=print),
        "call_at": call_at(loop.time() + 60, print),
    }
    task = create_task(nothing())
    last = {what: h._source_traceback[-1].name for what, h in made.items()}
    last["create_task"] = task._source_traceback[-1].name
    for handle in made.values():
        handle.cancel()
    loop.run_until_complete(task)
    me = sys._getframe().f_code.co_name
    assert last == dict.fromkeys(last, me)
    loop.set_debug(False)


def test_handle_reprs_name_asyncio_classes(anyloop):
    # Logs and debuggers show handles by repr: as asyncio's Handle and TimerHandle.
    anyloop.set_debug(False)  # (debug mode adds where each was created)
    soon = anyloop.call_soon(print)
    later = anyloop.call_later(60, print)
    assert repr(soon) == "<Handle print()>"
    assert repr(later).startswith("<TimerHandle when=") and repr(later).endswith(" print()>")
    soon.cancel()
    later.cancel()
    assert repr(soon) == "<Handle cancelled>"
    assert repr(later).startswith("<TimerHandle cancelled when=")


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_timers_due_with_one_that_interrupts_the_loop_still_run(anyloop, exc):
    # Three timers come due in one iteration and the first raises KeyboardInterrupt (or
    # SystemExit) out of run_forever().  The other two were due: they run, in their order,
    # when the loop runs again; a task sleeping on one of them wakes up.
    loop = anyloop
    ran = []

    def interrupt():
        raise exc

    async def sleeper():
        await asyncio.sleep(0.02)
        ran.append("sleeper woke")

    task = loop.create_task(sleeper())
    loop.run_until_complete(asyncio.sleep(0))  # the task's timer is in the heap now
    when = loop.time() + 0.01
    loop.call_at(when, interrupt)
    second = loop.call_at(when, ran.append, "second")
    loop.call_soon(time.sleep, 0.05)  # all three are due when the loop polls next
    with pytest.raises(exc):
        loop.run_forever()
    assert ran == [] and not second.cancelled()
    loop.run_until_complete(task)
    assert ran == ["second", "sleeper woke"]


@pytest.mark.parametrize("which", ["reader", "writer"])
def test_a_watch_made_after_the_poll_does_not_get_its_event(anyloop, which):
    # The fd is ready when the loop polls; a callback that was ready before the poll then
    # reads the data and watches the fd anew (what a sock_recv() after another does).  The
    # new handle must not run for the event seen before it existed: the data is gone, and
    # a reader that trusts readiness (recv() without catching BlockingIOError) would fail.
    # asyncio only runs the handles it found when it polled.
    loop = anyloop
    r, w = socket.socketpair()
    r.setblocking(False)
    stale, fresh, old, taken = [], [], [], []
    add = loop.add_reader if which == "reader" else loop.add_writer
    remove = loop.remove_reader if which == "reader" else loop.remove_writer

    def new_handle():
        if which == "reader":
            try:
                fresh.append(r.recv(100))
            except BlockingIOError:
                stale.append("called with nothing to read")
        else:
            fresh.append("writable")
        remove(r)
        loop.stop()

    def watch_anew():
        if which == "reader":
            taken.append(r.recv(100))  # what made the fd readable: gone now
        remove(r)
        add(r, new_handle)
        if which == "reader":
            loop.call_soon(w.send, b"y")  # a later poll reports the fd again, for this

    w.send(b"x")
    add(r, old.append, "old handle")
    loop.call_soon(watch_anew)  # runs after the poll that sees the fd ready
    loop.run_forever()
    assert stale == [] and old == []
    assert taken == ([b"x"] if which == "reader" else [])
    assert fresh == ([b"y"] if which == "reader" else ["writable"])
    r.close()
    w.close()


def test_add_reader_bad_fds(anyloop):
    loop = anyloop
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    # The loop's first watch, on a closed fd: EBADF, also when the loop's own fd set (or
    # selector) opens just then and takes the freed number.
    for add in (loop.add_reader, loop.add_writer, loop.add_reader):
        with pytest.raises(OSError) as info:
            add(r, print)
        assert info.value.errno == errno.EBADF
    with pytest.raises(ValueError):
        loop.add_reader(-1, print)
    with pytest.raises(ValueError):
        loop.add_reader(object(), print)
    with open(__file__) as f:  # epoll refuses regular files, as with asyncio
        with pytest.raises(PermissionError):
            loop.add_reader(f, print)


def test_remove_reader_then_close_fd_then_reuse(loop):
    for _ in range(3):
        r, w = socket.socketpair()
        loop.add_reader(r, print)
        assert loop.remove_reader(r)
        r.close()
        w.close()
    loop.run_until_complete(asyncio.sleep(0))


@pytest.mark.parametrize("which", ["reader", "writer"])
def test_remove_reader_of_a_socket_closed_while_watched(anyloop, which):
    # asyncio's selector finds a file object closed since it was registered (its fileno()
    # is -1 now) by identity: the watch is removed, not refused with ValueError.
    loop = anyloop
    add, remove = getattr(loop, "add_" + which), getattr(loop, "remove_" + which)
    r, w = socket.socketpair()
    number = r.fileno()
    ready = loop.create_future()
    w.send(b"x")
    add(r, lambda: ready.done() or ready.set_result(None))
    loop.run_until_complete(ready)
    r.close()
    assert remove(r) is True
    with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
        remove(r)  # no longer watched: nothing to find it by
    assert remove(number) is False
    w.close()


@pytest.mark.parametrize("which", ["reader", "writer"])
def test_remove_reader_of_a_closed_socket_after_the_loop_closed(which):
    # asyncio answers a closed loop before it looks the fd up: a closed socket (fileno()
    # -1) is "not watched", not ValueError.  An object with no fileno() is still refused.
    for loop in (uvcffi.new_event_loop(), asyncio.new_event_loop()):
        loop.close()
        remove = getattr(loop, "remove_" + which)
        s = socket.socket()
        s.close()
        assert remove(s) is False, loop
        assert remove(-1) is False, loop
        with pytest.raises(ValueError, match="Invalid file object"):
            remove(object())


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals need the main thread"
)
def test_signal_handler(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, lambda *a: (got.append(a), loop.stop()), "arg")
    loop.call_later(0.01, os.kill, os.getpid(), signal.SIGUSR1)
    loop.run_forever()
    assert got == [("arg",)]
    assert loop.remove_signal_handler(signal.SIGUSR1)
    assert not loop.remove_signal_handler(signal.SIGUSR1)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_signal_handler_bad_input(loop):
    async def coro():
        pass

    with pytest.raises(TypeError):
        loop.add_signal_handler(signal.SIGUSR1, coro)
    with pytest.raises(TypeError):
        loop.add_signal_handler("x", print)
    with pytest.raises(ValueError):
        loop.add_signal_handler(signal.NSIG + 1, print)
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGKILL, print)
    assert not loop._signal_handlers

    errors = []

    def other():
        try:
            loop.add_signal_handler(signal.SIGUSR2, print)
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert errors


def test_signal_interrupts_a_loop_blocked_in_libuv():
    """Ctrl-C (SIGINT, default handler) must stop a loop that waits in libuv at once."""
    code = (
        "import uvcffi, os, signal, threading, time\n"
        "loop = uvcffi.new_event_loop()\n"
        "threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
        "t = time.monotonic()\n"
        "try:\n"
        "    loop.run_forever()\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', round(time.monotonic() - t, 1))\n"
        "loop.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    # Without the wake-up the loop never returns and the subprocess times out.
    assert out.stdout.startswith("interrupted"), out.stderr


def test_close_releases_handles_and_fds(loop):
    before = len(os.listdir("/proc/self/fd"))
    loops = [uvcffi.new_event_loop() for _ in range(5)]
    socks = []
    for lp in loops:
        r, w = socket.socketpair()
        socks += [r, w]
        lp.add_reader(r, print)
    for lp in loops:
        lp.close()
    for s in socks:
        s.close()
    assert len(os.listdir("/proc/self/fd")) == before


def test_unclosed_loop_warns():
    lp = uvcffi.new_event_loop()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        del lp
        gc.collect()
    assert any(issubclass(x.category, ResourceWarning) for x in w)


def test_uvcffi_run_and_loop_factory():
    async def main():
        return type(asyncio.get_running_loop())

    assert uvcffi.run(main()) is uvcffi.Loop
    if sys.version_info >= (3, 12):
        assert asyncio.run(main(), loop_factory=uvcffi.new_event_loop) is uvcffi.Loop


def test_uvcffi_run_makes_its_loop_the_current_one_while_it_runs():
    # As asyncio.run(): the policy's loop (what another thread reaches through
    # asyncio.get_event_loop_policy().get_event_loop()) is the running one, and no loop is
    # current afterwards.  On 3.11 a Runner given a loop factory left the policy to make a
    # second, never-run selector loop.
    async def main():
        policy_loop = asyncio.get_event_loop_policy().get_event_loop()
        return policy_loop is asyncio.get_running_loop()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert uvcffi.run(main()) is True
        assert asyncio.run(main()) is True
        with pytest.raises(RuntimeError):
            asyncio.get_event_loop_policy().get_event_loop()


def test_uvcffi_run_inside_a_running_loop_is_refused_cleanly():
    # As asyncio.run(): a RuntimeError before anything is created, and no warning (3.11's
    # Runner alone made a loop, failed to run it and left a coroutine never awaited).
    async def inner():
        pass

    async def main():
        coro = inner()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(RuntimeError, match="cannot be called from a running"):
                uvcffi.run(coro)
            gc.collect()
        coro.close()
        return [str(w.message) for w in caught]

    assert uvcffi.run(main()) == []


def test_policy_and_install():
    old = asyncio.get_event_loop_policy()
    try:
        uvcffi.install()
        lp = asyncio.new_event_loop()
        assert isinstance(lp, uvcffi.Loop)
        lp.close()
    finally:
        asyncio.set_event_loop_policy(old)


def test_python_m_uvcffi(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(
        "import asyncio, sys\n"
        "async def main():\n"
        "    await asyncio.sleep(0.001)\n"
        "    print(type(asyncio.get_running_loop()).__module__, sys.argv[1:], __name__)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "uvcffi", str(script), "a", "b"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["uvcffi._loop", "['a',", "'b']", "__main__"]


@pytest.mark.asyncio
async def test_pytest_asyncio_runs_on_uvcffi():
    assert isinstance(asyncio.get_running_loop(), uvcffi.Loop)
    await asyncio.sleep(0)


def test_an_fd_watched_before_never_silences_a_transport(loop):
    """An fd add_reader watched (and let go) may belong to a transport later, which must
    keep receiving whatever the loop does with its other watched fds."""
    a, b = socket.socketpair()
    loop.add_reader(a, print)
    assert loop.remove_reader(a)  # a stopped, idle poll handle for a's fd stays behind
    got = []

    class Proto(asyncio.Protocol):
        def data_received(self, data):
            got.append(data)

    async def main():
        transport, _ = await loop.connect_accepted_socket(Proto, a)
        pairs = [socket.socketpair() for _ in range(80)]
        for r, _w in pairs:  # enough idle polls to sweep them all, a's included
            loop.add_reader(r, print)
            loop.remove_reader(r)
        b.send(b"still heard")
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.005)
        transport.close()
        for r, w in pairs:
            r.close()
            w.close()

    loop.run_until_complete(main())
    b.close()
    assert got == [b"still heard"]


def test_timers_cancelled_before_the_next_iteration_never_reach_the_heap(loop):
    fired = []
    # Due well after the first iteration, even on a loaded machine or under a sanitizer
    # (at 1 ms it could fire in that iteration and leave the heap before the check).
    kept = loop.call_later(0.1, fired.append, "kept")
    for _ in range(10):
        loop.call_later(10, fired.append, "cancelled").cancel()
    assert not kept.cancelled() and kept.when() > loop.time() - 1
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert [entry[2] for entry in loop._timers] == [kept]
    loop.run_until_complete(asyncio.sleep(0.15))
    assert fired == ["kept"]


def test_python_m_uvcffi_module_mode_and_usage(tmp_path):
    pkg = tmp_path / "demo_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "app.py").write_text(
        "import asyncio, sys\n"
        "async def main():\n"
        "    print(type(asyncio.get_running_loop()).__name__, sys.argv[1:])\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-m", "uvcffi", "-m", "demo_pkg.app", "x"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Loop", "['x']"]
    usage = subprocess.run(
        [sys.executable, "-m", "uvcffi"], capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_python_m_uvcffi_runs_a_directory_a_command_and_misses_a_module_as_python(tmp_path):
    # A directory's sys.path[0] is its absolute path (python's; not the relative one, which
    # breaks imports once the program changes directory), sys.argv[0] as given; a module
    # that cannot be found is python's one line and status 1, not a traceback; -c runs a
    # command (it was "can't open file '-c'"); a missing script is this python's words
    # (PyPy's leave the path unquoted).
    app = tmp_path / "app_dir"
    app.mkdir()
    (app / "__main__.py").write_text("import sys; print(sys.path[0], sys.argv, __file__)\n")
    command = "import sys; print(sys.argv, repr(sys.path[0]), __name__, __loader__); 1/0"
    for args in (["app_dir", "x"], ["-m", "no_such_module_uvcffi"], ["-c", command, "y"],
                 ["no_such_script_uvcffi.py"]):
        outs = [subprocess.run([sys.executable, *runner, *args], capture_output=True, text=True,
                               timeout=60, cwd=tmp_path)
                for runner in ([], ["-m", "uvcffi"])]
        # (a traceback's last line: ours also shows the frames of python -m uvcffi)
        python, ours = [(out.returncode, out.stdout, out.stderr.splitlines()[-1:])
                        for out in outs]
        assert ours == python


@pytest.mark.skipif(
    not os.path.exists("/proc/self/fdinfo"), reason="reads the epoll set from /proc"
)
def test_a_forked_child_gets_its_own_epoll_set(loop):
    """After fork the child's loop must not share libuv's epoll set with its parent (each
    would take the other's events): what the child watches never shows in the parent's set."""
    from uvcffi._uv import lib

    r, w = socket.socketpair()
    report_r, report_w = os.pipe()
    loop.run_until_complete(asyncio.sleep(0))  # the loop has run in the parent
    pid = os.fork()
    if pid == 0:  # the child watches r, then says so
        code = 1
        try:
            got = []
            loop.add_reader(r, lambda: (got.append(r.recv(10)), loop.stop()))
            loop.call_soon(w.send, b"child")
            loop.call_later(5, loop.stop)
            loop.run_forever()
            code = 0 if got == [b"child"] else 2
        finally:
            os.write(report_w, b"x")
            os._exit(code)
    os.read(report_r, 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    for epfd in (lib.uvc_backend_fd(loop._uv), lib.uvc_fdset_fd(loop._uv)):
        if epfd < 0:
            continue  # the fd set is opened by the first watch: the parent has none
        with open(f"/proc/self/fdinfo/{epfd}") as f:
            watched = [line.split()[1] for line in f if line.startswith("tfd:")]
        assert str(r.fileno()) not in watched
    loop.run_until_complete(asyncio.sleep(0.001))
    for fd in (report_r, report_w):
        os.close(fd)
    r.close()
    w.close()


class _Watchdog:
    """Stops a loop that made no progress for ``seconds`` and records that it had to: a
    stalled loop then fails the test at once instead of hanging it."""

    def __init__(self, loop, seconds=5.0):
        self.loop = loop
        self.seconds = seconds
        self.stalls = 0
        self._progress = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def progress(self):
        self._progress.set()

    def _watch(self):
        while not self._done.is_set():
            if not self._progress.wait(self.seconds):
                if self._done.is_set():
                    return
                self.stalls += 1
                self.loop.call_soon_threadsafe(self.loop.stop)
            self._progress.clear()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._progress.set()
        self._thread.join()

    def run(self, coro):
        """Run ``coro`` on the loop; fail if the loop stalled."""
        try:
            self.loop.run_until_complete(coro)
        except RuntimeError:
            if not self.stalls:
                raise
        assert self.stalls == 0, f"the loop slept {self.seconds} s with a timer due"


def test_a_timer_due_before_libuv_polls_still_wakes_the_loop(loop):
    # The window made wide on purpose: every uvc_run_once sleeps 3 ms between arming its
    # 1 ms wake-up timer and running libuv, so the timer is always due before libuv polls.
    from uvcffi._uv import lib
    lib.uvc_test_set_arm_delay(loop._uv, 3000)
    fired = []

    async def main(dog):
        for i in range(30):
            await asyncio.sleep(0.001)
            fired.append(i)
            dog.progress()

    with _Watchdog(loop) as dog:
        dog.run(main(dog))
    assert fired == list(range(30))


def test_many_short_timers_never_stall(loop):
    # A bounded soak: 20 rounds of 500 concurrent sleeps of 0-3 ms.
    rounds = []

    async def sleeper(i):
        await asyncio.sleep((i % 4) / 1000)

    async def main(dog):
        for r in range(20):
            await asyncio.gather(*(sleeper(i) for i in range(500)))
            rounds.append(r)
            dog.progress()

    with _Watchdog(loop) as dog:
        dog.run(main(dog))
    assert len(rounds) == 20


async def _woken_from_another_thread(loop):
    """Wait with no timer of one's own: the loop's only timers are the caller's."""
    woken = loop.create_future()
    waker = threading.Timer(0.02, loop.call_soon_threadsafe, (woken.set_result, None))
    waker.start()
    await woken
    waker.join()


@pytest.mark.parametrize("make", [
    lambda: asyncio.sleep(math.inf),
    lambda: asyncio.sleep(1e306),
    lambda: asyncio.wait_for(asyncio.Event().wait(), timeout=math.inf),
], ids=["sleep-inf", "sleep-1e306", "wait_for-inf"])
def test_an_infinite_wait_waits_until_cancelled(anyloop, make):
    # "Sleep for ever" is a common idiom: the timer is the earliest, and the loop must wait
    # on it (until something else happens), not fail computing its timeout.
    async def main():
        task = asyncio.ensure_future(make())
        await _woken_from_another_thread(anyloop)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return "cancelled"

    assert anyloop.run_until_complete(main()) == "cancelled"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is new in 3.11")
def test_asyncio_timeout_inf(anyloop):
    async def main():
        async with asyncio.timeout(math.inf):
            await _woken_from_another_thread(anyloop)
        return "ok"

    assert anyloop.run_until_complete(main()) == "ok"


def test_call_later_nan_runs_at_once(anyloop):
    out = []
    anyloop.call_later(math.nan, out.append, "nan")
    anyloop.call_later(0.01, anyloop.stop)
    anyloop.run_forever()
    assert out == ["nan"]


@pytest.mark.parametrize("when", ["x", b"1", None, object()])
def test_call_at_refuses_a_non_number(loop, when):
    with pytest.raises(TypeError):
        loop.call_at(when, print)
    # The loop is still sound.
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_slow_task_step_names_the_task(anyloop, caplog):
    async def slow_coroutine():
        time.sleep(0.06)

    anyloop.set_debug(True)
    anyloop.slow_callback_duration = 0.05
    with caplog.at_level("WARNING", logger="asyncio"):
        anyloop.run_until_complete(slow_coroutine())
    anyloop.set_debug(False)
    lines = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert any(line.startswith("Executing <Task finished name=") and "slow_coroutine" in line
               for line in lines), lines
