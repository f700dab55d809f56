"""The sock_* methods and sock_sendfile, checked against what asyncio's own loop does."""
import array
import asyncio
import errno
import io
import os
import socket
import ssl
import sys
import tempfile
import threading

import pytest
from _helpers import (
    has_ipv6_loopback,
    needs_generational_gc,
    pypy_minor_survivors,
    run,
    socket_refusal,
)


def needs(loop, name):
    """Skip on an asyncio that predates ``name`` (PyPy 3.9's has no sock_recvfrom)."""
    if not hasattr(loop, name):
        pytest.skip(f"this asyncio has no {name}")


def tcp_pair():
    """A connected pair of non-blocking TCP sockets on 127.0.0.1."""
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        a = socket.create_connection(lsock.getsockname())
        b, _ = lsock.accept()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def test_recv_waits_for_data(anyloop):
    a, b = tcp_pair()
    with a, b:
        async def main():
            task = asyncio.ensure_future(anyloop.sock_recv(a, 100))
            await asyncio.sleep(0.01)
            assert not task.done()
            b.send(b"hello")
            return await task

        assert run(anyloop, main()) == b"hello"


def test_recv_eof(anyloop):
    a, b = tcp_pair()
    with a:
        b.close()
        assert run(anyloop, anyloop.sock_recv(a, 100)) == b""


def test_sendall_large_and_recv_into(anyloop):
    a, b = tcp_pair()
    payload = os.urandom(4 * 1024 * 1024)
    with a, b:
        async def main():
            sender = asyncio.ensure_future(anyloop.sock_sendall(a, payload))
            buf = bytearray(len(payload))
            view = memoryview(buf)
            got = 0
            while got < len(payload):
                got += await anyloop.sock_recv_into(b, view[got:])
            await sender
            return bytes(buf)

        assert run(anyloop, main()) == payload


@pytest.mark.parametrize(
    "make",
    [bytearray, memoryview, lambda d: array.array("i", d)],
    ids=["bytearray", "memoryview", "array"],
)
def test_sendall_buffer_types(loop, make):
    a, b = tcp_pair()
    data = bytes(range(256)) * 4096  # 1 MiB, more than the socket buffer takes at once
    with a, b:
        async def main():
            sender = asyncio.ensure_future(loop.sock_sendall(a, make(data)))
            chunks = []
            size = 0
            while size < len(data):
                chunk = await loop.sock_recv(b, 65536)
                assert chunk
                chunks.append(chunk)
                size += len(chunk)
            await sender
            return b"".join(chunks)

        assert run(loop, main()) == data


def test_sendall_bad_data(anyloop):
    a, b = tcp_pair()
    with a, b:
        with pytest.raises(TypeError):
            run(anyloop, anyloop.sock_sendall(a, "text"))


def test_accept_and_connect_by_name(anyloop):
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        lsock.setblocking(False)

        async def main():
            accepting = asyncio.ensure_future(anyloop.sock_accept(lsock))
            await asyncio.sleep(0)
            c = socket.socket()
            c.setblocking(False)
            with c:
                await anyloop.sock_connect(c, ("localhost", lsock.getsockname()[1]))
                conn, addr = await accepting
                with conn:
                    assert conn.gettimeout() == 0
                    assert addr == c.getsockname()
                    await anyloop.sock_sendall(conn, b"ping")
                    return await anyloop.sock_recv(c, 10)

        assert run(anyloop, main()) == b"ping"


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_connect_ipv6_with_flowinfo_and_scope(anyloop):
    try:
        lsock = socket.socket(socket.AF_INET6)
        lsock.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no ::1 ({exc})")
    with lsock:
        lsock.listen()
        c = socket.socket(socket.AF_INET6)
        c.setblocking(False)
        with c:
            run(anyloop, anyloop.sock_connect(c, ("::1", lsock.getsockname()[1], 0, 0)))
            assert c.getpeername()[:2] == lsock.getsockname()[:2]


def test_connect_refused(anyloop):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = s.getsockname()  # bound, not listening: refused
        c = socket.socket()
        c.setblocking(False)
        with c:
            with pytest.raises(ConnectionRefusedError):
                run(anyloop, anyloop.sock_connect(c, address))


@pytest.mark.skipif(sys.implementation.name == "pypy", reason=(
    "PyPy frees nothing by reference counting (a cycle costs it nothing), and a finished "
    "frame's f_locals there still show what it held (asyncio's loop fails this check too)"))
