"""Bad input to the loop and transport API, each case run on uvcffi and on asyncio's own
loop: both must answer the same (the exception type asyncio raises, or none), with no fd
left open by the refusal.  The cases are the differences a side-by-side scan of the public
API found (tools: every AbstractEventLoop method and transport method with wrong types,
values out of range, calls in the wrong state)."""
import asyncio
import gc
import os
import socket

import pytest
from _helpers import LOOP_FACTORIES


class _Protocol(asyncio.Protocol):
    pass


class _NoDataReceived:
    """A protocol with connection_made and connection_lost but no data_received."""

    def connection_made(self, transport):
        pass

    def connection_lost(self, exc):
        pass


def _open_fds():
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module", autouse=True)
def _first_loop_made():
    # The first uvcffi loop of a process opens libuv's process-wide signal pipe for good:
    # not a leak of the case that happens to make it.
    LOOP_FACTORIES["uvcffi"]().close()


def _outcome(kind, case):
    """(exception type name or None, the types reported to the exception handler, fds
    left open) of ``case`` run on a fresh loop of ``kind``."""
    before = _open_fds()
    loop = LOOP_FACTORIES[kind]()
    reported = []
    loop.set_exception_handler(
        lambda lp, ctx: reported.append(type(ctx.get("exception")).__name__))
    resources = []
    try:
        try:
            result = case(loop, resources)
            if asyncio.iscoroutine(result):
                loop.run_until_complete(asyncio.wait_for(result, 10))
            raised = None
        except Exception as exc:  # noqa: BLE001 - the exception is the result
            raised = type(exc).__name__
        for close in reversed(resources):
            close()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    del loop
    gc.collect()
    return raised, sorted(set(reported)), len(_open_fds() - before)


def _expect_same(case, raised, reported=()):
    spec = _outcome("asyncio", case)
    got = _outcome("uvcffi", case)
    assert spec[:2] == (raised, sorted(reported)), "asyncio's behaviour changed"
    assert got == (raised, sorted(reported), 0), "uvcffi differs, or left an fd open"


def _listener(resources):
    server = socket.create_server(("127.0.0.1", 0))
    resources.append(server.close)
    return server


async def _connection(loop, resources, factory=_Protocol):
    a, b = socket.socketpair()
    resources += [a.close, b.close]
    transport, protocol = await loop.create_connection(factory, sock=a)
    resources.append(transport.close)
    return transport, b


def _failure_reported(loop):
    reported = loop.create_future()
    handler = loop.get_exception_handler()

    def report(lp, ctx):
        handler(lp, ctx)
        if not reported.done():
            reported.set_result(None)

    loop.set_exception_handler(report)
    return reported


# ------------------------------------------------------------------ the loop


def test_a_context_that_is_no_dict_is_logged_when_the_handler_fails_on_it():
    # asyncio hands any context to the handler and logs the handler's error; uvcffi then
    # raised a second AttributeError (context.get) out of call_exception_handler().
    def case(loop, resources):
        loop.set_exception_handler(lambda lp, ctx: ctx.get("message"))
        loop.call_exception_handler(None)

    _expect_same(case, None)


@pytest.mark.parametrize("local_addr", [("127.0.0.1",), ()], ids=["1-tuple", "empty"])
def test_create_connection_local_addr_must_be_host_and_port(local_addr):
    # asyncio unpacks local_addr[:2]: too short is ValueError.  uvcffi passed the tuple on
    # as positional arguments, so a 1-tuple's port was the family argument (0): it bound
    # an ephemeral port and connected.
    async def case(loop, resources):
        port = _listener(resources).getsockname()[1]
        transport, _ = await loop.create_connection(_Protocol, "127.0.0.1", port,
                                                    local_addr=local_addr)
        resources.append(transport.close)

    _expect_same(case, "ValueError")


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # asyncio leaves its socket open
def test_datagram_protocol_without_connection_made_is_refused():
    # asyncio looks connection_made up while it makes the transport: AttributeError from
    # create_datagram_endpoint().  uvcffi returned (transport, 1) and reported the error
    # later; the socket is closed on the refusal.
    async def case(loop, resources):
        transport, _ = await loop.create_datagram_endpoint(
            lambda: 1, local_addr=("127.0.0.1", 0))
        resources.append(transport.close)

    _expect_same(case, "AttributeError")


# ------------------------------------------------------------------ transports


def test_sendfile_after_write_eof_is_refused(tmp_path):
    # asyncio refuses to write after write_eof(), sendfile included (RuntimeError).  uvcffi
    # sent the file with sendfile(2) after the EOF was asked for.
    path = tmp_path / "data"
    path.write_bytes(b"x" * 1000)

    async def case(loop, resources):
        transport, peer = await _connection(loop, resources)
        transport.write_eof()
        with open(path, "rb") as file:
            await loop.sendfile(transport, file)

    _expect_same(case, "RuntimeError")


@pytest.mark.parametrize("kind", ["set_protocol", "protocol_factory"])
def test_a_protocol_without_data_received_fails_when_data_comes(kind):
    # asyncio takes any object as the protocol: the missing data_received is an error only
    # when data arrives (reported, and the transport closes).  uvcffi raised AttributeError
    # from set_protocol() after it had already switched to the new protocol, and from
    # create_connection() for a protocol_factory making such a protocol.
    async def case(loop, resources):
        reported = _failure_reported(loop)
        if kind == "set_protocol":
            transport, peer = await _connection(loop, resources)
            transport.set_protocol(_NoDataReceived())
        else:
            transport, peer = await _connection(loop, resources, _NoDataReceived)
        peer.send(b"data")
        await reported
        assert transport.is_closing()

    _expect_same(case, None, ["AttributeError"])


