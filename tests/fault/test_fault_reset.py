"""Scenario 2: the peer resets the connection (RST) in the middle of a large write.

A server writes 64 MiB to a client that reads a little, sets SO_LINGER(1, 0) and closes:
the kernel answers the rest of the server's data with a RST.  The server side must end
with connection_lost(an exception: ConnectionResetError or BrokenPipeError, as asyncio
gives), nothing reported to the exception handler (asyncio logs these resets at debug
level only), no hang, and the unsent part of the write released: the transport's buffer
size back to 0 (already when connection_lost runs) and the memory that held the copy
returned.  The same with streams, where the server's ``await writer.drain()`` raises.
On uvcffi and on asyncio's own loop.

Each scenario runs in a fresh interpreter (this file run as a script): the memory check
compares the process's RSS before, during and after the write, which only means something
in a process whose allocator and garbage collector have no history (after the suite's
heavier tests PyPy's GC keeps hundreds of MiB it reuses, and the payload never shows).
"""
import asyncio
import gc
import json
import os
import socket
import struct
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from _fault import Watchdog, rss_kib, run_fresh  # noqa: E402
from _helpers import LOOP_FACTORIES, run  # noqa: E402

PAYLOAD_SIZE = 64 * 1024 * 1024
# How much the client reads before it resets: a little of the stream, more than one read.
CLIENT_READS = 256 * 1024
RESET_ERRORS = ("ConnectionResetError", "BrokenPipeError")
# The 64 MiB payload and the transport's copy of its unsent part are freed once the
# connection is lost: the process's RSS must fall back near where it started.  The slack
# is for what the two connections and the loop's own buffers keep (a few MiB at most);
# the copy kept would be up to 64 MiB more.
RSS_SLACK_KIB = 24 * 1024


def payload():
    # Touched pages (not calloc'd zeros), so the payload and any copy of it count in RSS.
    return b"0123456789abcdef" * (PAYLOAD_SIZE // 16)


def name(exc):
    return None if exc is None else type(exc).__name__


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


async def transport_write(loop, report):
    class Writer(asyncio.Protocol):
        def __init__(self):
            self.lost = loop.create_future()

        def connection_made(self, transport):
            self.transport = transport
            transport.write(payload())  # held by the transport, not by this protocol
            report["rss_writing"] = rss_kib()

        def connection_lost(self, exc):
            report["buffered_at_loss"] = self.transport.get_write_buffer_size()
            self.lost.set_result(exc)

    protocols = []

    def factory():
        protocols.append(Writer())
        return protocols[-1]

    server = await loop.create_server(factory, "127.0.0.1", 0)
    report["client_read"] = await reset_after_reading(
        loop, server.sockets[0].getsockname(), CLIENT_READS)
    report["lost"] = name(await protocols[0].lost)
    report["connections"] = len(protocols)
    report["closing"] = protocols[0].transport.is_closing()
    report["buffered"] = protocols[0].transport.get_write_buffer_size()
    server.close()
    await server.wait_closed()


async def stream_write(loop, report):
    done = loop.create_future()

    async def handler(reader, writer):
        writer.write(payload())
        report["rss_writing"] = rss_kib()
        try:
            await writer.drain()
            report["drain"] = None
        except Exception as exc:
            report["drain"] = name(exc)
        report["buffered"] = writer.transport.get_write_buffer_size()
        writer.close()
        try:
            await writer.wait_closed()
            report["wait_closed"] = None
        except Exception as exc:  # the connection's exception, as asyncio re-raises it
            report["wait_closed"] = name(exc)
        done.set_result(None)

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    report["client_read"] = await reset_after_reading(
        loop, server.sockets[0].getsockname(), CLIENT_READS)
    await done
    server.close()
    await server.wait_closed()


def measure(kind, api):
    """Run one scenario on a new loop in this (fresh) process; return the report."""
    loop = LOOP_FACTORIES[kind]()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx.get("message")))
    report = {}
    gc.collect()
    report["rss_before"] = rss_kib()

    async def main():
        async with Watchdog(stall_after=5.0) as wd:
            await (transport_write if api == "transport" else stream_write)(loop, report)
        report["stalls"] = wd.stalls

    try:
        run(loop, main(), timeout=60)
    finally:
        loop.close()
    gc.collect()
    report["rss_after"] = rss_kib()
    report["errors"] = errors
    return report


@pytest.mark.parametrize("api", ["transport", "stream"])
@pytest.mark.parametrize("kind", sorted(LOOP_FACTORIES))
def test_rst_during_a_large_write(kind, api):
    r = run_fresh(os.path.abspath(__file__), kind, api, timeout=120)
    assert r["client_read"] >= CLIENT_READS
    if api == "transport":
        assert r["connections"] == 1
        assert r["lost"] in RESET_ERRORS, r
        assert r["closing"]
        assert r["buffered_at_loss"] == 0  # released before connection_lost is called
    else:
        assert r["drain"] in RESET_ERRORS, r
        assert r["wait_closed"] in (None,) + RESET_ERRORS, r
    assert r["buffered"] == 0
    assert r["errors"] == []
    assert r["stalls"] == []
    # The measurement sees the buffered write (so it would see it kept) ...
    assert r["rss_writing"] - r["rss_before"] > PAYLOAD_SIZE // 2048, r
    # ... and the memory is back once the connection is gone.
    assert r["rss_after"] - r["rss_before"] < RSS_SLACK_KIB, r


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], sys.argv[2])))