def test_connect_refused_leaves_no_cycle_through_the_future(anyloop):
    """The exception's traceback must not keep the loop's future that holds the
    exception: that cycle kept both (and every frame and socket they reach) alive until
    the cyclic GC ran (anyio's test_happy_eyeballs_refcycles).  asyncio breaks it in
    _sock_connect_cb.  (The Task that runs the test holds it, as it does on asyncio.)"""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        c = socket.socket()
        c.setblocking(False)
        with c:
            with pytest.raises(ConnectionRefusedError) as info:
                run(anyloop, anyloop.sock_connect(c, s.getsockname()))
    exc = info.value
    holders = []
    tb = exc.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if (isinstance(value, asyncio.Future) and not isinstance(value, asyncio.Task)
                    and value.done() and not value.cancelled() and value.exception() is exc):
                holders.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert holders == []


def test_connect_unknown_host(anyloop):
    c = socket.socket()
    c.setblocking(False)
    with c:
        with pytest.raises(socket.gaierror):
            run(anyloop, anyloop.sock_connect(c, ("no-such-host.invalid", 80)), timeout=30)


needs_ipv6_loopback = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")


@pytest.mark.parametrize("address", [
    ("127.0.0.1", 70000),
    ("127.0.0.1", -1),
    ("127.0.0.1", "65536"),
    ("127.0.0.1", 2**70),
    pytest.param(("::1", 70000, 0, 0), marks=needs_ipv6_loopback),
])
def test_connect_port_out_of_range(anyloop, address):
    # The address is used as it is, so connect() refuses the port (OverflowError) where
    # getaddrinfo would have wrapped it: 70000 would connect to port 4464.
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    exc_type, message = socket_refusal(
        "connect", (address[0], int(address[1])) + address[2:], family=family)
    c = socket.socket(family)
    c.setblocking(False)
    with c:
        with pytest.raises(exc_type) as info:
            run(anyloop, anyloop.sock_connect(c, address))
        assert str(info.value) == message


@pytest.mark.parametrize("address", [
    "localhost", b"localhost", "127.0.0.1:80", ("127.0.0.1", 80, 0, 0, 0)])
def test_connect_address_that_is_no_tuple(anyloop, address):
    # asyncio raises TypeError for these (a name was resolved into gaierror before).
    c = socket.socket()
    c.setblocking(False)
    with c:
        with pytest.raises(TypeError):
            run(anyloop, anyloop.sock_connect(c, address))


@pytest.mark.parametrize("address", ["x", "xy", b"ab"])
def test_connect_short_string_address(loop, address):
    # asyncio slices a string like a (host, port) tuple, so a string of up to four
    # characters gives ValueError or gaierror there, depending on its length; uvcffi gives
    # the TypeError socket.connect() gives for every string (asyncio too from five on).
    c = socket.socket()
    c.setblocking(False)
    with c:
        with pytest.raises(TypeError, match="AF_INET address must be tuple, not"):
            run(loop, loop.sock_connect(c, address))


def test_udp_sendto_recvfrom(anyloop):
    needs(anyloop, "sock_recvfrom")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        a.setblocking(False)
        b.setblocking(False)

        async def main():
            waiting = asyncio.ensure_future(anyloop.sock_recvfrom(b, 100))
            await asyncio.sleep(0.01)
            assert await anyloop.sock_sendto(a, memoryview(b"one"), b.getsockname()) == 3
            first = await waiting
            await anyloop.sock_sendto(a, bytearray(b"two!"), b.getsockname())
            buf = bytearray(10)
            n, addr = await anyloop.sock_recvfrom_into(b, buf, 3)
            return first, (n, bytes(buf[:n]), addr)

        first, second = run(anyloop, main())
        assert first == (b"one", a.getsockname())
        assert second == (3, b"two", a.getsockname())


def test_recvfrom_into_refuses_a_negative_nbytes(anyloop):
    # CPython's socket raises ValueError; PyPy's recvfrom_into took -1 as "no limit" and
    # wrote the whole datagram past the end of the buffer it was given.
    needs(anyloop, "sock_recvfrom_into")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        b.bind(("127.0.0.1", 0))
        b.setblocking(False)
        a.sendto(b"abcdefgh", b.getsockname())
        whole = bytearray(b"." * 12)
        with pytest.raises(ValueError, match="negative buffersize"):
            run(anyloop, anyloop.sock_recvfrom_into(b, memoryview(whole)[:4], -1))
        assert whole == bytearray(b"." * 12)
        # The datagram is still there for a receive that asks for it properly (None, as
        # 0, means all of the buffer, as on asyncio).
        n, _ = run(anyloop, anyloop.sock_recvfrom_into(b, memoryview(whole)[:4], None))
        assert (n, whole) == (4, bytearray(b"abcd" + b"." * 8))


