"""The loop API's corners, each side by side with what asyncio (or python) does."""
import asyncio
import contextvars
import errno
import gc
import os
import subprocess
import sys

import pytest

import uvcffi


def test_scheduling_arguments_bind_by_keyword(anyloop):
    # asyncio's call_soon(callback, *args, context=None) and call_later(delay, callback, ...)
    # are plain Python signatures: their leading arguments may be passed by keyword.
    out = []
    anyloop.call_soon(callback=lambda: out.append("soon"))
    anyloop.call_soon_threadsafe(callback=lambda: out.append("threadsafe"))
    anyloop.call_later(delay=0, callback=lambda: out.append("later"))
    anyloop.call_later(0, callback=lambda: out.append("later, context"), context=None)
    anyloop.call_at(when=anyloop.time(), callback=lambda: out.append("at"))
    anyloop.call_later(0.001, anyloop.stop)
    anyloop.run_forever()
    assert out == ["soon", "threadsafe", "later", "later, context", "at"]


@pytest.mark.parametrize("call", [
    lambda lp: lp.call_soon(),
    lambda lp: lp.call_soon_threadsafe(context=None),
    lambda lp: lp.call_later(1),
    lambda lp: lp.call_at(),
    lambda lp: lp.call_soon(print, context=None, callback=print),
    lambda lp: lp.call_later(1, print, foo=1),
])
def test_scheduling_calls_that_do_not_bind_raise_type_error(anyloop, call):
    with pytest.raises(TypeError, match="argument"):
        call(anyloop)


def _run_python(*args, cwd):
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                         timeout=60, cwd=cwd)
    return out.returncode, out.stdout, out.stderr


def test_python_m_uvcffi_script_gets_the_sys_path_python_gives_it(tmp_path):
    # python app.py puts the script's directory first, never the current directory
    # (python -m does): a module next to where the user stands must not become importable.
    app = tmp_path / "sub" / "app.py"
    app.parent.mkdir()
    app.write_text("import sys\nprint(repr(sys.path))\n")
    plain = _run_python(str(app), cwd=tmp_path)
    on_uvcffi = _run_python("-m", "uvcffi", str(app), cwd=tmp_path)
    assert plain[0] == on_uvcffi[0] == 0, on_uvcffi[2]
    assert on_uvcffi[1] == plain[1]


def test_python_m_uvcffi_missing_script_exits_as_python_does(tmp_path):
    plain = _run_python("missing.py", cwd=tmp_path)
    on_uvcffi = _run_python("-m", "uvcffi", "missing.py", cwd=tmp_path)
    assert on_uvcffi[0] == plain[0] == 2
    assert "can't open file" in on_uvcffi[2] and "Traceback" not in on_uvcffi[2]


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="context= is asyncio's from 3.11")
def test_create_task_context_before_311_is_refused_as_asyncio_refuses_it(anyloop, monkeypatch):
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    async def work():
        return 1

    coro = work()
    with pytest.raises(TypeError, match="context"):
        anyloop.create_task(coro, context=contextvars.copy_context())
    assert anyloop.run_until_complete(coro) == 1  # still the caller's, untouched
    del coro
    gc.collect()
    assert unraisable == []


_CTRL_C_IN_THE_POLL = """
import asyncio, os, signal, socket, threading, time
import uvcffi
from uvcffi._uv import lib

loop = uvcffi.new_event_loop()
got = []

class Receiver(asyncio.DatagramProtocol):
    def datagram_received(self, data, addr):
        got.append(data)

transport, _ = loop.run_until_complete(
    loop.create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 0)))
address = transport.get_extra_info("sockname")
loop.call_later(60, print)  # a timer, so that the poll waits with a timeout
# Every poll with a timeout now sleeps 300 ms first: the datagram and Ctrl-C both come in
# that sleep, so the poll that follows receives the datagram and returns to Python with
# KeyboardInterrupt pending.
lib.uvc_test_set_arm_delay(loop._uv, 300000)

def peer():
    time.sleep(0.1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"kept", address)
    os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=peer).start()
try:
    loop.run_forever()
except KeyboardInterrupt:
    print("interrupted")
lib.uvc_test_set_arm_delay(loop._uv, 0)

async def wait_for_it():
    for _ in range(400):
        if got:
            return
        await asyncio.sleep(0.005)

loop.run_until_complete(wait_for_it())
print(got)
transport.close()
loop.run_until_complete(asyncio.sleep(0))
loop.close()
"""


