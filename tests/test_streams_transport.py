"""Stream transports (transports/stream.py): each scenario runs on uvcffi and on asyncio's
own selector loop, which is the specification: both must give the same answers."""
import asyncio
import contextvars
import errno
import gc
import logging
import os
import socket
import struct
import time
import warnings

import pytest
from _helpers import has_ipv6_loopback, needs_generational_gc, pypy_minor_survivors, run

from uvcffi.transports.stream import SocketTransport, StreamTransportBase


class Recorder(asyncio.Protocol):
    """Records every protocol callback in order."""

    def __init__(self, keep_open=False):
        self.calls = []
        self.data = bytearray()
        self.keep_open = keep_open
        self.transport = None
        self.lost = None
        self.done = None

    def connection_made(self, transport):
        self.transport = transport
        self.calls.append("made")
        self.done = asyncio.get_running_loop().create_future()

    def data_received(self, data):
        assert isinstance(data, bytes)
        self.calls.append("data")
        self.data += data

    def eof_received(self):
        self.calls.append("eof")
        return self.keep_open

    def pause_writing(self):
        self.calls.append("pause_writing")

    def resume_writing(self):
        self.calls.append("resume_writing")

    def connection_lost(self, exc):
        self.calls.append("lost")
        self.lost = exc
        if not self.done.done():
            self.done.set_result(exc)


async def tcp_pair(loop, server_proto=Recorder, client_proto=Recorder):
    """(server, client transport, client protocol, server protocol future)."""
    accepted = loop.create_future()

    def factory():
        p = server_proto()
        if not accepted.done():
            accepted.set_result(p)
        return p

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tr, pr = await loop.create_connection(client_proto, "127.0.0.1", port)
    sp = await accepted
    while sp.transport is None:
        await asyncio.sleep(0)
    return server, tr, pr, sp