BLOCKING_CALLS = {
    "sock_recv": lambda lp, s: lp.sock_recv(s, 1),
    "sock_recv_into": lambda lp, s: lp.sock_recv_into(s, bytearray(1)),
    "sock_recvfrom": lambda lp, s: lp.sock_recvfrom(s, 1),
    "sock_recvfrom_into": lambda lp, s: lp.sock_recvfrom_into(s, bytearray(1)),
    "sock_sendall": lambda lp, s: lp.sock_sendall(s, b"x"),
    "sock_sendto": lambda lp, s: lp.sock_sendto(s, b"x", ("127.0.0.1", 9)),
    "sock_connect": lambda lp, s: lp.sock_connect(s, ("127.0.0.1", 9)),
    "sock_accept": lambda lp, s: lp.sock_accept(s),
    "sock_sendfile": lambda lp, s: lp.sock_sendfile(s, io.BytesIO(b"x")),
}


@pytest.mark.parametrize("name", sorted(BLOCKING_CALLS))
def test_blocking_socket_is_refused_in_debug_mode(anyloop, name):
    needs(anyloop, name)
    anyloop.set_debug(True)
    with socket.socket() as s:
        assert s.gettimeout() is None
        with pytest.raises(ValueError, match="the socket must be non-blocking"):
            run(anyloop, BLOCKING_CALLS[name](anyloop, s))
        s.settimeout(1.0)  # a timeout is blocking too, for the loop
        with pytest.raises(ValueError, match="the socket must be non-blocking"):
            run(anyloop, BLOCKING_CALLS[name](anyloop, s))


def test_blocking_sockets_are_taken_outside_debug_mode(anyloop):
    # As asyncio and uvloop take them: asyncssh connects `socket.socket()` so.  Each call
    # here can complete at once, so that none blocks asyncio's loop either.
    loop = anyloop

    async def main():
        with socket.socket() as lsock, socket.socket() as client:
            lsock.bind(("127.0.0.1", 0))
            lsock.listen(1)
            await loop.sock_connect(client, lsock.getsockname())
            conn, _ = await loop.sock_accept(lsock)  # the connection is queued already
            with conn:
                assert conn.gettimeout() == 0
                await loop.sock_sendall(client, b"ping")
                assert await loop.sock_recv(conn, 4) == b"ping"
                await loop.sock_sendall(conn, b"pong")
                buf = bytearray(4)
                assert await loop.sock_recv_into(client, buf) == 4 and buf == b"pong"
                assert client.gettimeout() is None and lsock.gettimeout() is None

    run(loop, main())


def test_the_loops_own_receive_waits_in_the_loop_on_a_blocking_socket(loop):
    # Better than asyncio, whose sock.recv() would block its whole loop here (a hang: the
    # data comes from a callback of the same loop).
    a, b = socket.socketpair()
    with a, b:
        loop.call_soon(b.send, b"late")
        assert run(loop, loop.sock_recv(a, 100)) == b"late"
        assert a.gettimeout() is None


@pytest.mark.parametrize("name", sorted(BLOCKING_CALLS))
def test_ssl_socket_is_refused(anyloop, name):
    needs(anyloop, name)
    ctx = ssl.create_default_context()
    with ctx.wrap_socket(socket.socket(), do_handshake_on_connect=False,
                         server_hostname="x") as s:
        s.setblocking(False)
        with pytest.raises(TypeError, match="SSLSocket"):
            run(anyloop, BLOCKING_CALLS[name](anyloop, s))


def test_closed_socket(anyloop):
    a, b = tcp_pair()
    b.close()
    a.close()
    with pytest.raises(OSError) as info:
        run(anyloop, anyloop.sock_recv(a, 1))
    assert info.value.errno is not None
    with pytest.raises(OSError):
        run(anyloop, anyloop.sock_sendall(a, b"x"))


def test_cancel_mid_wait_removes_the_watcher(anyloop):
    a, b = tcp_pair()
    with a, b:
        async def main():
            task = asyncio.ensure_future(anyloop.sock_recv(a, 10))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The fd is free again: a reader can be added and removed, and the next
            # sock_recv gets the data (the cancelled one took nothing).
            anyloop.add_reader(a, lambda: None)
            assert anyloop.remove_reader(a)
            assert not anyloop.remove_reader(a)
            b.send(b"data")
            return await anyloop.sock_recv(a, 10)

        assert run(anyloop, main()) == b"data"


