"""Writes a stream transport makes in one loop iteration leave together at its end (uvc_write
in csrc/uvc_stream.h): the asyncio contract they must keep while held.

A stream holds its writes once it has written more than once in an iteration (an HTTP
server's head and body), so each scenario first "primes" the transport with two writes in
one callback.  Nothing here waits for time: the peer is a non-blocking socket read as the
loop turns.
"""
import asyncio
import os
import socket
import time

import pytest
from _helpers import run

import uvcffi


class Peer(asyncio.Protocol):
    def __init__(self):
        self.calls = []
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def pause_writing(self):
        self.calls.append("pause_writing")

    def resume_writing(self):
        self.calls.append("resume_writing")

    def connection_lost(self, exc):
        self.calls.append(("lost", exc))


async def _pair(loop):
    """(transport over one end of a socketpair, its protocol, the other end non-blocking)."""
    a, b = socket.socketpair()
    b.setblocking(False)
    transport, proto = await loop.connect_accepted_socket(Peer, a)
    await asyncio.sleep(0)  # connection_made
    return transport, proto, b


def _take(sock):
    """What the peer's socket has now (b"" when nothing: no wait)."""
    out = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


async def _read_until(sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = _take(sock)
        out += chunk
        if not chunk:
            await asyncio.sleep(0)
    return bytes(out)


async def _prime(transport, sock):
    """Two writes in one callback: from now on the stream holds its writes."""
    transport.write(b"p1")
    transport.write(b"p2")
    assert await _read_until(sock, 4) == b"p1p2"


def _written_syscalls():
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("syscw:"):
                return int(line.split()[1])
    raise AssertionError("no syscw in /proc/self/io")


def test_writes_of_one_callback_keep_their_order(anyloop):
    async def main():
        transport, proto, b = await _pair(anyloop)
        await _prime(transport, b)
        transport.write(b"a")
        transport.writelines([b"b", bytearray(b"c"), memoryview(b"d")])
        transport.write(b"e" * 70000)  # above the high-water mark: not held
        transport.write(b"f")
        transport.write_eof()
        data = await _read_until(b, 70005)
        assert data == b"abcd" + b"e" * 70000 + b"f"
        while True:  # then EOF
            try:
                assert b.recv(10) == b""
                break
            except BlockingIOError:
                await asyncio.sleep(0)
        transport.close()
        b.close()

    run(anyloop, main())


def test_close_sends_what_the_callback_wrote_first(anyloop):
    async def main():
        transport, proto, b = await _pair(anyloop)
        await _prime(transport, b)
        transport.write(b"head")
        transport.write(b"body")
        transport.close()
        assert await _read_until(b, 8) == b"headbody"
        while ("lost", None) not in proto.calls:
            await asyncio.sleep(0)
        b.close()

    run(anyloop, main())


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux's /proc/self/io")
def test_two_writes_in_one_callback_take_one_system_call(loop):
    async def main():
        transport, proto, b = await _pair(loop)
        await _prime(transport, b)
        before = _written_syscalls()
        transport.write(b"head")
        transport.write(b"body")
        await asyncio.sleep(0)
        assert _written_syscalls() - before == 1
        assert _take(b) == b"headbody"
        transport.close()
        b.close()

    run(loop, main())


def test_held_bytes_count_in_the_write_buffer_size(loop):
    async def main():
        transport, proto, b = await _pair(loop)
        await _prime(transport, b)
        transport.write(b"x" * 100)
        transport.write(b"y" * 50)
        # Not in the kernel yet: counted, as asyncio counts what it has not sent.
        assert _take(b) == b""
        assert transport.get_write_buffer_size() == 150
        assert "bufsize=150" in repr(transport)
        await asyncio.sleep(0)
        assert transport.get_write_buffer_size() == 0
        assert _take(b) == b"x" * 100 + b"y" * 50
        transport.close()
        b.close()

    run(loop, main())


def test_abort_sends_held_bytes_the_fd_takes(loop):
    # abort() drops what was not written; held bytes count as written (asyncio's kernel
    # would have them by the time write() returned): an error reply then abort() reaches
    # the peer, as on asyncio.
    async def main():
        transport, proto, b = await _pair(loop)
        await _prime(transport, b)
        transport.write(b"x" * 100)
        transport.write(b"y" * 100)
        assert transport.get_write_buffer_size() == 200
        transport.abort()
        assert transport.get_write_buffer_size() == 0
        while ("lost", None) not in proto.calls:
            await asyncio.sleep(0)
        assert _take(b) == b"x" * 100 + b"y" * 100
        b.close()

    run(loop, main())


class LostPeer(Peer):
    """Peer whose connection_lost completes a future (nothing else wakes its waiter)."""

    def connection_made(self, transport):
        super().connection_made(transport)
        self.lost = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc):
        super().connection_lost(exc)
        self.lost.set_result(exc)