async def raw_server(loop):
    """A plain listening socket (no transport on the server side)."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(10)
    lsock.setblocking(False)
    return lsock


async def raw_connection(loop, protocol_factory):
    """A client transport of ``loop`` connected to a plain socket: (listening socket,
    transport, protocol, the accepted socket)."""
    lsock = await raw_server(loop)
    tr, pr = await loop.create_connection(protocol_factory, "127.0.0.1", lsock.getsockname()[1])
    conn, _ = lsock.accept()
    return lsock, tr, pr, conn


def test_is_asyncio_transport(anyloop):
    async def main():
        server, tr, pr, sp = await tcp_pair(anyloop)
        assert isinstance(tr, asyncio.Transport)
        assert isinstance(sp.transport, asyncio.Transport)
        if anyloop.kind == "uvcffi":
            assert isinstance(tr, SocketTransport) and isinstance(tr, StreamTransportBase)
        tr.close()
        await pr.done
        await sp.done
        server.close()
        await server.wait_closed()
    run(anyloop, main())


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview, "array"])
def test_write_bytes_like_and_echo(anyloop, kind):
    payload = bytes(range(256)) * 64

    def make(b):
        if kind == "array":
            import array
            return memoryview(array.array("i", b))  # items of 4 bytes: nbytes counts
        return kind(b)

    async def main():
        server, tr, pr, sp = await tcp_pair(anyloop)
        tr.write(make(payload))
        tr.write(make(b""))
        tr.writelines([make(b"abcd"), b"ef", bytearray(b"gh")])
        tr.write_eof()
        while "eof" not in sp.calls:
            await asyncio.sleep(0.001)
        assert bytes(sp.data) == payload + b"abcdefgh"
        tr.close()
        await pr.done
        server.close()
    run(anyloop, main())


@pytest.mark.parametrize("bad", ["text", 1, None, [b"x"]])
def test_write_rejects_non_bytes(anyloop, bad):
    async def main():
        server, tr, pr, sp = await tcp_pair(anyloop)
        with pytest.raises(TypeError):
            tr.write(bad)
        with pytest.raises(TypeError):
            tr.writelines(["text"])
        tr.write_eof()
        with pytest.raises(RuntimeError, match="write_eof"):
            tr.write(b"late")
        assert tr.can_write_eof()
        tr.close()
        await pr.done
        server.close()
    run(anyloop, main())


def test_write_buffer_limits_take_any_number(anyloop):
    # asyncio takes any number for the marks; the C core's write holding (its limit is an
    # int64) refused a float with TypeError and a huge int with OverflowError, after the
    # marks had changed.  A write pipe shares that code.
    async def main():
        a, b = socket.socketpair()
        r, w = os.pipe()
        tr, _ = await anyloop.create_connection(Recorder, sock=a)
        ptr, _ = await anyloop.connect_write_pipe(Recorder, open(w, "wb", 0))
        for t in (tr, ptr):
            t.set_write_buffer_limits(high=100.5)
            assert t.get_write_buffer_limits() == (25.0, 100.5)
            t.set_write_buffer_limits(high=2 ** 70, low=1e20)
            assert t.get_write_buffer_limits() == (1e20, 2 ** 70)
            t.write(b"x")
            t.close()
        b.close()
        os.close(r)

    run(anyloop, main())


def test_write_buffer_size_and_flow_control(anyloop):
    async def main():
        lsock = await raw_server(anyloop)
        tr, pr = await anyloop.create_connection(Recorder, sock=None, host="127.0.0.1",
                                                 port=lsock.getsockname()[1])
        conn, _ = lsock.accept()
        conn.setblocking(False)
        tr.set_write_buffer_limits(high=1024, low=256)
        assert tr.get_write_buffer_limits() == (256, 1024)
        with pytest.raises(ValueError):
            tr.set_write_buffer_limits(high=1, low=2)
        chunk = b"x" * 65536
        total = 0
        while "pause_writing" not in pr.calls:
            tr.write(chunk)
            total += len(chunk)
        size = tr.get_write_buffer_size()
        assert 1024 < size <= total
        # the peer reads everything: the buffer drains to 0 and resume_writing comes once
        received = 0
        while received < total:
            try:
                received += len(conn.recv(1 << 20))
            except BlockingIOError:
                await asyncio.sleep(0.001)
        while tr.get_write_buffer_size():
            await asyncio.sleep(0.001)
        assert pr.calls.count("pause_writing") == 1
        assert pr.calls.count("resume_writing") == 1
        tr.close()
        await pr.done
        conn.close()
        lsock.close()
    run(anyloop, main())


def test_pause_reading_holds_data_until_resume(anyloop):
    class Pausing(Recorder):
        def data_received(self, data):
            super().data_received(data)
            self.transport.pause_reading()

    async def main():
        lsock, tr, pr, conn = await raw_connection(anyloop, Pausing)
        payload = b"".join(struct.pack("!I", i) for i in range(50000))
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        while True:
            while not pr.data or tr.is_reading():
                await asyncio.sleep(0.001)
            # paused: nothing more arrives however long we wait
            seen = len(pr.data)
            for _ in range(5):
                await asyncio.sleep(0.002)
            assert len(pr.data) == seen and not tr.is_reading()
            if "eof" in pr.calls:
                break
            tr.resume_reading()
            await asyncio.sleep(0)
            if len(pr.data) == len(payload):
                tr.resume_reading()
                while "eof" not in pr.calls:
                    await asyncio.sleep(0.001)
                break
        assert bytes(pr.data) == payload
        assert pr.calls[-1] == "eof" or pr.calls[-2:] == ["eof", "lost"] or "lost" in pr.calls
        await pr.done
        conn.close()
        lsock.close()
    run(anyloop, main())


def test_eof_received_true_keeps_write_side(anyloop):
    async def main():
        server, tr, pr, sp = await tcp_pair(
            anyloop, server_proto=lambda: Recorder(keep_open=True))
        tr.write(b"question")
        tr.write_eof()
        while "eof" not in sp.calls:
            await asyncio.sleep(0.001)
        assert not sp.transport.is_closing()
        sp.transport.write(b"answer")
        sp.transport.close()
        await pr.done
        assert bytes(pr.data) == b"answer"
        assert pr.calls == ["made", "data", "eof", "lost"]
        assert sp.calls == ["made", "data", "eof", "lost"]
        server.close()
    run(anyloop, main())


def test_close_flushes_pending_writes(anyloop):
    async def main():
        lsock, tr, pr, conn = await raw_connection(anyloop, Recorder)
        conn.setblocking(False)
        payload = bytes(range(256)) * 16384  # 4 MiB: more than the socket buffers
        tr.write(payload)
        assert tr.get_write_buffer_size() > 0
        tr.close()
        assert tr.is_closing()
        tr.close()  # twice is fine
        got = bytearray()
        while True:
            try:
                b = conn.recv(1 << 20)
            except BlockingIOError:
                await asyncio.sleep(0.001)
                continue
            if not b:
                break
            got += b
        assert bytes(got) == payload
        assert await pr.done is None
        assert [c for c in pr.calls if "writing" not in c] == ["made", "lost"]
        conn.close()
        lsock.close()
    run(anyloop, main())


def test_abort_drops_buffer(anyloop):
    async def main():
        server, tr, pr, sp = await tcp_pair(anyloop)
        tr.write(b"x" * (8 << 20))
        tr.abort()
        assert tr.is_closing()
        assert await pr.done is None
        assert await sp.done is None or isinstance(sp.lost, ConnectionResetError)
        assert len(sp.data) < 8 << 20
        server.close()
    run(anyloop, main())


def test_peer_reset_gives_connection_reset(anyloop):
    async def main():
        lsock, tr, pr, conn = await raw_connection(anyloop, Recorder)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # RST
        exc = await pr.done
        assert isinstance(exc, ConnectionResetError)
        assert pr.calls == ["made", "lost"]
        lsock.close()
    run(anyloop, main())


def _tcp_state(sock):
    """The kernel's TCP state of ``sock`` (TCP_INFO's first byte: 7 is TCP_CLOSE)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def _reset_after_the_peers_fin(reply):
    """A non-blocking TCP socket whose peer sent ``reply`` (read here) and closed (its FIN
    is next), then answered a write with a reset."""
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        ours = socket.create_connection(lsock.getsockname())
        peer, _ = lsock.accept()
    peer.sendall(reply)
    peer.close()
    if reply:
        assert ours.recv(len(reply)) == reply
    assert ours.recv(1, socket.MSG_PEEK) == b""  # the FIN is here
    ours.send(b"late")  # answered with a reset
    deadline = time.monotonic() + 10  # a bound, not a timing: loopback answers at once
    while _tcp_state(ours) != 7 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert _tcp_state(ours) == 7
    ours.setblocking(False)
    return ours