def test_cancel_blocked_sendall(anyloop):
    a, b = tcp_pair()
    with a, b:
        async def main():
            task = asyncio.ensure_future(anyloop.sock_sendall(a, b"x" * (16 * 1024 * 1024)))
            await asyncio.sleep(0.01)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not anyloop.remove_writer(a)

        run(anyloop, main())


def test_prompt_cancellation(anyloop):
    # test_events' test_prompt_cancellation, without its selector-loop private at the end.
    r, w = socket.socketpair()
    with r, w:
        r.setblocking(False)
        f = anyloop.create_task(anyloop.sock_recv(r, 1))

        async def main():
            try:
                anyloop.call_soon(f.cancel)
                await f
            except asyncio.CancelledError:
                return "cancelled"
            finally:
                anyloop.stop()

        t = anyloop.create_task(main())
        anyloop.run_forever()
        assert t.result() == "cancelled"
        with pytest.raises(asyncio.CancelledError):
            f.result()
        assert not anyloop.remove_reader(r)


@pytest.mark.parametrize("method", ["sock_recv", "sock_recvfrom"])
def test_recv_cancelled_after_readiness_leaves_the_data(loop, method):
    # The fd turns readable, then the waiting task is cancelled before it runs.  uvcffi
    # receives in the task, so the data stays in the socket for the next receive.
    # (asyncio 3.11 receives in the fd's callback: the data goes down with the future.)
    needs(loop, method)
    kind = socket.SOCK_STREAM if method == "sock_recv" else socket.SOCK_DGRAM
    a, b = socket.socketpair(socket.AF_UNIX, kind)
    with a, b:
        a.setblocking(False)
        recv = getattr(loop, method)

        async def main():
            task = loop.create_task(recv(a, 100))
            await asyncio.sleep(0)  # waiting for the fd
            b.send(b"x")
            # The next poll sees the fd ready and wakes the task; this cancel runs
            # first in the iteration after, before the task resumes.
            loop.call_soon(loop.call_soon, task.cancel)
            with pytest.raises(asyncio.CancelledError):
                await task
            return await recv(a, 100)

        got = run(loop, main())
        assert (got if method == "sock_recv" else got[0]) == b"x"
        assert not loop.remove_reader(a)


def test_second_concurrent_recv_replaces_the_first(anyloop):
    # asyncio 3.11: the second wait takes the fd's reader; the first then stays pending
    # until cancelled.
    a, b = tcp_pair()
    with a, b:
        async def main():
            first = asyncio.ensure_future(anyloop.sock_recv(a, 10))
            await asyncio.sleep(0)
            second = asyncio.ensure_future(anyloop.sock_recv(a, 10))
            await asyncio.sleep(0)
            b.send(b"x")
            data = await second
            await asyncio.sleep(0.01)
            state = first.done()
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
            return data, state

        assert run(anyloop, main()) == (b"x", False)


def test_fd_used_by_a_transport_is_refused(loop):
    a, b = tcp_pair()
    with a, b:
        class Busy:
            def is_closing(self):
                return False

        busy = Busy()
        loop._fd_transports[a.fileno()] = busy
        with pytest.raises(RuntimeError, match="is used by transport"):
            run(loop, loop.sock_recv(a, 1))


# ---------------------------------------------------------------- sock_sendfile

@pytest.fixture
def datafile():
    data = os.urandom(300 * 1024)
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.seek(0)
        yield f, data


def _recv_all(loop, sock):
    async def reader():
        chunks = []
        while True:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    return reader()


@pytest.mark.parametrize("offset,count", [(0, None), (1000, None), (5, 100_000), (0, 10**9)])
def test_sendfile(anyloop, datafile, offset, count):
    f, data = datafile
    a, b = tcp_pair()
    with a, b:
        async def main():
            reading = asyncio.ensure_future(_recv_all(anyloop, b))
            sent = await anyloop.sock_sendfile(a, f, offset, count, fallback=False)
            a.shutdown(socket.SHUT_WR)
            return sent, await reading

        sent, received = run(anyloop, main())
    end = len(data) if count is None else min(len(data), offset + count)
    assert received == data[offset:end]
    assert sent == end - offset
    assert f.tell() == end


class _NoFileno:
    """A binary file object without a file descriptor."""

    mode = "rb"

    def __init__(self, data):
        self._data = data
        self._pos = 0

    def readinto(self, buf):
        chunk = self._data[self._pos:self._pos + len(buf)]
        buf[:len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)

    def seek(self, pos):
        self._pos = pos

    def tell(self):
        return self._pos


