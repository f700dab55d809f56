"""An exception raised by a signal handler (pytest-timeout's Failed, an alarm's TimeoutError,
a SystemExit from a SIGTERM handler) while the loop runs.

Python runs a signal handler wherever the interpreter next looks for signals: in the loop's
own code between two callbacks or two events as often as inside one.  asyncio's loop lets
what lands in its own code out of run_forever().  uvcffi's batch loops (the events' dispatch,
the ready queue) each sit in one try: the exception was taken for the failure of the next
callback, logged, or made the fatal error of a transport that had done nothing wrong, and
the run went on (asyncssh's suite under pytest-timeout on PyPy: the timed-out test hung).

Now it leaves the loop, and nothing is lost: the events and callbacks not reached yet run
when the loop runs again, and so does the one it landed on if that one had not begun.

Each test makes the handler run at a known place without timing: the signal is sent by
libc's kill from a callback made of C functions only, so no Python instruction runs between
the kill and the entry of the next Python callback (on CPython's accelerator, which calls
callbacks from C; elsewhere the loop's own Python code comes first).
"""
import asyncio
import ctypes
import functools
import itertools
import os
import signal
import socket
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals need the main thread"
)


class Boom(BaseException):
    """What pytest-timeout's Failed is: a BaseException that is not an exit."""


@pytest.fixture
def boom_on_usr1():
    def handler(signum, frame):
        raise Boom()

    old = signal.signal(signal.SIGUSR1, handler)
    yield
    signal.signal(signal.SIGUSR1, old)


@pytest.fixture
def reported(loop):
    """What reached the loop's exception handler (nothing may: Boom is not a failure)."""
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    return contexts


def kill_in_c(signum=signal.SIGUSR1):
    """A callable of C functions only that sends ``signum`` to this process once, whatever
    it is called with (dict.fromkeys consumes the starmap, which calls libc's kill), and
    does not run the handler itself (os.kill and signal.raise_signal do, at once)."""
    libc_kill = ctypes.CDLL(None, use_errno=True).kill
    libc_kill.argtypes = [ctypes.c_int, ctypes.c_int]
    return functools.partial(dict.fromkeys, itertools.starmap(
        libc_kill, [(os.getpid(), signum)]))


def test_between_callbacks_it_leaves_the_loop_and_every_callback_still_runs(
        loop, boom_on_usr1, reported):
    ran = []

    def record(what):
        ran.append(what)

    loop.call_soon(kill_in_c())
    loop.call_soon(record, "a")  # the handler lands here (CPython: at its entry)
    loop.call_soon(record, "b")
    loop.call_soon(loop.stop)
    with pytest.raises(Boom):
        loop.run_forever()
    loop.run_forever()  # the rest, then stop
    assert ran == ["a", "b"]
    assert reported == []


def test_in_the_due_timers_it_leaves_the_loop_and_the_timers_run_in_their_order(
        loop, boom_on_usr1, reported):
    ran = []

    def record(what):
        ran.append(what)

    when = loop.time() + 0.01
    loop.call_at(when, kill_in_c())
    loop.call_at(when, record, "a")
    loop.call_at(when, record, "b")
    loop.call_soon(time.sleep, 0.05)  # all three are due when the loop polls next
    with pytest.raises(Boom):
        loop.run_forever()
    loop.call_soon(loop.stop)  # (after the kept timers: they went first in the queue)
    loop.run_forever()
    assert ran == ["a", "b"]
    assert reported == []