def test_reset_after_the_peers_fin_is_still_eof(anyloop):
    # The peer sends its reply and closes (FIN); a write of ours crosses that and the peer
    # answers it with a reset, which the kernel files as EPIPE.  recv() still returns b""
    # (the FIN came first): asyncio calls eof_received(), then connection_lost(None), not a
    # read error.  Common with HTTP servers that close without reading the rest.
    ours = _reset_after_the_peers_fin(b"reply")

    async def main():
        tr, pr = await anyloop.create_connection(Recorder, sock=ours)
        exc = await pr.done
        return pr.calls, exc

    calls, exc = run(anyloop, main())
    assert calls == ["made", "eof", "lost"] and exc is None


def test_reset_after_both_fins_is_still_eof(anyloop):
    # As above, but our side had shut down its write side too, after the peer's FIN, and
    # its own FIN was still queued (the peer's window was shut): the peer then closed with
    # a reset, which the kernel files as ECONNRESET here (not EPIPE: the connection was
    # past CLOSE_WAIT).  recv() still returns the data and then b"" (the peer's FIN came
    # first), so asyncio calls eof_received(), and connection_lost(None) at the close.
    # uvcffi read the pending error with SO_ERROR and made it a ConnectionResetError
    # (found by tests/test_differential.py).
    with socket.socket() as lsock:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # shut the window soon
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        ours = socket.create_connection(lsock.getsockname())
        peer, _ = lsock.accept()
    with peer:
        peer.sendall(b"reply")
        peer.shutdown(socket.SHUT_WR)
        ours.setblocking(False)
        assert ours.send(bytes(1 << 20)) > 0  # more than the peer's window takes
        ours.shutdown(socket.SHUT_WR)  # our FIN waits behind the unsent bytes
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    deadline = time.monotonic() + 10  # a bound, not a timing: loopback answers at once
    while _tcp_state(ours) != 7 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert _tcp_state(ours) == 7

    async def main():
        tr, pr = await anyloop.create_connection(lambda: Recorder(keep_open=True), sock=ours)
        while "eof" not in pr.calls and not pr.done.done():
            await asyncio.sleep(0)
        tr.close()
        exc = await pr.done
        return pr.calls, bytes(pr.data), exc

    calls, data, exc = run(anyloop, main())
    assert (calls[0], calls[-2:], data, exc) == ("made", ["eof", "lost"], b"reply", None)


def test_write_eof_on_a_reset_connection_is_not_silent(anyloop):
    # The peer closed and reset the connection (as above); the protocol keeps its write
    # side open after the EOF and then calls write_eof(): shutdown() fails with ENOTCONN.
    # asyncio's write_eof() raises it; uvcffi (as uvloop) learns it from libuv later and
    # ends the transport with connection_lost(OSError).  It used to drop the error: the
    # protocol, reading no more, never heard of the connection again.
    ours = _reset_after_the_peers_fin(b"")

    async def main():
        tr, pr = await anyloop.create_connection(lambda: Recorder(keep_open=True), sock=ours)
        while "eof" not in pr.calls:
            await asyncio.sleep(0)
        try:
            tr.write_eof()
        except OSError as exc:  # asyncio: at once
            tr.abort()
            return "raised", exc
        return "lost", await pr.done

    how, exc = run(anyloop, main())
    assert how == ("raised" if anyloop.kind == "asyncio" else "lost")
    assert isinstance(exc, OSError) and exc.errno == errno.ENOTCONN


def test_write_after_lost_warns_after_threshold(anyloop, caplog):
    # Writes to a lost connection are dropped and, from the fifth on, logged; writing b""
    # loses nothing, so twenty of them first must not bring the warning nearer.
    async def main():
        server, tr, pr, sp = await tcp_pair(anyloop)
        tr.abort()
        await pr.done
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(20):
                tr.write(b"")
            assert "socket.send() raised exception." not in caplog.text
            for _ in range(7):
                tr.write(b"x")
        warns = [r for r in caplog.records if "socket.send() raised exception." in r.getMessage()]
        assert 1 <= len(warns) <= 3
        server.close()
    run(anyloop, main())


def test_write_to_closed_peer_is_connection_lost(anyloop):
    async def main():
        lsock, tr, pr, conn = await raw_connection(anyloop, Recorder)
        conn.close()
        lsock.close()
        for _ in range(200):
            if tr.is_closing():
                break
            tr.write(b"x" * 65536)
            await asyncio.sleep(0.002)
        exc = await pr.done
        assert exc is None or isinstance(exc, (BrokenPipeError, ConnectionResetError))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        run(anyloop, main())


def test_reads_that_fill_the_buffer_go_on_and_pausing_stops_them(anyloop):
    # A Protocol's stream is read in read-into mode: up to 256 KiB per read, again at once
    # while reads fill that, but never after pause_reading() in data_received.
    payload = bytes(range(256)) * (12 << 10)  # 3 MiB

    class PauseFirst(Recorder):
        def data_received(self, data):
            super().data_received(data)
            if len(self.calls) == 2:  # "made", then the first "data"
                self.transport.pause_reading()

    async def main():
        lsock, tr, pr, conn = await raw_connection(anyloop, PauseFirst)
        conn.setblocking(False)
        # (A task: while the transport is paused the socket buffers may fill up.)
        sender = asyncio.ensure_future(anyloop.sock_sendall(conn, payload))
        while not pr.data:
            await asyncio.sleep(0.001)
        for _ in range(20):
            await asyncio.sleep(0.001)
        chunks_while_paused = pr.calls.count("data")
        first = len(pr.data)
        tr.resume_reading()
        await sender
        while len(pr.data) < len(payload):
            await asyncio.sleep(0.001)
        conn.close()
        await pr.done
        lsock.close()
        return chunks_while_paused, first, bytes(pr.data) == payload

    paused_chunks, first, intact = run(anyloop, main())
    assert paused_chunks == 1 and 0 < first <= 256 * 1024 and intact