def test_sendfile_fallback(anyloop):
    data = os.urandom(600 * 1024)
    src = _NoFileno(data)
    a, b = tcp_pair()
    with a, b:
        async def main():
            reading = asyncio.ensure_future(_recv_all(anyloop, b))
            sent = await anyloop.sock_sendfile(a, src, 10)
            a.shutdown(socket.SHUT_WR)
            return sent, await reading

        sent, received = run(anyloop, main())
    assert sent == len(data) - 10 and received == data[10:]
    assert src.tell() == len(data)


class _ThreadRecordingFile(_NoFileno):
    """Remembers the names of the threads that read it."""

    def __init__(self, data):
        super().__init__(data)
        self.threads = set()

    def readinto(self, buf):
        self.threads.add(threading.current_thread().name)
        return super().readinto(buf)


def test_executor_thread_names(anyloop):
    # asyncio's default executor names its threads "asyncio_<n>" (thread_name_prefix);
    # sendfile's fallback reads the file there.  uvcffi already agreed: this keeps it so.
    # (uvcffi resolves names on libuv's thread pool, which runs no Python at all.)
    src = _ThreadRecordingFile(b"x" * 100_000)
    a, b = tcp_pair()
    with a, b:
        async def main():
            name = await anyloop.run_in_executor(None, lambda: threading.current_thread().name)
            reading = asyncio.ensure_future(_recv_all(anyloop, b))
            await anyloop.sock_sendfile(a, src)
            a.shutdown(socket.SHUT_WR)
            await reading
            return name

        name = run(anyloop, main())
    assert name == "asyncio_0"
    assert src.threads and all(t.startswith("asyncio_") for t in src.threads)


def test_sendfile_not_available_without_fallback(anyloop):
    a, b = tcp_pair()
    with a, b:
        with pytest.raises(asyncio.SendfileNotAvailableError):
            run(anyloop, anyloop.sock_sendfile(a, _NoFileno(b"abc"), fallback=False))


def test_sendfile_bad_arguments(anyloop, datafile):
    f, _ = datafile
    a, b = tcp_pair()
    with a, b:
        for kwargs, exc in [
            ({"offset": -1}, ValueError), ({"offset": "0"}, TypeError),
            ({"count": 0}, ValueError), ({"count": 1.5}, TypeError),
        ]:
            with pytest.raises(exc):
                run(anyloop, anyloop.sock_sendfile(a, f, **kwargs))
        with tempfile.TemporaryFile("w+") as text:
            with pytest.raises(ValueError, match="binary mode"):
                run(anyloop, anyloop.sock_sendfile(a, text))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.setblocking(False)
        with pytest.raises(ValueError, match="SOCK_STREAM"):
            run(anyloop, anyloop.sock_sendfile(udp, f))


def test_sendfile_empty_file(anyloop):
    a, b = tcp_pair()
    with a, b, tempfile.TemporaryFile() as f:
        assert run(anyloop, anyloop.sock_sendfile(a, f)) == 0


def test_sock_recvfrom_reused_buffer_keeps_each_datagram(anyloop):
    # uvcffi receives into a buffer it reuses: each result must be a datagram of its own,
    # bigger than any before it or not, truncated to bufsize as recvfrom() truncates.
    needs(anyloop, "sock_recvfrom")
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    sizes = [10, 70000, 5, 120000, 1]
    payloads = [bytes([i + 1]) * n for i, n in enumerate(sizes)]

    async def main():
        got = []
        for p in payloads:
            b.send(p)
        for _ in payloads:
            data, _ = await anyloop.sock_recvfrom(a, 200000)
            got.append(data)
        b.send(b"z" * 50)
        data, _ = await anyloop.sock_recvfrom(a, 20)
        got.append(data)
        return got

    try:
        got = anyloop.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        a.close()
        b.close()
    assert got == payloads + [b"z" * 20]
    assert len({id(g) for g in got}) == len(got)


def test_sock_recvfrom_of_a_huge_bufsize_keeps_no_huge_buffer(loop):
    # uvcffi's reused receive buffer grew to any bufsize asked and stayed, zero-filled:
    # one sock_recvfrom(sock, 1 << 29) kept 512 MiB resident for the loop's life, where
    # asyncio's recvfrom() gives back what the datagram does not use.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a:
        a.bind(("127.0.0.1", 0))
        a.setblocking(False)
        a.sendto(b"small", a.getsockname())
        assert run(loop, loop.sock_recvfrom(a, 64 << 20)) == (b"small", a.getsockname())
        kept = loop._recvfrom_buffer
        assert kept is None or len(kept) <= 256 * 1024


