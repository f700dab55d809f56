"""loop.sendfile over stream transports: zero-copy path, fallback, errors; uvcffi beside
asyncio's selector loop (the specification)."""
import asyncio
import functools

import pytest
from _helpers import run as _run

run = functools.partial(_run, timeout=20)

DATA = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit


@pytest.fixture
def datafile(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(DATA)
    with open(path, "rb") as f:
        yield f


class Sink(asyncio.Protocol):
    def __init__(self):
        self.data = bytearray()
        self.done = asyncio.get_event_loop().create_future()

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.done.set_result(exc)


async def pair(loop):
    sink = Sink()
    server = await loop.create_server(lambda: sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tr, pr = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    return server, tr, sink


@pytest.mark.parametrize("offset,count", [(0, None), (1000, None), (5, 70000), (0, len(DATA))])
def test_sendfile_with_writes_around(anyloop, datafile, offset, count):
    async def main():
        server, tr, sink = await pair(anyloop)
        tr.write(b"head" * 100000)  # buffered: sendfile must wait for it to go out
        sent = await anyloop.sendfile(tr, datafile, offset, count)
        expected = DATA[offset:offset + count if count else None]
        assert sent == len(expected)
        assert datafile.tell() == offset + sent
        tr.write(b"end")
        tr.close()
        await sink.done
        assert bytes(sink.data) == b"head" * 100000 + expected + b"end"
        server.close()
    run(anyloop, main())


def test_sendfile_fallback_for_file_without_fd(anyloop):
    async def main():
        server, tr, sink = await pair(anyloop)
        import io
        with pytest.raises(asyncio.SendfileNotAvailableError):
            await anyloop.sendfile(tr, io.BytesIO(b"no fd"), fallback=False)
        assert await anyloop.sendfile(tr, io.BytesIO(b"in memory")) == 9
        tr.close()
        await sink.done
        assert bytes(sink.data) == b"in memory"
        server.close()
    run(anyloop, main())


def test_sendfile_refuses_writes_meanwhile_and_bad_args(anyloop, datafile):
    async def main():
        server, tr, sink = await pair(anyloop)
        big = b"b" * (16 << 20)  # still buffered when sendfile starts: it waits for it
        tr.write(big)
        task = asyncio.ensure_future(anyloop.sendfile(tr, datafile))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="sendfile is in progress"):
            tr.write(b"x")
        assert await task == len(DATA)
        tr.write(b"after")
        for bad, exc in (({"offset": -1}, ValueError), ({"count": 0}, ValueError),
                         ({"offset": "1"}, TypeError), ({"count": 1.5}, TypeError)):
            with pytest.raises(exc):
                await anyloop.sendfile(tr, datafile, **bad)
        with open(datafile.name) as text:
            with pytest.raises(ValueError, match="binary mode"):
                await anyloop.sendfile(tr, text)
        tr.close()
        with pytest.raises(RuntimeError, match="Transport is closing"):
            await anyloop.sendfile(tr, datafile)
        await sink.done
        assert bytes(sink.data) == big + DATA + b"after"
        server.close()
    run(anyloop, main())


class _StalledSink(Sink):
    """A peer that reads nothing until told: the sender's socket buffers fill up."""

    def connection_made(self, transport):
        self.transport = transport
        transport.pause_reading()


@pytest.mark.parametrize("how", ["abort", "close"])
def test_closing_the_transport_ends_a_native_sendfile(loop, tmp_path, how):
    # The zero-copy path sends through a dup of the transport's fd.  A close() or abort()
    # meanwhile closed the transport (connection_lost(None) came) but the dup kept the
    # socket open: the transfer went on to the end behind the closed transport, or waited
    # forever for a peer that does not read.  It now ends with asyncio's ConnectionError
    # (asyncio's own loop means its empty waiter to fail so, but hangs; its fallback path,
    # which TLS transports take on both loops, raises ConnectionError).
    path = tmp_path / "big"
    with open(path, "wb") as f:
        f.truncate(64 << 20)  # more than any socket buffer takes: the sender must wait

    async def main():
        sink = _StalledSink()
        server = await loop.create_server(lambda: sink, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, pr = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        with open(path, "rb") as f:
            task = asyncio.ensure_future(loop.sendfile(tr, f))
            await asyncio.sleep(0)  # it sends what the buffers take, then waits
            assert not task.done()
            getattr(tr, how)()
            with pytest.raises(ConnectionError):
                await task
            position = f.tell()
        sink.transport.resume_reading()
        await sink.done  # the peer sees the end of the connection, not the whole file
        assert 0 < len(sink.data) == position < 64 << 20
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_sendfile_cancelled_while_the_writes_drain_gives_the_transport_back(loop, datafile):
    # A zero-copy sendfile first waits for the transport's buffered writes to go out.
    # Cancelled there (wait_for's timeout, say), it left the transport refusing every
    # write ("sendfile is in progress"), every later sendfile ("Empty waiter is already
    # set") and with reading paused, for good.  (asyncio's loop does the same; uvloop,
    # whose sendfile is the read/write fallback, gives the transport back.)
    async def main():
        sink = _StalledSink()
        server = await loop.create_server(lambda: sink, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, pr = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        big = b"b" * (32 << 20)  # more than the socket buffers take: it stays buffered
        tr.write(big)
        task = asyncio.ensure_future(loop.sendfile(tr, datafile))
        await asyncio.sleep(0)  # it pauses reading and waits for the buffer to drain
        assert not task.done()
        assert not tr.is_reading()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert tr.is_reading()
        assert datafile.tell() == 0
        tr.write(b"after")
        sink.transport.resume_reading()
        assert await loop.sendfile(tr, datafile, 0, 1000) == 1000
        tr.close()
        await sink.done
        assert bytes(sink.data) == big + b"after" + DATA[:1000]
        server.close()
        await server.wait_closed()
    run(loop, main())