def test_buffered_protocol_switching_to_a_protocol_with_more_data_waiting(anyloop):
    # buffer_updated() sets a plain Protocol while more than its buffer holds waits: the
    # rest goes to data_received (uvcffi went on calling get_buffer on the new protocol).
    payload = bytes(range(256)) * 4096  # 1 MiB

    class Plain(asyncio.Protocol):
        def __init__(self, got, done):
            self.got, self.done = got, done

        def data_received(self, data):
            self.got += data

        def connection_lost(self, exc):
            self.done.set_result(exc)

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self, done):
            self.got, self.mem, self.done = bytearray(), bytearray(65536), done

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            return self.mem

        def buffer_updated(self, nbytes):
            self.got += self.mem[:nbytes]
            self.transport.set_protocol(Plain(self.got, self.done))

        def connection_lost(self, exc):
            self.done.set_result(exc)

    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        sender = asyncio.ensure_future(anyloop.sock_sendall(a, payload))
        await asyncio.sleep(0.01)  # more than 64 KiB waits before the transport reads
        done = anyloop.create_future()
        proto = Buffered(done)
        await anyloop.create_connection(lambda: proto, sock=b)
        await sender
        a.shutdown(socket.SHUT_WR)
        exc = await done
        a.close()
        return exc, bytes(proto.got) == payload

    assert run(anyloop, main()) == (None, True)


def test_data_received_error_goes_to_exception_handler(anyloop):
    class Failing(Recorder):
        def data_received(self, data):
            raise ZeroDivisionError("boom")

    async def main():
        contexts = []
        anyloop.set_exception_handler(lambda loop, ctx: contexts.append(ctx))
        server, tr, pr, sp = await tcp_pair(anyloop, server_proto=Failing)
        tr.write(b"x")
        exc = await sp.done
        assert isinstance(exc, ZeroDivisionError)
        assert contexts[0]["message"] == "Fatal error: protocol.data_received() call failed."
        assert contexts[0]["exception"] is exc
        assert contexts[0]["transport"] is sp.transport
        assert contexts[0]["protocol"] is sp
        await pr.done
        server.close()
    run(anyloop, main())


class BufProto(asyncio.BufferedProtocol):
    def __init__(self, size):
        self.size = size
        self.data = bytearray()
        self.buf = bytearray(size)
        self.hints = []
        self.done = asyncio.get_event_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        self.hints.append(sizehint)
        return self.buf

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= self.size
        self.data += self.buf[:nbytes]

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.done.set_result(exc)


class ReleasingBufProto(BufProto):
    """A fresh memoryview per get_buffer(), released once its bytes are taken."""

    def get_buffer(self, sizehint):
        self.view = memoryview(bytearray(self.size))
        return self.view

    def buffer_updated(self, nbytes):
        self.data += self.view[:nbytes]
        self.view.release()


@pytest.mark.parametrize("size", [1, 7, 65536])
@pytest.mark.parametrize("proto_class", [BufProto, ReleasingBufProto])
def test_buffered_protocol_small_buffers(anyloop, size, proto_class):
    # ReleasingBufProto: the transport must not look at the buffer after buffer_updated()
    # (len() of a released memoryview, or of a closed mmap, raises ValueError: the
    # transport failed with it).
    async def main():
        contexts = []
        anyloop.set_exception_handler(lambda loop, ctx: contexts.append(ctx))
        lsock, tr, pr, conn = await raw_connection(anyloop, lambda: proto_class(size))
        payload = bytes(range(256)) * 400
        conn.sendall(payload)
        conn.close()
        assert await pr.done is None
        assert bytes(pr.data) == payload
        assert contexts == []
        lsock.close()
    run(anyloop, main())


# get_buffer() returning an empty buffer, or no buffer at all (asyncio takes its len() in
# the same try), is its own failure; one that cannot be written is the read's (asyncio's
# recv_into() raises TypeError): asyncio's fatal error for each.
@pytest.mark.parametrize("buffer, error, message", [
    (bytearray(), RuntimeError, "Fatal error: protocol.get_buffer() call failed."),
    (None, TypeError, "Fatal error: protocol.get_buffer() call failed."),
    (b"12345678", TypeError, "Fatal read error on socket transport"),
])
def test_buffered_protocol_unusable_buffer_is_fatal(anyloop, buffer, error, message):
    class Unusable(BufProto):
        def get_buffer(self, sizehint):
            return buffer

    async def main():
        contexts = []
        anyloop.set_exception_handler(lambda loop, ctx: contexts.append(ctx))
        lsock, tr, pr, conn = await raw_connection(anyloop, lambda: Unusable(1))
        conn.sendall(b"data")
        exc = await pr.done
        assert isinstance(exc, error)
        assert contexts[0]["message"] == message
        conn.close()
        lsock.close()
    run(anyloop, main())