def test_sock_recv_of_more_than_its_buffer_loses_nothing(anyloop):
    a, b = socket.socketpair()
    a.setblocking(False)
    payload = bytes(range(256)) * 4096  # 1 MiB

    async def main():
        t = threading.Thread(target=b.sendall, args=(payload,))
        t.start()
        got = bytearray()
        while len(got) < len(payload):
            chunk = await anyloop.sock_recv(a, 4 << 20)
            assert chunk
            got += chunk
        await anyloop.run_in_executor(None, t.join)
        return bytes(got)

    try:
        assert anyloop.run_until_complete(asyncio.wait_for(main(), 30)) == payload
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("kind", ["SOCK_DGRAM", "SOCK_SEQPACKET"])
def test_recv_keeps_a_whole_big_message(anyloop, kind):
    # A message longer than the loop's own receive buffer (256 KiB) arrives whole when
    # sock_recv asks for that much: a datagram cut short loses the rest for good.
    a, b = socket.socketpair(socket.AF_UNIX, getattr(socket, kind))
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        a.setblocking(False)
        b.setblocking(False)
        message = bytes(range(256)) * 1200  # 300 KiB
        try:
            a.send(message)
        except OSError as exc:
            pytest.skip(f"this kernel does not take a {len(message)}-byte {kind}: {exc}")
        assert run(anyloop, anyloop.sock_recv(b, 400_000)) == message


