"""Scenario 2: the peer resets the connection (RST) in the middle of a large write.

A server writes 64 MiB to a client that reads a little, sets SO_LINGER(1, 0) and closes:
the kernel answers the rest of the server's data with a RST.  The server side must end
with connection_lost(an exception: ConnectionResetError or BrokenPipeError, as asyncio
gives), nothing reported to the exception handler (asyncio logs these resets at debug
level only), no hang, and the unsent part of the write released: the transport's buffer
size back to 0 and the memory that held the copy returned.  The same with streams, where
the server's ``await writer.drain()`` raises.  On uvcffi and on asyncio's own loop.
"""
import asyncio
import gc
import socket
import struct

from _fault import Watchdog, rss_kib
from _helpers import run

PAYLOAD_SIZE = 64 * 1024 * 1024
# How much the client reads before it resets: a little of the stream, more than one read.
CLIENT_READS = 256 * 1024
RESET_ERRORS = (ConnectionResetError, BrokenPipeError)
# The 64 MiB payload and the transport's copy of its unsent part are freed once the
# connection is lost: the process's RSS must fall back near where it started.  The slack
# is for what the two connections and the loop's own buffers keep (a few MiB at most);
# the copy kept would be up to 64 MiB more.
RSS_SLACK_KIB = 24 * 1024


def payload():
    # Touched pages (not calloc'd zeros), so the payload and any copy of it count in RSS.
    return b"0123456789abcdef" * (PAYLOAD_SIZE // 16)


async def reset_after_reading(loop, address, nbytes):
    """Connect, read ``nbytes``, then close with SO_LINGER(1, 0): the kernel sends RST."""
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, address)
    got = 0
    while got < nbytes:
        data = await loop.sock_recv(sock, 65536)
        assert data, "the server's stream ended before the client reset it"
        got += len(data)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    return got


def record_errors(loop):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    return errors


def test_rst_during_a_large_transport_write(anyloop):
    loop = anyloop
    errors = record_errors(loop)
    gc.collect()
    rss_before = rss_kib()

    class Writer(asyncio.Protocol):
        def __init__(self):
            self.lost = loop.create_future()
            self.buffered_at_loss = None

        def connection_made(self, transport):
            self.transport = transport
            transport.write(payload())  # held by the transport, not by this protocol
            self.rss_writing = rss_kib()

        def connection_lost(self, exc):
            self.buffered_at_loss = self.transport.get_write_buffer_size()
            self.lost.set_result(exc)

    protocols = []

    def factory():
        protocols.append(Writer())
        return protocols[-1]

    async def main():
        async with Watchdog(stall_after=5.0) as wd:
            server = await loop.create_server(factory, "127.0.0.1", 0)
            address = server.sockets[0].getsockname()
            got = await reset_after_reading(loop, address, CLIENT_READS)
            exc = await protocols[0].lost
            server.close()
            await server.wait_closed()
        return got, exc, wd

    got, exc, wd = run(loop, main(), timeout=60)
    assert got >= CLIENT_READS
    assert len(protocols) == 1
    proto = protocols[0]
    assert isinstance(exc, RESET_ERRORS), repr(exc)
    assert proto.transport.is_closing()
    assert proto.transport.get_write_buffer_size() == 0
    assert proto.buffered_at_loss == 0  # released before connection_lost is called
    assert errors == []
    assert not wd.stalls
    # The measurement sees the buffered write (so it would see it kept) ...
    assert proto.rss_writing - rss_before > PAYLOAD_SIZE // 2048
    del proto, protocols[:], exc
    gc.collect()
    # ... and the memory is back once the connection is gone.
    assert rss_kib() - rss_before < RSS_SLACK_KIB


def test_rst_during_a_large_stream_write(anyloop):
    loop = anyloop
    errors = record_errors(loop)
    gc.collect()
    rss_before = rss_kib()
    outcome = {}

    async def handler(reader, writer):
        writer.write(payload())
        outcome["rss_writing"] = rss_kib()
        try:
            await writer.drain()
        except Exception as exc:
            outcome["drain"] = exc
        else:
            outcome["drain"] = None
        outcome["buffered"] = writer.transport.get_write_buffer_size()
        writer.close()
        try:
            await writer.wait_closed()
        except Exception as exc:  # the connection's exception, as asyncio re-raises it
            outcome["wait_closed"] = exc
        outcome["done"] = True

    async def main():
        async with Watchdog(stall_after=5.0) as wd:
            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            address = server.sockets[0].getsockname()
            got = await reset_after_reading(loop, address, CLIENT_READS)
            while "done" not in outcome:
                await asyncio.sleep(0.01)
            server.close()
            await server.wait_closed()
        return got, wd

    got, wd = run(loop, main(), timeout=60)
    assert got >= CLIENT_READS
    assert isinstance(outcome["drain"], RESET_ERRORS), repr(outcome["drain"])
    assert outcome["buffered"] == 0
    assert isinstance(outcome.get("wait_closed"), (type(None),) + RESET_ERRORS)
    assert errors == []
    assert not wd.stalls
    assert outcome["rss_writing"] - rss_before > PAYLOAD_SIZE // 2048
    outcome.clear()
    gc.collect()
    assert rss_kib() - rss_before < RSS_SLACK_KIB
