"""The CPython accelerator (csrc/cpython/accel.c): each path a million times, with the
reference counts of what it was given and the process's memory flat afterwards.

C that handles Python objects is where crashes and leaks come from; tools/sanitize.sh runs
these too.  The rest of the suite runs on CPython once with the accelerator and once without
(UVCFFI_PURE_PYTHON=1, see tools/test.sh), as CPython tests its C and Python Futures."""
import asyncio
import contextvars
import gc
import os
import socket
import sys

import pytest

from uvcffi import _core

pytestmark = pytest.mark.skipif(
    _core._accel is None,
    reason="no accelerator here (PyPy, or CPython with UVCFFI_PURE_PYTHON=1)")

N = 1_000_000


def _rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4


def _flat(objects):
    """Reference counts of ``objects`` (the caller keeps one reference each)."""
    return [sys.getrefcount(o) for o in objects]


class _Probe:
    """A callback whose calls are counted."""

    def __init__(self):
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1


def _run_batches(loop, schedule, total=N, batch=10_000):
    """schedule(i) ``total`` times, running the loop after each batch."""
    for start in range(0, total, batch):
        for i in range(start, min(start + batch, total)):
            schedule(i)
        loop.run_until_complete(asyncio.sleep(0))


def _check_flat(loop, objects, work):
    loop.run_until_complete(asyncio.sleep(0))
    work(10_000)  # warm-up: caches, free lists, the deque's blocks
    gc.collect()
    refs = _flat(objects)
    rss = _rss_kib()
    work(N)
    gc.collect()
    assert _flat(objects) == refs
    # A leaked handle (or tuple, or context) per call would be >= 50 MiB here.  Under
    # tools/sanitize.sh ASan's quarantine holds freed memory, and LeakSanitizer checks leaks.
    if not os.environ.get("UVCFFI_SANITIZED"):
        assert _rss_kib() - rss < 8 * 1024


def test_the_loop_runs_on_the_accelerator(loop):
    assert loop.call_soon.__self__ is loop._accel
    loop.set_debug(True)
    assert loop.call_soon.__func__ is _core.CoreLoop.call_soon
    loop.set_debug(False)
    assert loop.call_soon.__self__ is loop._accel


def test_call_soon_and_run_handles(loop):
    probe, arg, ctx = _Probe(), object(), contextvars.copy_context()

    def work(total):
        _run_batches(loop, lambda i: loop.call_soon(probe, arg, i, context=ctx), total)

    _check_flat(loop, [probe, arg, ctx, loop], work)
    assert probe.calls == N + 10_000


def test_call_soon_threadsafe(loop):
    probe, arg = _Probe(), object()

    def work(total):
        _run_batches(loop, lambda i: loop.call_soon_threadsafe(probe, arg), total)

    _check_flat(loop, [probe, arg, loop], work)
    assert probe.calls == N + 10_000


@pytest.mark.parametrize("method", ["call_later", "call_at"])
def test_timers_scheduled_and_cancelled(loop, method):
    probe, arg = _Probe(), object()
    schedule = getattr(loop, method)

    def work(total):
        when = loop.time() + 3600.0
        _run_batches(loop, lambda i: schedule(3600.0 if method == "call_later" else when,
                                              probe, arg).cancel(), total)

    _check_flat(loop, [probe, arg, loop], work)
    assert probe.calls == 0


def test_timers_that_fire(loop):
    probe, arg = _Probe(), object()

    def work(total):
        for _start in range(0, total, 10_000):
            for _ in range(10_000):
                loop.call_later(0, probe, arg)
            loop.run_until_complete(asyncio.sleep(0.001))

    _check_flat(loop, [probe, arg, loop], work)
    assert probe.calls == N + 10_000