def drive(coro):
    """Run ``coro`` up to its first suspension, on a closed loop (nothing can be awaited
    there): its result, or the exception it raised; None if it would wait."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    except Exception as exc:
        return exc
    coro.close()
    return None


# asyncio's selector loop builds a transport before it finds the loop closed, and leaves it.
@pytest.mark.filterwarnings("ignore:unclosed transport <_SelectorSocketTransport:ResourceWarning")
def test_closed_loop_refuses_connections_as_asyncio(anyloop, tmp_path):
    anyloop.close()
    a, b = socket.socketpair()
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    with a, b, listening:
        made = [
            anyloop.create_connection(asyncio.Protocol, sock=a),
            anyloop.connect_accepted_socket(asyncio.Protocol, b),
            anyloop.create_server(asyncio.Protocol, sock=listening),
        ]
        if anyloop.kind == "uvcffi":
            # asyncio binds these sockets, then raises and leaves them open; uvcffi raises
            # before it makes any.
            made += [
                anyloop.create_server(asyncio.Protocol, "127.0.0.1", 0),
                anyloop.create_unix_server(asyncio.Protocol, str(tmp_path / "s")),
            ]
        for coro in made:
            outcome = drive(coro)
            assert isinstance(outcome, RuntimeError), outcome
            assert "closed" in str(outcome)


def test_closed_loop_still_receives_what_is_there(anyloop):
    # asyncio's sock_recv reads a socket that has data without the loop: so does uvcffi's,
    # whose own receive buffer went with the loop.
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        a.send(b"waiting")
        anyloop.close()
        assert drive(anyloop.sock_recv(b, 100)) == b"waiting"


def test_closed_loop_sends_no_file(anyloop):
    a, b = socket.socketpair()
    with a, b, tempfile.TemporaryFile() as file:
        a.setblocking(False)
        file.write(b"x" * 100)
        file.flush()
        anyloop.close()
        # (asyncio sends the file, then raises; uvcffi raises before it sends.)
        outcome = drive(anyloop.sock_sendfile(a, file, 0))
        assert isinstance(outcome, RuntimeError), outcome


def test_sendall_of_a_strided_view_is_all_or_nothing(anyloop):
    # CPython's send() refuses a view that is not C-contiguous (BufferError) and PyPy's
    # takes it: either way the call must not send part of it and then raise.
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        data = memoryview(bytes(range(200)))[::2]
        try:
            run(anyloop, anyloop.sock_sendall(a, data))
        except BufferError:
            with pytest.raises(BlockingIOError):
                b.recv(1000)
        else:
            assert b.recv(1000) == data.tobytes()


def test_recv_of_zero_bytes_is_socket_recvs(anyloop):
    # CPython's socket.recv(0) returns b"" without a system call, data or not; uvcffi's own
    # receive made it recv(2) of 0 bytes, whose EAGAIN left the task waiting for data.
    # (PyPy's socket.recv(0) does say "would block": there both loops wait for data.)
    a, b = tcp_pair()
    with a, b:
        try:
            expected = a.recv(0)
        except BlockingIOError:
            b.send(b"x")  # this runtime's recv(0) waits for data: give it some
            expected = b""
        assert run(anyloop, anyloop.sock_recv(a, 0)) == expected
        b.send(b"y")
        assert run(anyloop, anyloop.sock_recv(a, 0)) == b""
        assert run(anyloop, anyloop.sock_recv(a, 10)) in (b"y", b"xy")


# Each operation, with its arguments after the socket (None: the peer's address for sendto).
_AFTER_CLOSE = [
    ("sock_recv", (10,)), ("sock_recv", (0,)), ("sock_recv_into", (bytearray(5),)),
    ("sock_recv_into", (bytearray(0),)), ("sock_recvfrom", (10,)),
    ("sock_recvfrom_into", (bytearray(5),)), ("sock_sendall", (b"x",)),
    ("sock_sendall", (b"",)), ("sock_sendto", (b"x", None)), ("sock_accept", ()),
    ("sock_sendfile", ()),
]


@pytest.mark.parametrize("method,args", _AFTER_CLOSE, ids=lambda x: str(x)[:20])
def test_new_operation_on_a_socket_closed_while_another_waits(anyloop, method, args,
                                                               tmp_path):
    # A sock_recv waiting on the socket keeps its fd open after close() (uvcffi, as uvloop:
    # the pending operation ends normally).  A new operation must still see a closed
    # socket, as asyncio's does: uvcffi used the fd, so sock_sendall and sock_sendfile sent
    # through a socket its owner had closed, and the receives waited.
    needs(anyloop, method)
    a, b = tcp_pair()
    datafile = tmp_path / "data"
    datafile.write_bytes(b"file data")
    with a, b, open(datafile, "rb") as file:
        if method == "sock_sendfile":
            args = (file,)
        elif method == "sock_sendto":
            args = (args[0], b.getsockname())

        async def main():
            pending = anyloop.create_task(anyloop.sock_recv(a, 10))
            await asyncio.sleep(0)  # the task runs up to its wait
            a.close()
            try:
                return await getattr(anyloop, method)(a, *args)
            except OSError as exc:
                return type(exc), exc.errno
            finally:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)

        got = run(anyloop, main())
        # What the socket's own method gives a closed socket: EBADF, but CPython's
        # recv(0) and recv_into() of an empty buffer return without a system call.
        if method in ("sock_recv", "sock_recv_into") and args[0] in (0, bytearray(0)):
            closed = socket.socket()
            closed.close()
            try:
                expected = getattr(closed, method[5:])(*args)
            except OSError as exc:
                expected = type(exc), exc.errno
        else:
            expected = (OSError, errno.EBADF)
        assert got == expected
        try:
            sent = b.recv(100)  # b"": asyncio closed the fd (the end of the stream)
        except BlockingIOError:
            sent = b""  # uvcffi's wait still holds it
        assert sent == b""


@pytest.mark.parametrize("host,error", [
    ("127.0.0.1\0", ValueError), ("127.0.0.1\0junk", ValueError), (b"127.0.0.1\0", ValueError),
    ("localhost\0", ValueError), (b"\xff", UnicodeError),
], ids=repr)
def test_host_that_is_no_address_for_asyncio(anyloop, host, error):
    # asyncio decodes a bytes host with "idna" and gives the host to inet_pton, which
    # refuses a NUL; uvcffi went to getaddrinfo, which reads the name up to the NUL, and
    # connected to 127.0.0.1 (create_connection, sock_connect, a datagram's remote_addr).
    if anyloop.kind == "asyncio" and sys.implementation.name == "pypy":
        pytest.skip("PyPy's inet_pton takes some names with a NUL and refuses others with "
                    "TypeError: its asyncio is not the specification here")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        async def main():
            with socket.socket() as sock:
                sock.setblocking(False)
                with pytest.raises(error):
                    await anyloop.sock_connect(sock, (host, port))
            with pytest.raises(error):
                await anyloop.create_connection(asyncio.Protocol, host, port)
            with pytest.raises(error):
                await anyloop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       remote_addr=(host, port))

        run(anyloop, main())


@pytest.mark.parametrize("kind", ["native", "fallback"])
def test_sendfile_on_a_socket_closed_meanwhile_sends_it_all(loop, kind, tmp_path):
    # As a pending sock_sendall does, a pending sock_sendfile keeps the socket open until
    # the file is sent (asyncio's never completes).  The socket was held only while each
    # wait for writability lasted: it closed between two, and the next block failed with
    # EBADF (or, for os.sendfile(), went to whatever file had the number by then).
    data = os.urandom(8 << 20)  # more than the socket buffers hold
    path = tmp_path / "data"
    path.write_bytes(data)
    a, b = tcp_pair()
    with b, open(path, "rb") as f:
        file = f if kind == "native" else io.BytesIO(data)

        async def main():
            task = loop.create_task(loop.sock_sendfile(a, file))
            await asyncio.sleep(0)  # the task runs up to its first wait: the peer reads nothing yet
            a.close()
            got = bytearray()
            while True:
                chunk = await loop.sock_recv(b, 1 << 20)
                if not chunk:  # the socket closes once the file is sent
                    break
                got += chunk
            return await task, got

        sent, got = run(loop, main())
        assert sent == len(data) and got == data
        assert a.fileno() == -1 and file.tell() == len(data)


class _RecvSubclass(socket.socket):
    """A socket subclass: sock_recv calls its own recv(), not the loop's receive."""