def test_a_failed_flush_of_a_stream_not_reading_does_not_wait_for_the_poll(loop):
    # The held writes of a stream whose reading is paused meet the peer's reset: the error
    # comes from the flush made before the poll, and nothing else would wake that poll (no
    # timer due, no reading).  connection_lost must come at once, not with the next timer
    # (here the watchdog, which fails the test if it fires first).
    async def main():
        a, b = socket.socketpair()
        b.setblocking(False)
        transport, proto = await loop.connect_accepted_socket(LostPeer, a)
        await _prime(transport, b)
        transport.pause_reading()
        b.close()  # writes to it fail now

        def write_twice():
            transport.write(b"x" * 100)
            transport.write(b"y" * 100)

        loop.call_soon(write_twice)
        watchdog = loop.call_later(30, proto.lost.cancel)
        exc = await proto.lost
        watchdog.cancel()
        assert isinstance(exc, (ConnectionResetError, BrokenPipeError)), exc

    run(loop, main(), timeout=60)


def test_a_forked_child_does_not_send_its_parents_held_bytes(loop):
    # A callback writes (held) and forks; the child leaves the loop at once (SystemExit):
    # its run would send the held bytes it inherited, which the parent sends too.
    async def main():
        transport, proto, b = await _pair(loop)
        await _prime(transport, b)
        children = []

        def write_and_fork():
            transport.write(b"AAAA")
            transport.write(b"BBBB")
            pid = os.fork()
            if pid == 0:
                raise SystemExit(0)  # out of the loop's run, in the child
            children.append(pid)

        loop.call_soon(write_and_fork)
        got = await _read_until(b, 8)
        os.waitpid(children[0], 0)  # the child has left its run: what it sent is there
        transport.close()
        while not any(isinstance(c, tuple) for c in proto.calls):
            await asyncio.sleep(0)
        got += _take(b)
        b.close()
        return got

    try:
        got = run(loop, main())
    except SystemExit:  # the child
        os._exit(0)
    assert got == b"AAAABBBB"


def test_a_write_from_another_thread_is_not_held(loop):
    # asyncio does not allow it, but it used to work: a write from another thread while
    # the loop waits in its poll goes out at once (held, nothing would wake the loop to
    # send it, and the hold buffer is the loop thread's).
    import threading

    async def main():
        transport, proto, b = await _pair(loop)
        await _prime(transport, b)
        done = loop.create_future()

        def other_thread():
            # Once the loop's thread sleeps in its poll (the kernel's wait channel says
            # so), or after a bound: then nothing but these bytes could wake it.
            wchan = f"/proc/self/task/{threading.main_thread().native_id}/wchan"
            for _ in range(10_000):
                try:
                    with open(wchan) as f:
                        if "epoll" in f.read():
                            break
                except OSError:
                    break
                time.sleep(0.001)
            transport.write(b"xy")
            b.setblocking(True)
            got = b.recv(2)  # blocks until the bytes are out: a hang fails by the timeout
            loop.call_soon_threadsafe(done.set_result, got)

        threading.Thread(target=other_thread, daemon=True).start()
        got = await done
        b.close()
        transport.close()
        return got

    assert run(loop, main()) == b"xy"


def _stopping_loop_scenario(loop, last_step):
    """Prime, then one callback writes twice and ends with ``last_step``; returns the
    transport and the peer's socket once run_forever has returned (or raised)."""
    transport, proto, b = run(loop, _pair(loop))
    run(loop, _prime(transport, b))

    def write_and_stop():
        transport.write(b"x" * 100)
        transport.write(b"y" * 100)
        assert transport.get_write_buffer_size() == 200
        last_step()

    loop.call_soon(write_and_stop)
    return transport, b


def test_a_stopped_loop_has_sent_what_its_last_iteration_wrote(loop):
    transport, b = _stopping_loop_scenario(loop, loop.stop)
    loop.run_forever()
    # In the kernel before run_forever returned: nothing waits for the loop to run again.
    assert _take(b) == b"x" * 100 + b"y" * 100
    assert transport.get_write_buffer_size() == 0
    transport.write(b"z")  # outside a run: sent at once
    assert _take(b) == b"z"
    transport.close()
    run(loop, asyncio.sleep(0))
    b.close()


def test_keyboard_interrupt_in_the_iteration_loses_no_held_write(loop):
    def interrupt():
        raise KeyboardInterrupt

    transport, b = _stopping_loop_scenario(loop, interrupt)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert _take(b) == b"x" * 100 + b"y" * 100
    transport.close()
    run(loop, asyncio.sleep(0))
    b.close()