@pytest.mark.parametrize("where", ["inside data_received", "before the next data_received"])
def test_in_the_events_dispatch_it_leaves_the_loop_and_no_byte_is_lost(
        loop, boom_on_usr1, reported, where):
    """Two connections' reads in one dispatch; the handler runs inside the first's
    data_received (signal.raise_signal), or, its data_received being C (kill_in_c), at
    the entry of the second's (the accelerator) or between the two (the Python dispatch).
    Boom leaves the loop; each byte arrives once, in order.  Inside data_received, Boom cut
    it short: the first connection's fate is asyncio's (the fatal error, connection_lost
    with Boom); landing before the second's, Boom is neither's failure: both live on."""
    got = {0: [], 1: []}
    lost = {}
    transports = []

    class Server(asyncio.Protocol):
        def __init__(self, index):
            # (a transport takes data_received as the protocol is made)
            self.index = index
            if index == 0:
                if where == "inside data_received":
                    self.data_received = self.raising
                else:
                    self.data_received = kill_in_c()  # (so its bytes are not recorded)

        def connection_made(self, transport):
            transports.append(transport)

        def connection_lost(self, exc):
            lost[self.index] = exc

        def raising(self, data):
            got[0].append(data)
            if len(got[0]) == 1:
                signal.raise_signal(signal.SIGUSR1)

        def data_received(self, data):
            got[self.index].append(data)

    made = itertools.count()
    server = loop.run_until_complete(
        loop.create_server(lambda: Server(next(made)), "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    clients = []
    try:
        for _ in range(2):  # one at a time: the first accepted is transports[0]
            clients.append(socket.create_connection(("127.0.0.1", port)))
            while len(transports) < len(clients):
                loop.run_until_complete(asyncio.sleep(0.01))
        clients[0].sendall(b"first")
        clients[1].sendall(b"second")
        time.sleep(0.05)  # both reads are in the kernel when the loop polls next
        with pytest.raises(Boom):
            loop.run_until_complete(asyncio.sleep(0.5))
        loop.run_until_complete(asyncio.sleep(0))
        assert got[1] == [b"second"]
        # (PyPy's ctypes is Python code: there the handler runs inside kill_in_c, which is
        # the first's data_received, before that returns)
        cut_short = where == "inside data_received" or sys.implementation.name == "pypy"
        assert transports[0].is_closing() is cut_short
        assert not transports[1].is_closing()
        if cut_short:
            assert type(lost.pop(0)) is Boom
            assert [(c["message"], type(c["exception"]), c["transport"]) for c in reported] \
                == [("Fatal error: protocol.data_received() call failed.", Boom,
                     transports[0])]
            reported.clear()
        else:
            clients[0].sendall(b"more")
        clients[1].sendall(b"more")
        # (the first's bytes are recorded only by the Python data_received)
        first = [b"first"] if where == "inside data_received" else []
        deadline = loop.time() + 30  # a failure's cost, never a pass's condition
        while got[1] != [b"second", b"more"] and loop.time() < deadline:
            loop.run_until_complete(asyncio.sleep(0.01))
        assert got[1] == [b"second", b"more"]
        assert got[0] == first
        assert lost == {}
        assert reported == []
    finally:
        for c in clients:
            c.close()
        for t in transports:
            t.close()
        server.close()
        loop.run_until_complete(server.wait_closed())


@pytest.mark.parametrize("callback", ["buffer_updated", "eof_received"])
def test_inside_a_callback_its_transport_calls_it_fails_the_transport_and_leaves_the_loop(
        loop, boom_on_usr1, reported, callback):
    """The transport's own code calls these and takes their exceptions: one a signal
    handler raised inside is still the transport's fatal error (asyncio's fate for it:
    closed, connection_lost(Boom)), and it leaves the loop (asyncio's runs on, so a timed-out
    test hung)."""
    transports = []
    lost = []

    class Server(asyncio.BufferedProtocol):
        def __init__(self):
            self.buffer = bytearray(4096)

        def connection_made(self, transport):
            transports.append(transport)

        def get_buffer(self, sizehint):
            return self.buffer

        def buffer_updated(self, nbytes):
            if callback == "buffer_updated":
                signal.raise_signal(signal.SIGUSR1)

        def eof_received(self):
            signal.raise_signal(signal.SIGUSR1)

        def connection_lost(self, exc):
            lost.append(exc)

    server = loop.run_until_complete(loop.create_server(Server, "127.0.0.1", 0))
    client = socket.create_connection(server.sockets[0].getsockname())
    try:
        while not transports:
            loop.run_until_complete(asyncio.sleep(0.01))
        if callback == "buffer_updated":
            client.sendall(b"data")
        else:
            client.shutdown(socket.SHUT_WR)
        with pytest.raises(Boom):
            loop.run_until_complete(asyncio.sleep(1))
        assert transports[0].is_closing()
        loop.run_until_complete(asyncio.sleep(0))
        assert [type(exc) for exc in lost] == [Boom]
        assert [(c["message"], type(c["exception"])) for c in reported] == [
            (f"Fatal error: protocol.{callback}() call failed.", Boom)]
    finally:
        client.close()
        server.close()
        loop.run_until_complete(server.wait_closed())


def test_inside_datagram_received_it_leaves_the_loop_and_the_endpoint_lives_on(
        loop, boom_on_usr1, reported):
    """asyncio reports what datagram_received raises and the endpoint lives on: so it does
    for a signal handler's exception, which then leaves the loop."""
    got = []

    class Endpoint(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            got.append(data)
            if len(got) == 1:
                signal.raise_signal(signal.SIGUSR1)

    transport, _ = loop.run_until_complete(
        loop.create_datagram_endpoint(Endpoint, local_addr=("127.0.0.1", 0)))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.sendto(b"one", transport.get_extra_info("sockname"))
        with pytest.raises(Boom):
            loop.run_until_complete(asyncio.sleep(1))
        assert [(c["message"], type(c["exception"])) for c in reported] == [
            ("Exception in callback datagram_received()", Boom)]
        assert not transport.is_closing()
        sender.sendto(b"two", transport.get_extra_info("sockname"))
        deadline = loop.time() + 30  # a failure's cost, never a pass's condition
        while got != [b"one", b"two"] and loop.time() < deadline:
            loop.run_until_complete(asyncio.sleep(0.01))
        assert got == [b"one", b"two"]
    finally:
        sender.close()
        transport.close()
        loop.run_until_complete(asyncio.sleep(0))


def test_ctrl_c_from_the_default_handler_leaves_the_loop_and_every_callback_still_runs(loop):
    """The same for KeyboardInterrupt raised by Python's own SIGINT handler (C code, so
    no handler frame in the traceback), sent at the same place."""
    ran = []

    def record(what):
        ran.append(what)

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        loop.call_soon(kill_in_c(signal.SIGINT))
        loop.call_soon(record, "a")
        loop.call_soon(record, "b")
        loop.call_soon(loop.stop)
        with pytest.raises(KeyboardInterrupt):
            loop.run_forever()
    finally:
        signal.signal(signal.SIGINT, old)
    loop.run_forever()
    assert ran == ["a", "b"]


def test_a_callbacks_own_base_exception_is_still_its_failure(loop, boom_on_usr1, reported):
    """Not every BaseException is an interruption: one the callback raises itself (not
    from a signal handler) is its failure, logged as asyncio logs it, and the loop goes on."""
    def fail():
        raise Boom()

    loop.call_soon(fail)
    loop.run_until_complete(asyncio.sleep(0))
    assert [type(c.get("exception")) for c in reported] == [Boom]


@pytest.mark.parametrize("take", ["_uvc_stream_recv", "_buffer"])
def test_as_the_python_dispatch_takes_a_read_it_leaves_the_loop_and_keeps_the_read(
        loop, boom_on_usr1, reported, monkeypatch, take):
    """The pure-Python dispatch (PyPy's) takes a Protocol's read with a C call, the read
    itself or (100 KiB) the bytes of it, then hands it on; the interpreter looks for
    signals as such a call returns.  A handler that runs there must not lose the read
    (the size not stored yet).  The stand-in for that handler is the call itself, made a
    signal handler (so the loop takes what it raises for a handler's): it takes the read,
    then raises."""
    if loop._accel is not None:
        pytest.skip("the accelerator's dispatch takes reads in C: no Python code runs "
                    "between a read and its hand-over")
    core = sys.modules[type(loop)._dispatch.__module__]
    real = getattr(core, take)
    armed = []

    def take_then_interrupt(*args):
        result = real(*args)
        if armed:
            armed.clear()
            raise Boom()
        return result

    old = signal.signal(signal.SIGUSR2, take_then_interrupt)
    monkeypatch.setattr(core, take, take_then_interrupt)
    got = []
    transports = []

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            transports.append(transport)

        def data_received(self, data):
            got.append(data)

    server = loop.run_until_complete(loop.create_server(Server, "127.0.0.1", 0))
    client = socket.create_connection(server.sockets[0].getsockname())
    try:
        while not transports:
            loop.run_until_complete(asyncio.sleep(0.01))
        message = os.urandom(100 * 1024 if take == "_buffer" else 1000)
        armed.append(True)
        client.sendall(message)
        with pytest.raises(Boom):
            loop.run_until_complete(asyncio.sleep(1))
        assert not transports[0].is_closing()
        client.sendall(b"more")
        deadline = loop.time() + 30  # a failure's cost, never a pass's condition
        while len(b"".join(got)) < len(message) + 4 and loop.time() < deadline:
            loop.run_until_complete(asyncio.sleep(0.01))
        assert b"".join(got) == message + b"more"
        assert reported == []
    finally:
        signal.signal(signal.SIGUSR2, old)
        client.close()
        transports[0].close()
        server.close()
        loop.run_until_complete(server.wait_closed())


def test_ctrl_c_at_a_tasks_first_instruction_does_not_run_the_step_twice(loop, reported):
    """A task's step is C (asyncio's Task) that runs the coroutine: Ctrl-C landing on the
    coroutine's first instruction is taken by the step for the task's result (as asyncio's
    Task does, then re-raised).  The step has acted: kept and run again, it found the task
    done (InvalidStateError, reported).  Only a callback's own first instruction counts
    as not begun."""
    async def work():
        return "done"

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        loop.call_soon(kill_in_c(signal.SIGINT))
        task = loop.create_task(work())  # its first step runs next
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(task)
    finally:
        signal.signal(signal.SIGINT, old)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert task.done()
    assert reported == []