@pytest.mark.parametrize("case", ["recv_into", "recvfrom_into", "recv_of_a_subclass",
                                  "recv_of_a_huge_datagram_size", "recvfrom_huge", "accept"])
def test_cancelled_after_readiness_takes_nothing(loop, case):
    # The fd turns ready, then the waiting task is cancelled before it resumes.  These read
    # (or accepted) in the fd's callback: the bytes, the datagram or the connection went down
    # with the cancelled future, as on asyncio 3.11.  Now they stay for the next caller, as
    # sock_recv's and sock_recvfrom's own receive always left them.
    needs(loop, "sock_recvfrom_into")
    kind = socket.SOCK_STREAM if case in ("recv_into", "recv_of_a_subclass") else socket.SOCK_DGRAM
    if case == "accept":
        a = socket.socket()
        a.bind(("127.0.0.1", 0))
        a.listen()
        b = socket.socket()
    else:
        a, b = socket.socketpair(socket.AF_UNIX, kind)
        if case == "recv_of_a_subclass":
            a = _RecvSubclass(fileno=a.detach())
    with a, b:
        a.setblocking(False)
        buf = bytearray(10)
        start = {
            "recv_into": lambda: loop.sock_recv_into(a, buf),
            "recvfrom_into": lambda: loop.sock_recvfrom_into(a, buf),
            "recv_of_a_subclass": lambda: loop.sock_recv(a, 10),
            "recv_of_a_huge_datagram_size": lambda: loop.sock_recv(a, 1 << 30),
            "recvfrom_huge": lambda: loop.sock_recvfrom(a, 1 << 30),
            "accept": lambda: loop.sock_accept(a),
        }[case]

        async def main():
            task = loop.create_task(start())
            await asyncio.sleep(0)  # waiting for the fd
            if case == "accept":
                b.connect(a.getsockname())
            else:
                b.send(b"x")
            # The next poll sees the fd ready; this cancel runs first in the iteration
            # after, before the task resumes.
            loop.call_soon(loop.call_soon, task.cancel)
            with pytest.raises(asyncio.CancelledError):
                await task
            if case == "accept":
                conn, _ = await loop.sock_accept(a)
                conn.close()
                return b"accepted"
            return await loop.sock_recv(a, 10)

        assert run(loop, main()) in (b"x", b"accepted")
        assert buf == bytearray(10)  # nothing was read into it
        assert not loop.remove_reader(a)


_RECV_ECHO = """
import asyncio, socket, uvcffi
N, SIZE, ROUNDS = 4, 100 * 1024, 300

async def echo(loop, s):
    for _ in range(ROUNDS):
        got = 0
        while got < SIZE:
            data = await loop.sock_recv(s, 256 * 1024)
            got += len(data)
            await loop.sock_sendall(s, data)
            del data

async def client(loop, c):
    message = b"x" * SIZE
    for _ in range(ROUNDS):
        await loop.sock_sendall(c, message)
        got = 0
        while got < SIZE:
            data = await loop.sock_recv(c, 256 * 1024)
            got += len(data)
            del data

async def main():
    loop = asyncio.get_running_loop()
    pairs = [socket.socketpair() for _ in range(N)]
    for a, b in pairs:
        a.setblocking(False)
        b.setblocking(False)
    await asyncio.gather(*[echo(loop, a) for a, b in pairs],
                         *[client(loop, b) for a, b in pairs])

uvcffi.run(main())
"""


@needs_generational_gc
def test_sock_recv_leaves_nothing_of_a_message_alive_once_its_reader_dropped_it(tmp_path):
    # On PyPy, the frame of a sock_recv that waited was old (a minor collection ran
    # during the wait) and still held the message after the return: an old object
    # pointing at a young one keeps it through the next minor collection, dead or not.
    # So every connection's last message was promoted, for the old generation's
    # collections to free.  Measured in PyPy's own GC log: what survives each minor
    # collection, with 4 connections echoing 100 KiB messages that nobody keeps (was a
    # median of 836 KB, about two messages per connection; now 119 KB).
    assert pypy_minor_survivors(_RECV_ECHO, tmp_path) < 4 * 100 * 1024