def test_failing_callbacks_reach_the_handler(loop):
    errors = []
    loop.set_exception_handler(lambda lp, context: errors.append(type(context["exception"])))

    class Boom(Exception):
        pass

    def fail():
        raise Boom("boom")  # a new one each time: a re-raised instance grows its traceback

    def work(total):
        errors.clear()
        _run_batches(loop, lambda i: loop.call_soon(fail), total // 10)
        assert errors == [Boom] * (total // 10)
        errors.clear()

    _check_flat(loop, [fail, Boom, loop], work)


def test_dispatch_of_poll_events(loop):
    # A readable socket nobody drains: one fd-set event per iteration, N iterations.
    r, w = socket.socketpair()
    w.send(b"x")
    probe = _Probe()
    loop.add_reader(r, probe)

    def work(total):
        async def spin():
            for _ in range(total):
                await asyncio.sleep(0)

        loop.run_until_complete(spin())

    _check_flat(loop, [probe, loop], work)
    assert probe.calls >= N
    loop.remove_reader(r)
    r.close()
    w.close()


def test_dispatch_of_reads(loop):
    # A Protocol's stream reads: each message is an EV_READABLE record, a read into the
    # loop's receive buffer and a bytes object, all in the accelerator's dispatch.
    a, b = socket.socketpair()
    got = []

    class Counter(asyncio.Protocol):
        def data_received(self, data):
            got.append(len(data))
            if len(got) % 1000 == 0:
                got.clear()

    async def setup():
        return await loop.connect_accepted_socket(Counter, a)

    transport, protocol = loop.run_until_complete(setup())
    payload = b"m" * 64

    def work(total):
        async def pump():
            for _ in range(total // 10):
                b.send(payload)
                await asyncio.sleep(0)

        loop.run_until_complete(pump())

    _check_flat(loop, [protocol, transport, loop, payload], work)
    transport.close()
    loop.run_until_complete(asyncio.sleep(0))
    b.close()


def test_buffered_reads_and_bytearray_writes(loop):
    # A BufferedProtocol's stream: each message is an EV_READABLE record dispatched in C, a
    # read_into() of the protocol's buffer, and an echo written from a bytearray (the
    # buffer path of stream_write).
    a, b = socket.socketpair()
    b.setblocking(False)

    class Echo(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(256)
            self.reads = 0

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            self.reads += 1
            self.transport.write(self.buf[:nbytes])

    async def setup():
        return await loop.connect_accepted_socket(Echo, a)

    transport, protocol = loop.run_until_complete(setup())
    payload = b"m" * 64

    def work(total):
        async def pump():
            for _ in range(total):
                b.send(payload)
                await asyncio.sleep(0)
                try:
                    b.recv(65536)
                except BlockingIOError:
                    pass

        loop.run_until_complete(pump())

    _check_flat(loop, [protocol, protocol.buf, transport, loop, payload], work)
    assert protocol.reads >= N // 2  # most messages were reads of their own
    transport.close()
    loop.run_until_complete(asyncio.sleep(0))
    b.close()


def test_stream_write_in_c(loop):
    # transport.write(bytes) is StreamWrite's (csrc/cpython/accel.c) on CPython: sent at
    # once, held, or queued when the small send buffer is full (then _write_partial runs in
    # Python); a bytearray and a memoryview go to the Python write(), and so do writes after
    # write_eof(), which raise.
    from uvcffi.transports.stream import SocketTransport

    assert type(SocketTransport.__dict__.get("write", SocketTransport.write)).__name__ == \
        "StreamWrite"
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setblocking(False)

    async def setup():
        return await loop.connect_accepted_socket(asyncio.Protocol, a)

    transport, protocol = loop.run_until_complete(setup())
    transport.set_write_buffer_limits(high=1 << 30)  # no pause_writing() to handle here
    payload = b"w" * 100
    other = [bytearray(payload), memoryview(payload)]
    received = [0]

    def drain():
        while True:
            try:
                n = len(b.recv(1 << 20))
            except BlockingIOError:
                return
            received[0] += n

    def work(total):
        async def pump():
            for _ in range(total // 1000):
                for i in range(1000):
                    transport.write(payload if i % 10 else other[i % 20 // 10])
                while transport.get_write_buffer_size() > 0:
                    drain()
                    await asyncio.sleep(0)
            drain()

        received[0] = 0
        loop.run_until_complete(pump())
        assert received[0] == total * len(payload)

    _check_flat(loop, [protocol, transport, loop, payload, SocketTransport.write] + other, work)

    transport.write_eof()

    def refused(total):
        for _ in range(total):
            try:
                transport.write(payload)
            except RuntimeError:
                pass
            else:
                raise AssertionError("write() after write_eof() did not raise")

    _check_flat(loop, [transport, payload, SocketTransport.write], refused)
    transport.close()
    loop.run_until_complete(asyncio.sleep(0))
    b.close()


def test_tasks_futures_and_slot_methods(loop):
    # create_task() and create_future() of the accelerator, and the SlotMethods
    # loop.get_debug() (which each C Future calls) and transport.is_closing().
    from uvcffi._core import CoreLoop
    from uvcffi.transports.stream import SocketTransport

    assert loop.create_task.__self__ is loop._accel
    assert loop.create_future.__self__ is loop._accel
    assert type(CoreLoop.__dict__["get_debug"]).__name__ == "SlotMethod"
    a, b = socket.socketpair()

    async def setup():
        return await loop.connect_accepted_socket(asyncio.Protocol, a)

    transport, protocol = loop.run_until_complete(setup())

    async def nothing():
        pass

    def work(total):
        for _batch in range(total // 10_000):
            for _ in range(10_000):
                loop.create_future()
                assert not transport.is_closing() and not loop.get_debug()
            tasks = [loop.create_task(nothing()) for _ in range(1_000)]
            loop.run_until_complete(asyncio.gather(*tasks))

    _check_flat(loop, [loop, transport, SocketTransport.is_closing, CoreLoop.get_debug], work)
    transport.close()
    loop.run_until_complete(asyncio.sleep(0))
    b.close()