def test_an_exception_in_the_callback_loses_no_held_write(loop):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx.get("exception")))

    def fail():
        raise ValueError("boom")

    transport, b = _stopping_loop_scenario(loop, fail)
    run(loop, asyncio.sleep(0))
    assert [type(e) for e in errors] == [ValueError]
    assert _take(b) == b"x" * 100 + b"y" * 100
    transport.close()
    run(loop, asyncio.sleep(0))
    b.close()


def _fill(transport, sock):
    """Fill the kernel's buffers of the connection without the transport knowing: its
    queue stays empty (so it still holds writes) while the fd takes nothing more."""
    raw = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
    raw.setblocking(False)
    sent = 0
    try:
        while True:
            try:
                sent += raw.send(b"\0" * 65536)
            except BlockingIOError:
                return sent
    finally:
        raw.close()


def test_held_bytes_the_fd_refuses_stay_counted_until_sent(loop):
    async def main():
        transport, proto, b = await _pair(loop)
        await _prime(transport, b)
        filled = _fill(transport, b)
        transport.write(b"x" * 1000)
        transport.write(b"y" * 1000)
        assert transport.get_write_buffer_size() == 2000
        await asyncio.sleep(0)  # the held bytes find the fd full: queued
        assert transport.get_write_buffer_size() == 2000
        assert proto.calls == []
        data = await _read_until(b, filled + 2000)
        assert data[filled:] == b"x" * 1000 + b"y" * 1000
        while transport.get_write_buffer_size():
            await asyncio.sleep(0)
        transport.close()
        while ("lost", None) not in proto.calls:
            await asyncio.sleep(0)
        b.close()

    run(loop, main())


def test_pause_writing_counts_held_and_queued_bytes(loop):
    async def main():
        transport, proto, b = await _pair(loop)
        transport.set_write_buffer_limits(high=1500)
        await _prime(transport, b)
        filled = _fill(transport, b)
        transport.write(b"x" * 1000)  # held
        assert proto.calls == []
        transport.write(b"y" * 1000)  # over the mark with what is held: both queued
        assert transport.get_write_buffer_size() == 2000
        assert proto.calls == ["pause_writing"]
        data = await _read_until(b, filled + 2000)
        assert data[filled:] == b"x" * 1000 + b"y" * 1000
        while proto.calls == ["pause_writing"]:
            await asyncio.sleep(0)
        assert proto.calls == ["pause_writing", "resume_writing"]
        assert transport.get_write_buffer_size() == 0
        transport.close()
        b.close()

    run(loop, main())


def test_sendfile_waits_for_held_bytes(loop, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"F" * 5000)

    async def main():
        transport, proto, b = await _pair(loop)
        await _prime(transport, b)
        transport.write(b"head")
        transport.write(b"er")
        with open(path, "rb") as f:
            task = loop.create_task(loop.sendfile(transport, f))
            data = await _read_until(b, 5006)
            assert await task == 5000
        assert data == b"header" + b"F" * 5000
        transport.close()
        b.close()

    run(loop, main())


def test_tls_over_a_holding_stream(loop, tmp_path):
    from _tls_certs import Certs

    certs = Certs(str(tmp_path))

    async def main():
        got = bytearray()
        done = loop.create_future()
        server_side_lost = loop.create_future()

        class Echo(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport = transport

            def connection_lost(self, exc):
                server_side_lost.set_result(exc)

            def data_received(self, data):
                # Two writes per read: the TLS records of both leave in one write.
                self.transport.write(data[:1])
                self.transport.write(data[1:])

        srv = await loop.create_server(Echo, "127.0.0.1", 0, ssl=certs.server())
        port = srv.sockets[0].getsockname()[1]

        class Client(asyncio.Protocol):
            def data_received(self, data):
                got.extend(data)
                if len(got) >= 3 * 1000 and not done.done():
                    done.set_result(None)

        transport, _ = await loop.create_connection(Client, "127.0.0.1", port,
                                                    ssl=certs.client(),
                                                    server_hostname="localhost")
        for i in range(3):
            transport.write(bytes([65 + i]) * 1000)
            await asyncio.sleep(0)
        await done
        assert bytes(got) == b"A" * 1000 + b"B" * 1000 + b"C" * 1000
        transport.close()
        # The server's end closes on the client's close_notify; the test must not close the
        # loop before (Server.wait_closed() of 3.11 does not wait for connections).
        assert await server_side_lost is None
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_new_loop_writes_outside_a_run_go_out_at_once():
    loop = uvcffi.new_event_loop()
    try:
        transport, proto, b = run(loop, _pair(loop))
        run(loop, _prime(transport, b))
        transport.write(b"a")
        transport.write(b"b")
        assert transport.get_write_buffer_size() == 0
        assert _take(b) == b"ab"
        transport.close()
        run(loop, asyncio.sleep(0))
        b.close()
    finally:
        loop.close()