def test_ctrl_c_as_a_poll_returns_loses_none_of_its_events():
    # libuv has already received what a poll's events report (a datagram, a lookup's
    # result): a KeyboardInterrupt raised as the poll returns must leave them for the next
    # run, as asyncio's level-triggered selector leaves its I/O for the next select().
    out = subprocess.run([sys.executable, "-c", _CTRL_C_IN_THE_POLL], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.split("\n")[:2] == ["interrupted", "[b'kept']"], out.stderr


def test_a_kept_event_of_a_slot_python_never_registered_is_dropped(loop):
    # A Ctrl-C between a request's start in C and its registration in Python leaves the
    # request's slot without an owner, possibly past the end of the loop's list of owners;
    # its event, kept for the next run by a later Ctrl-C, must be dropped as the dispatch
    # drops it, not raise IndexError out of run_forever().
    from uvcffi._uv import lib

    loop._backlog.append([lib.UVC_EV_DNS, len(loop._slots) + 3, 0, 0, 0])
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert loop._backlog == []


@pytest.mark.parametrize("kind", ["UVC_EV_DNS", "UVC_EV_READ", "UVC_EV_READABLE"])
def test_the_python_dispatch_drops_an_event_of_a_slot_python_never_registered(loop, kind):
    # The same event handed out by the Python dispatch (pure mode, PyPy) is dropped
    # silently, as the accelerator's dispatch drops it, not reported to the exception
    # handler as an IndexError "in None"; a real owner's error still is.
    from uvcffi._uv import lib

    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    far = len(loop._slots) + 3
    loop._dispatch([getattr(lib, kind), far, 0, 0, 0], 1)
    assert errors == []

    class Failing:
        def _uv_event(self, *args):
            raise IndexError("the owner's own")

    slot = next(i for i, owner in enumerate(loop._slots) if owner is None)
    loop._slots[slot] = Failing()
    try:
        loop._dispatch([lib.UVC_EV_DNS, slot, 0, 0, 0], 1)
    finally:
        loop._slots[slot] = None
    assert [str(ctx["exception"]) for ctx in errors] == ["the owner's own"]


def _open_all():
    fds = []
    try:
        while True:
            fds.append(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        assert exc.errno == errno.EMFILE
    return fds


def test_a_loop_that_cannot_have_its_fds_is_not_made():
    # asyncio's loop raises OSError (EMFILE) when its self-pipe cannot be made.  uvcffi's
    # raised MemoryError when libuv could not start, and was made without its signal
    # socketpair when only that failed: its signal handlers then never ran.
    import resource

    factory = uvcffi.new_event_loop
    needs = 6  # fds a loop opens: libuv's epoll fd and signal pipe, an eventfd, a socketpair
    factory().close()  # (libuv's process-wide signal pipe, made by the first loop)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1024), hard))
    fill = _open_all()  # every fd number below the limit in use
    try:
        for free in range(needs):  # too few, at each step of the loop's making
            for _ in range(free):
                os.close(fill.pop())
            with pytest.raises(OSError) as info:
                factory().close()
            assert info.value.errno == errno.EMFILE, free
            again = _open_all()  # what the failed loop opened, it closed
            fill += again
            assert len(again) == free
    finally:
        for fd in fill:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    made = factory()
    made.close()


def test_call_later_refuses_a_delay_that_is_no_real_number(loop):
    out = []
    with pytest.raises(TypeError, match="real number"):
        loop.call_later(1j, out.append, "never")
    loop.call_later(0, out.append, "ran")
    loop.call_later(0.001, loop.stop)
    loop.run_forever()  # (the complex time in the heap made this raise TypeError)
    assert out == ["ran"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="a DeprecationWarning before 3.11")
def test_set_default_executor_refuses_other_executors_in_asyncio_words(anyloop):
    with pytest.raises(TypeError, match="^executor must be ThreadPoolExecutor instance$"):
        anyloop.set_default_executor(object())


def test_python_m_uvcffi_script_is_the_main_module_python_makes(tmp_path):
    # python app.py: __file__ absolute (a script that changes directory still finds its
    # files), sys.argv[0] as given, a SourceFileLoader; no __future__ import of uvcffi's
    # own leaks into the script (annotations stay evaluated).
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.txt").write_text("found")
    (tmp_path / "sub" / "app.py").write_text(
        "import os, sys\n"
        "os.chdir(os.sep)\n"
        "print(open(os.path.join(os.path.dirname(__file__), 'data.txt')).read())\n"
        "print(sys.argv, type(__loader__).__name__, __spec__, __cached__)\n"
        "x: 'int' = 1\n"
        "def f(a: int): pass\n"
        "print(f.__annotations__)\n"
    )
    plain = _run_python(os.path.join("sub", "app.py"), "arg", cwd=tmp_path)
    on_uvcffi = _run_python("-m", "uvcffi", os.path.join("sub", "app.py"), "arg", cwd=tmp_path)
    assert plain[0] == on_uvcffi[0] == 0, on_uvcffi[2]
    assert on_uvcffi[1] == plain[1]


def test_ctrl_c_between_two_kept_events_keeps_the_rest(loop):
    # Events kept for the next run are handed out one by one; in debug mode each is timed
    # and a slow one logged.  A KeyboardInterrupt raised there, between two of them (a
    # Ctrl-C lands anywhere), must keep the rest for the next run.
    import logging

    from uvcffi._uv import lib

    got = []

    class Owner:
        def _uv_event(self, kind, a, b, c):
            got.append(a)

    class CtrlC(logging.Handler):
        def emit(self, record):
            if "event of" in record.getMessage() and not got[1:]:
                raise KeyboardInterrupt

    slot = len(loop._slots) + 1
    loop._slot_register(slot, Owner())
    loop._backlog += [[lib.UVC_EV_CONNECT, slot, 1, 0, 0], [lib.UVC_EV_CONNECT, slot, 2, 0, 0]]
    loop.set_debug(True)
    loop.slow_callback_duration = 0  # every event is logged as slow
    handler = CtrlC()
    logging.getLogger("asyncio").addHandler(handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_forever()
        assert got == [1]
        loop.call_soon(loop.stop)
        loop.run_forever()
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
    assert got == [1, 2]
    loop._slots[slot] = None


def test_a_timer_that_falls_due_while_callbacks_run_waits_for_the_next_iteration(anyloop):
    # asyncio takes the due timers when its poll returns: a timer that falls due while the
    # callbacks of the iteration run waits behind what they schedule.  (uvcffi took them
    # after the callbacks: a timeout fired before the wake-up of a task that had finished.)
    import time

    out = []
    late = []

    def slow():
        if anyloop.time() >= timer.when():
            late.append(True)  # the machine stalled: the timer was due at this poll
        out.append("slow")
        anyloop.call_soon(out.append, "scheduled")
        while anyloop.time() <= timer.when():  # the loop is blocked past the deadline
            time.sleep(0.001)

    anyloop.call_later(0.05, anyloop.call_soon, slow)  # slow is a ready callback
    timer = anyloop.call_later(0.1, out.append, "timer")
    anyloop.call_later(0.15, anyloop.stop)
    anyloop.run_forever()
    if late:
        pytest.skip("the loop was too late to see the timer fall due during a callback")
    assert out == ["slow", "scheduled", "timer"]


def test_timeout_does_not_overtake_a_wake_up_already_scheduled(anyloop):
    import time

    if not hasattr(asyncio, "timeout"):
        pytest.skip("asyncio.timeout() is 3.11's")
    late = []

    async def main():
        fut = anyloop.create_future()

        def blocking_then_set():
            if anyloop.time() >= cm.when():
                late.append(True)  # the machine stalled: the timeout was due at this poll
            while anyloop.time() <= cm.when():  # a slow callback: the deadline passes
                time.sleep(0.001)
            fut.set_result("done")

        async with asyncio.timeout(0.02) as cm:
            anyloop.call_soon(blocking_then_set)
            return await fut

    try:
        result = anyloop.run_until_complete(main())
    except TimeoutError:
        if not late:
            raise
        pytest.skip("the loop was too late to see the deadline pass during a callback")
    assert result == "done"


def test_an_interrupted_flush_of_new_timers_pushes_none_twice(loop):
    # New timers reach the heap at the start of the next iteration.  An exception in that
    # flush (a Ctrl-C's KeyboardInterrupt lands anywhere; here a deadline whose comparison
    # raises it once) left the list to be flushed again whole: the timers already pushed
    # were pushed twice, and their callbacks ran twice.
    import numbers

    class Deadline(float):
        interrupt = True

        def __lt__(self, other):
            if Deadline.interrupt:
                Deadline.interrupt = False
                raise KeyboardInterrupt
            return float(self) < other

    assert isinstance(Deadline(0), numbers.Real)
    out = []
    now = loop.time()
    loop.call_at(now, out.append, "first")
    # pushed second, it is compared with the first: the comparison raises
    loop.call_at(Deadline(now + 0.001), out.append, "second")
    loop.call_at(now + 0.05, loop.stop)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    loop.run_forever()
    assert out == ["first", "second"]