class Collector(BufProto):
    """BufProto with ``until(n)``: a future done once n bytes came."""

    def __init__(self, size=16):
        super().__init__(size)
        self.waits = []

    def buffer_updated(self, nbytes):
        super().buffer_updated(nbytes)
        self.took(b"")

    def took(self, data):
        self.data += data
        for n, fut in self.waits:
            if len(self.data) >= n and not fut.done():
                fut.set_result(None)

    def until(self, n):
        fut = asyncio.get_event_loop().create_future()
        self.waits.append((n, fut))
        self.took(b"")
        return fut


def test_buffered_protocol_buffer_is_not_held_between_reads(anyloop):
    """As asyncio: get_buffer(-1) right before each read, and nothing keeps the buffer
    exported between reads, so the protocol may resize its bytearray there."""
    async def main():
        lsock, tr, pr, conn = await raw_connection(anyloop, lambda: Collector(16))
        for i in range(1, 6):
            conn.sendall(b"x" * 10)
            await pr.until(10 * i)
            pr.buf.extend(bytes(16))  # BufferError while the buffer is exported
        conn.close()
        assert await pr.done is None
        assert bytes(pr.data) == b"x" * 50
        assert set(pr.hints) == {-1}
        lsock.close()
    run(anyloop, main())


def test_buffered_protocol_pausing_in_buffer_updated_stops_reading(anyloop):
    """pause_reading() in buffer_updated() stops the reads at once, also when more data
    waits than the buffer holds; resume_reading() brings the rest, in order."""
    class OneByte(Collector):
        def buffer_updated(self, nbytes):
            super().buffer_updated(nbytes)
            if len(self.data) == 1:
                self.transport.pause_reading()

    async def main():
        lsock, tr, pr, conn = await raw_connection(anyloop, lambda: OneByte(1))
        conn.sendall(bytes(range(100)))
        await pr.until(1)
        for _ in range(20):  # loop iterations in which the 99 bytes wait in the socket
            await asyncio.sleep(0)
        assert len(pr.data) == 1 and not tr.is_reading()
        tr.resume_reading()
        await pr.until(100)
        assert bytes(pr.data) == bytes(range(100))
        conn.close()
        assert await pr.done is None
        lsock.close()
    run(anyloop, main())


def test_set_protocol_between_buffered_and_plain_keeps_the_order(anyloop):
    """Reads follow set_protocol() from a BufferedProtocol to a Protocol and back: every
    byte goes to the protocol set when it is read, in order."""
    class Plain(asyncio.Protocol):
        def __init__(self, into):
            self.into = into

        def data_received(self, data):
            self.into.took(data)

    async def main():
        lsock, tr, pr, conn = await raw_connection(anyloop, lambda: Collector(7))
        conn.sendall(b"a" * 30)
        await pr.until(30)
        tr.set_protocol(Plain(pr))
        conn.sendall(b"b" * 30)
        await pr.until(60)
        tr.set_protocol(pr)
        conn.sendall(b"c" * 30)
        await pr.until(90)
        assert bytes(pr.data) == b"a" * 30 + b"b" * 30 + b"c" * 30
        assert len(pr.hints) >= 30 // 7 * 2  # the third part came through get_buffer
        tr.close()
        conn.close()
        lsock.close()
    run(anyloop, main())


def test_set_protocol_in_buffer_updated_takes_the_next_read(anyloop):
    """A BufferedProtocol that sets another in buffer_updated(): the next read, in the
    same iteration or not, goes to the new one."""
    class Handing(Collector):
        def buffer_updated(self, nbytes):
            super().buffer_updated(nbytes)
            self.transport.set_protocol(self.next)

    async def main():
        lsock, tr, pr, conn = await raw_connection(anyloop, lambda: Handing(1))
        pr.next = Collector(64)
        conn.sendall(b"0123456789")  # more than the first protocol's 1-byte buffer
        await pr.next.until(9)
        assert bytes(pr.data) == b"0" and bytes(pr.next.data) == b"123456789"
        tr.close()
        conn.close()
        lsock.close()
    run(anyloop, main())


def test_buffered_protocol_peer_reset_gives_connection_reset(anyloop):
    async def main():
        lsock, tr, pr, conn = await raw_connection(anyloop, lambda: Collector(16))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # RST
        assert isinstance(await pr.done, ConnectionResetError)
        lsock.close()
    run(anyloop, main())


def test_set_protocol_switches_reads(anyloop):
    async def main():
        server, tr, pr, sp = await tcp_pair(anyloop)
        new = Recorder()
        new.done = anyloop.create_future()
        sp.transport.set_protocol(new)
        assert sp.transport.get_protocol() is new
        tr.write(b"to the new one")
        tr.close()
        await new.done
        assert bytes(new.data) == b"to the new one" and not sp.data
        server.close()
    run(anyloop, main())


def test_extra_info(anyloop):
    async def main():
        server, tr, pr, sp = await tcp_pair(anyloop)
        port = server.sockets[0].getsockname()[1]
        for t in (tr, sp.transport):
            sock = t.get_extra_info("socket")
            assert isinstance(sock, asyncio.trsock.TransportSocket)
            assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
            # asyncio turns TCP_NODELAY on for TCP transports
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert t.get_extra_info("sockname")[0] == "127.0.0.1"
            assert t.get_extra_info("peername")[0] == "127.0.0.1"
            assert t.get_extra_info("nonexistent", "dflt") == "dflt"
        assert tr.get_extra_info("peername")[1] == port
        assert sp.transport.get_extra_info("sockname")[1] == port
        assert tr.get_extra_info("sockname") == sp.transport.get_extra_info("peername")
        tr.close()
        await pr.done
        await sp.done
        server.close()
    run(anyloop, main())