def test_set_protocol_none_fails_when_data_comes():
    async def case(loop, resources):
        reported = _failure_reported(loop)
        transport, peer = await _connection(loop, resources)
        transport.set_protocol(None)
        peer.send(b"data")
        await reported

    _expect_same(case, None, ["AttributeError"])


class _RunsCallbacks:
    """A context= that is no contextvars.Context: asyncio's Handle calls its run()."""

    def __init__(self, ran):
        self.ran = ran

    def run(self, callback, *args):
        self.ran.append("run")
        return callback(*args)


@pytest.mark.parametrize("context", ["str", "object with run()"])
def test_a_context_that_is_no_context_is_used_as_handle_run_uses_it(context):
    # asyncio's Handle calls context.run(callback, *args): an object with a run() method
    # runs the callback; a str is an AttributeError, reported.  The accelerator entered
    # the context with the C API: TypeError for both, and the callback never ran.
    ran = []

    def case(loop, resources):
        ctx = "x" if context == "str" else _RunsCallbacks(ran)
        loop.call_soon(ran.append, "callback", context=ctx)
        loop.call_soon(loop.stop)
        loop.run_forever()

    if context == "str":
        _expect_same(case, None, ["AttributeError"])
        assert ran == []
    else:
        _expect_same(case, None)
        assert ran == ["run", "callback"] * 2  # asyncio's run, then uvcffi's


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # asyncio leaves its socket open
def test_a_unix_server_path_os_stat_refuses_leaves_no_socket_open():
    # A NUL in the path: os.stat()'s ValueError (asyncio's too).  uvcffi had made its
    # socket first and left it to the collector (on PyPy it stayed open).
    async def case(loop, resources):
        server = await loop.create_unix_server(_Protocol, "/tmp/uvcffi-bad\0path")
        resources.append(server.close)

    _expect_same(case, "ValueError")


def test_create_connection_local_addr_of_more_than_four_items_is_a_type_error():
    # asyncio passes the items after (host, port) on as flowinfo and scope_id: more than
    # four is a TypeError (a str local_addr, say).  uvcffi resolved "12" of "127.0.0.1" as
    # the host "1", port "2", and tried to bind it.
    async def case(loop, resources):
        port = _listener(resources).getsockname()[1]
        transport, _ = await loop.create_connection(_Protocol, "127.0.0.1", port,
                                                    local_addr="127.0.0.1")
        resources.append(transport.close)

    _expect_same(case, "TypeError")


def test_sock_recv_of_more_than_a_ssize_t_is_an_overflow_error():
    # sock.recv()'s own OverflowError on asyncio; uvcffi's stream receive took any size.
    async def case(loop, resources):
        a, b = socket.socketpair()
        resources += [a.close, b.close]
        a.setblocking(False)
        b.send(b"data")
        await loop.sock_recv(a, 2 ** 63)  # (2 ** 64 is no size_t: cffi refused it)

    _expect_same(case, "OverflowError")


def test_a_read_pipe_epoll_refuses_leaves_no_fd_open():
    # /dev/null passes connect_read_pipe()'s check (a character device) and epoll refuses
    # it (EPERM): the transport is made and the error reported, on both loops.  uvcffi's
    # duplicate of the fd, given to libuv, stayed open for good.
    async def case(loop, resources):
        reported = _failure_reported(loop)
        pipe = open(os.devnull, "rb")
        resources.append(pipe.close)
        transport, _ = await loop.connect_read_pipe(_Protocol, pipe)
        resources.append(transport.close)
        await reported

    _expect_same(case, None, ["PermissionError"])


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # asyncio leaves its socket open
def test_a_datagram_protocol_factory_that_raises_leaves_no_socket_open():
    # The factory's own error, on both loops; uvcffi had made and bound its socket before
    # calling the factory and left it to the collector (on PyPy it stayed open).
    async def case(loop, resources):
        transport, _ = await loop.create_datagram_endpoint(
            lambda: 1 / 0, local_addr=("127.0.0.1", 0))
        resources.append(transport.close)

    _expect_same(case, "ZeroDivisionError")


class _NoFlowControl:
    """A protocol without pause_writing and resume_writing."""

    def connection_made(self, transport):
        pass

    def data_received(self, data):
        pass

    def eof_received(self):
        pass

    def connection_lost(self, exc):
        pass


def test_a_protocol_without_pause_writing_is_reported_not_raised_by_write():
    # asyncio looks pause_writing up inside the try that reports its failure: write()
    # buffers the data and returns.  uvcffi looked it up before: the AttributeError came
    # out of write(), after the data was buffered.
    async def case(loop, resources):
        reported = _failure_reported(loop)
        transport, peer = await _connection(loop, resources, _NoFlowControl)
        transport.set_write_buffer_limits(high=1)
        transport.write(b"x" * 8_000_000)  # more than the socket takes at once
        await reported
        assert transport.get_write_buffer_size() > 0 and not transport.is_closing()
        transport.abort()  # (a close would wait for the buffer the peer never reads)

    _expect_same(case, None, ["AttributeError"])


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # asyncio's connected socket
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # and the race's unawaited wait
def test_a_happy_eyeballs_delay_that_is_no_number_leaves_no_socket_open():
    # asyncio's TypeError comes from the race, once its first attempt has connected, and
    # that socket is left to the collector; uvcffi raises it before any socket is made
    # (on PyPy the connected socket stayed open).
    async def case(loop, resources):
        port = _listener(resources).getsockname()[1]
        transport, _ = await loop.create_connection(_Protocol, "127.0.0.1", port,
                                                    happy_eyeballs_delay="soon")
        resources.append(transport.close)

    _expect_same(case, "TypeError")