def test_close_while_paused_loses_connection_with_the_last_write(anyloop, caplog):
    # A writer paused on a full buffer when the transport is closed (uvicorn when the client
    # half-closes): the drain that resumes it also ends the connection, in the same
    # callback as asyncio's, so the woken writer sees connection_lost() and stops instead
    # of writing on into the closed transport.
    async def main():
        resumed = asyncio.Event()
        lost = []

        class Writer(Recorder):
            def resume_writing(self):
                resumed.set()

            def connection_lost(self, exc):
                lost.append(exc)

        lsock, tr, pr, conn = await raw_connection(anyloop, Writer)
        tr.set_write_buffer_limits(high=65536)
        chunk = b"x" * 65536
        while tr.get_write_buffer_size() <= 65536:  # the kernel's buffers fill first
            tr.write(chunk)
        tr.close()
        conn.setblocking(False)

        async def drain():
            while await anyloop.sock_recv(conn, 1 << 20):
                pass

        reading = anyloop.create_task(drain())
        await resumed.wait()
        stopped = bool(lost)  # what uvicorn's send() checks before each write
        for _ in range(10):
            if not lost:
                tr.write(chunk)
        await reading
        conn.close()
        lsock.close()
        return stopped

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        assert run(anyloop, main()) is True
    assert "socket.send() raised exception." not in caplog.text


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_peername_of_accepted_connection_survives_reset(anyloop, host):
    # A client that resets: getpeername() fails from then on, yet the server asks for the
    # address after that (aiohttp's log of the failed request).  asyncio has it from
    # accept(): the reset and the close take nothing away.
    if host == "::1" and not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")

    async def main():
        lost = anyloop.create_future()

        class Proto(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport = transport

            def connection_lost(self, exc):
                lost.set_result((self.transport, exc))

        server = await anyloop.create_server(Proto, host, 0)
        client = socket.create_connection(server.sockets[0].getsockname()[:2])
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer = client.getsockname()
        client.close()  # RST
        tr, exc = await lost
        assert isinstance(exc, ConnectionResetError)
        assert tr.get_extra_info("peername") == peer
        server.close()
        await server.wait_closed()
    run(anyloop, main())


def test_callbacks_run_in_creation_context(anyloop):
    var = contextvars.ContextVar("var", default="unset")
    seen = []

    class CtxProto(Recorder):
        def connection_made(self, transport):
            seen.append(("made", var.get()))
            super().connection_made(transport)

        def data_received(self, data):
            seen.append(("data", var.get()))
            super().data_received(data)

        def connection_lost(self, exc):
            seen.append(("lost", var.get()))
            super().connection_lost(exc)

    async def main():
        server, tr, pr, sp = await tcp_pair(anyloop)
        tr.close()
        await pr.done
        server.close()

        async def client():
            var.set("client")
            lsock, tr, pr, conn = await raw_connection(anyloop, CtxProto)
            conn.sendall(b"x")
            while not pr.data:
                await asyncio.sleep(0.001)
            conn.close()
            lsock.close()
            await pr.done

        await asyncio.get_running_loop().create_task(client())
        assert seen and all(v == "client" for _, v in seen), seen
    run(anyloop, main())


def test_is_reading_states(anyloop):
    async def main():
        server, tr, pr, sp = await tcp_pair(anyloop)
        assert tr.is_reading()
        tr.pause_reading()
        tr.pause_reading()
        assert not tr.is_reading()
        tr.resume_reading()
        tr.resume_reading()
        assert tr.is_reading()
        tr.close()
        assert not tr.is_reading()
        tr.resume_reading()  # no effect once closing
        assert not tr.is_reading()
        await pr.done
        server.close()
    run(anyloop, main())


def test_unclosed_transport_warns(anyloop):
    async def main():
        server, tr, pr, sp = await tcp_pair(anyloop)
        server.close()
        return tr

    tr = run(anyloop, main())
    del tr
    with pytest.warns(ResourceWarning, match="unclosed transport"):
        anyloop.close()
        for _ in range(4):  # PyPy finalizes over several collections
            gc.collect()


def test_buffered_protocol_with_a_non_byte_buffer(anyloop):
    """get_buffer() may return any writable buffer (here an array of 4-byte ints, smaller
    than the read): the bytes arrive in order, whatever the buffer's item size."""
    import array

    class Proto(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = array.array("I", [0] * 4)
            self.got = b""
            self.done = anyloop.create_future()

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            self.got += self.buf.tobytes()[:nbytes]
            if len(self.got) >= 40 and not self.done.done():
                self.done.set_result(None)

    async def main():
        a, b = socket.socketpair()
        transport, proto = await anyloop.connect_accepted_socket(Proto, a)
        b.send(bytes(range(40)))
        await proto.done
        transport.close()
        b.close()
        return proto.got

    assert run(anyloop, main()) == bytes(range(40))


@pytest.mark.parametrize(
    "kind", ["bytearray", "memoryview", "2d-memoryview", "int-array", "offset-view"]
)
def test_buffered_protocol_buffer_kinds(anyloop, kind):
    """Reads are copied from the loop's arena straight into get_buffer()'s buffer, whatever
    writable buffer it is: every byte arrives, in order, and nothing is written outside it."""
    import array

    size = 1 << 17
    backing = bytearray(size + 64)
    guard = b"\xee" * 32

    def make():
        if kind == "bytearray":
            return bytearray(size)
        if kind == "memoryview":
            return memoryview(bytearray(size))
        if kind == "2d-memoryview":  # len() counts rows, not bytes
            return memoryview(bytearray(size)).cast("B", (2, size // 2))
        if kind == "int-array":  # len() counts 4-byte items
            return array.array("I", bytes(size))
        backing[:32] = guard  # a window of a larger buffer, with guards on both sides
        backing[32 + size:] = guard
        return memoryview(backing)[32:32 + size]

    class Proto(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = make()
            self.got = bytearray()
            self.done = anyloop.create_future()

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            self.got += memoryview(self.buf).cast("B")[:nbytes]

        def eof_received(self):
            self.done.set_result(None)

    async def main():
        a, b = socket.socketpair()
        transport, proto = await anyloop.connect_accepted_socket(Proto, a)
        payload = bytes(range(251)) * 4000  # ~1 MB, in many reads of varying size
        b.setblocking(False)
        await anyloop.sock_sendall(b, payload)
        b.shutdown(socket.SHUT_WR)
        await proto.done
        transport.close()
        b.close()
        assert bytes(proto.got) == payload
        if kind == "offset-view":
            assert backing[:32] == guard and backing[32 + size:] == guard

    run(anyloop, main())


def test_closed_transports_are_not_kept_alive(loop):
    """Once closed (connection_lost called), nothing in the loop holds a transport or its
    protocol: a server's connections, a client's, a pipe's and datagram endpoints' (libuv's
    UDP handle and a Unix datagram socket) are all collected."""
    import os
    import weakref

    async def main():
        refs = []
        for _ in range(3):
            server, tr, pr, sp = await tcp_pair(loop)
            refs += [weakref.ref(tr), weakref.ref(pr), weakref.ref(sp.transport), weakref.ref(sp)]
            tr.close()
            await pr.done
            await sp.done
            server.close()
            await server.wait_closed()
            del tr, pr, sp, server
        r, w = os.pipe()
        class PipeProto(asyncio.Protocol):  # asyncio.Protocol has no __weakref__ slot
            pass

        ptr, ppr = await loop.connect_read_pipe(PipeProto, open(r, "rb", 0))
        refs += [weakref.ref(ptr), weakref.ref(ppr)]
        ptr.close()
        for family, addr in ((socket.AF_INET, ("127.0.0.1", 0)), (socket.AF_UNIX, None)):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            if addr:
                sock.bind(addr)
            dtr, dpr = await loop.create_datagram_endpoint(PipeProto, sock=sock)
            refs += [weakref.ref(dtr), weakref.ref(dpr)]
            dtr.close()
            del dtr, dpr, sock
        await asyncio.sleep(0.01)
        del ptr, ppr
        os.close(w)
        return refs

    refs = run(loop, main())
    for _ in range(3):
        gc.collect()
    assert [ref for ref in refs if ref() is not None] == []


def test_buffered_protocol_pausing_in_buffer_updated(anyloop):
    """A BufferedProtocol that pauses reading after every buffer it fills (and resumes
    soon after): what the transport held meanwhile comes later, complete and in order."""
    class Pausing(BufProto):
        def buffer_updated(self, nbytes):
            super().buffer_updated(nbytes)
            self.transport.pause_reading()
            asyncio.get_running_loop().call_soon(self.transport.resume_reading)

    async def main():
        lsock, tr, pr, conn = await raw_connection(anyloop, lambda: Pausing(7))
        payload = bytes(range(256)) * 64
        conn.sendall(payload)
        conn.close()
        assert await pr.done is None
        assert bytes(pr.data) == payload
        lsock.close()
    run(anyloop, main())


class BufRecorder(asyncio.BufferedProtocol):
    """Recorder's callbacks for a BufferedProtocol."""

    def __init__(self):
        self.calls = []
        self.buf = bytearray(65536)
        self.done = asyncio.get_event_loop().create_future()

    def connection_made(self, transport):
        self.calls.append("made")

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        self.calls.append("data")

    def eof_received(self):
        self.calls.append("eof")

    def connection_lost(self, exc):
        self.calls.append("lost")
        self.done.set_result(exc)


# More than both ends' socket buffers take on loopback: the rest of the write waits in the
# transport while the peer, which reads nothing, resets the connection.
QUEUED_WRITE = 32 << 20


def reset(conn):
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()  # RST


@pytest.mark.parametrize("factory", [Recorder, BufRecorder])
def test_peer_reset_with_a_write_queued_is_only_connection_lost(anyloop, factory):
    """asyncio reads the reset before it writes again: connection_lost(ConnectionResetError)
    and no eof_received() first, also when the failed write is what meets the reset."""
    async def main():
        lsock, tr, pr, conn = await raw_connection(anyloop, factory)
        tr.write(b"x" * QUEUED_WRITE)
        assert tr.get_write_buffer_size() > 0
        await asyncio.sleep(0)
        reset(conn)
        assert isinstance(await pr.done, ConnectionResetError)
        assert [c for c in pr.calls if "writing" not in c] == ["made", "lost"]
        lsock.close()
    run(anyloop, main())


@pytest.mark.parametrize("factory", [Recorder, BufRecorder])
def test_peer_eof_then_reset_with_a_write_queued_is_eof_then_broken_pipe(anyloop, factory):
    """A reset that comes after the peer's EOF (FIN): a read finds that EOF first, and the
    write then fails with BrokenPipeError, the error of the reset in that state."""
    async def main():
        lsock, tr, pr, conn = await raw_connection(anyloop, factory)
        tr.write(b"x" * QUEUED_WRITE)
        assert tr.get_write_buffer_size() > 0
        await asyncio.sleep(0)
        conn.shutdown(socket.SHUT_WR)
        reset(conn)
        assert isinstance(await pr.done, BrokenPipeError)
        assert [c for c in pr.calls if "writing" not in c] == ["made", "eof", "lost"]
        lsock.close()
    run(anyloop, main())


def test_streams_read_raises_on_peer_reset_with_a_write_queued(anyloop):
    """The same through asyncio's streams: a pending reader.read() raises
    ConnectionResetError instead of returning b"" (EOF)."""
    async def main():
        lsock = await raw_server(anyloop)
        reader, writer = await asyncio.open_connection("127.0.0.1", lsock.getsockname()[1])
        conn, _ = lsock.accept()
        writer.write(b"x" * QUEUED_WRITE)
        assert writer.transport.get_write_buffer_size() > 0
        read = asyncio.ensure_future(reader.read(100))
        await asyncio.sleep(0)  # the read waits for data
        reset(conn)
        with pytest.raises(ConnectionResetError):
            await read
        writer.close()
        lsock.close()
    run(anyloop, main())


def test_debug_log_of_a_reset_carries_its_traceback(anyloop):
    """In debug mode a transport's OSError (a reset here) is logged with the error itself:
    the logging call is not inside the except that caught it, so exc_info=True would log
    'NoneType: None'."""
    async def main():
        lost = anyloop.create_future()

        class P(asyncio.Protocol):
            def connection_lost(self, exc):
                lost.set_result(exc)

        with socket.create_server(("127.0.0.1", 0)) as srv:
            c = socket.create_connection(srv.getsockname())
            s, _ = srv.accept()
            await anyloop.connect_accepted_socket(P, c)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # an RST
            return await lost

    anyloop.set_debug(True)
    # A handler of the test's own on the "asyncio" logger, whatever earlier tests (in the
    # whole suite) left of its level or of the root's handlers.
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    asyncio_logger = logging.getLogger("asyncio")
    saved = asyncio_logger.level, asyncio_logger.disabled
    asyncio_logger.setLevel(logging.DEBUG)
    asyncio_logger.disabled = False
    asyncio_logger.addHandler(handler)
    try:
        exc = run(anyloop, main())
    finally:
        asyncio_logger.removeHandler(handler)
        asyncio_logger.setLevel(saved[0])
        asyncio_logger.disabled = saved[1]
    assert isinstance(exc, ConnectionResetError)
    logged = [r for r in records if "Fatal read error" in r.getMessage()]
    assert logged and all(r.exc_info and r.exc_info[1] is exc for r in logged), logged


def test_extra_info_socket_leaves_the_fd_non_blocking(anyloop):
    """Asking for the socket of an accepted connection must not make its fd blocking
    (PyPy's socket(fileno=) did: a 4 MiB loop.sendfile then blocked the loop for good)."""
    async def main():
        accepted = anyloop.create_future()

        def on_client(reader, writer):
            accepted.set_result(writer)

        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        _, client = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        writer = await accepted
        sock = writer.get_extra_info("socket")
        blocking = os.get_blocking(sock.fileno())
        for w in (client, writer):
            w.close()
        server.close()
        await server.wait_closed()
        return blocking, sock.gettimeout()

    assert run(anyloop, main()) == (False, 0.0)


_PROTOCOL_ECHO = """
import asyncio, uvcffi
N, SIZE, ROUNDS = 4, 100 * 1024, 300

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

class Client(asyncio.Protocol):
    def __init__(self, done):
        self.done, self.got, self.rounds = done, 0, 0

    def connection_made(self, transport):
        self.transport = transport
        transport.write(b"x" * SIZE)

    def data_received(self, data):
        self.got += len(data)
        if self.got == SIZE:
            self.got = 0
            self.rounds += 1
            if self.rounds == ROUNDS:
                self.transport.close()
                self.done.set_result(None)
            else:
                self.transport.write(b"x" * SIZE)

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    done = [loop.create_future() for _ in range(N)]
    for fut in done:
        await loop.create_connection(lambda fut=fut: Client(fut), "127.0.0.1", port)
    await asyncio.gather(*done)
    server.close()

uvcffi.run(main())
"""


@needs_generational_gc
def test_a_protocols_read_leaves_nothing_alive_once_data_received_returned(tmp_path):
    # On PyPy, the event dispatch kept the last big read of its batch in a local of a
    # frame that a minor collection during the batch had made old: an old object keeps
    # what it points to through the next minor collection, dead or not.  So messages were
    # promoted for the old generation's collections to free (a median of 309 KB survived
    # each minor collection of a 10-connection 100 KiB echo server; 2 KB now).
    assert pypy_minor_survivors(_PROTOCOL_ECHO, tmp_path) < 100 * 1024
