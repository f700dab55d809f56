"""Scenario 5: 5,000 connections open at once, every byte of every echo verified.

An echo server (a protocol writing back what it reads, closing after the peer's EOF) and
5,000 stream clients that all connect first (each waits until every one is connected, so
5,000 connections, 10,000 sockets in this process, are open together), then each sends a
payload of its own (1 byte to 8 KiB, every 50th 64-256 KiB), half-closes, reads the echo
to EOF and compares it byte for byte.  The soft RLIMIT_NOFILE is raised to the hard limit
(a hard limit too low for 10,000 sockets skips the test).  On uvcffi and on asyncio's own
loop, each in a fresh interpreter (see _fault.run_fresh): 5,000 connections' memory stays
out of the test run's own process.
"""
import asyncio
import json
import os
import random
import resource
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from _fault import Watchdog, run_fresh  # noqa: E402
from _helpers import LOOP_FACTORIES, run  # noqa: E402

CLIENTS = 5000
FDS_NEEDED = 2 * CLIENTS + 256  # both ends of every connection, and what else is open


def raise_fd_limit():
    """Raise the soft RLIMIT_NOFILE to the hard limit; False if that is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < FDS_NEEDED:
        return False
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return True


class Echo(asyncio.Protocol):
    made = 0
    lost = []

    def connection_made(self, transport):
        self.transport = transport
        Echo.made += 1

    def connection_lost(self, exc):
        Echo.lost.append(exc)

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        return False  # close once the echo is flushed


def payload_for(i):
    rnd = random.Random(i)
    size = rnd.randint(65536, 262144) if i % 50 == 0 else rnd.randint(1, 8192)
    # The client's number first (a reply that went to the wrong client shows at once),
    # then random bytes: no period, so reordered or repeated chunks show too.
    return (b"%08d" % i + rnd.randbytes(size))[:size]


def measure(kind):
    """Run the scenario on a new ``kind`` loop in this (fresh) process; return the report."""
    assert raise_fd_limit()
    loop = LOOP_FACTORIES[kind]()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx.get("message")))

    async def main():
        async with Watchdog(stall_after=5.0) as wd:
            server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=4096)
            host, port = server.sockets[0].getsockname()[:2]
            connected = 0
            all_connected = loop.create_future()

            async def client(i):
                nonlocal connected
                data = payload_for(i)
                reader, writer = await asyncio.open_connection(host, port)
                try:
                    connected += 1
                    if connected == CLIENTS:
                        all_connected.set_result(None)
                    await all_connected
                    writer.write(data)
                    writer.write_eof()
                    echo = await reader.read()
                finally:
                    writer.close()
                return echo == data, len(data), len(echo)

            results = await asyncio.gather(*[client(i) for i in range(CLIENTS)])
            for _ in range(500):  # the server's side closes after its last write
                if len(Echo.lost) == CLIENTS:
                    break
                await asyncio.sleep(0.01)
            server.close()
            await server.wait_closed()
        return results, wd

    try:
        results, wd = run(loop, main(), timeout=150)
    finally:
        loop.close()
    return {
        "clients": len(results),
        "wrong": [(i, sent, got) for i, (ok, sent, got) in enumerate(results) if not ok][:20],
        "big": sum(1 for _, sent, _ in results if sent > 65536),
        "made": Echo.made,
        "lost": [repr(exc) for exc in Echo.lost if exc is not None][:20],
        "lost_count": len(Echo.lost),
        "errors": errors[:20],
        "stalls": wd.stalls,
    }


@pytest.mark.parametrize("kind", sorted(LOOP_FACTORIES))
def test_5000_concurrent_connections_echo_every_byte(kind):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < FDS_NEEDED:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {FDS_NEEDED} fds needed")
    r = run_fresh(os.path.abspath(__file__), kind)
    assert r["wrong"] == []
    assert r["clients"] == CLIENTS
    assert r["big"] >= CLIENTS // 50
    assert r["made"] == CLIENTS
    assert r["lost_count"] == CLIENTS and r["lost"] == []  # every close clean
    assert r["errors"] == []
    assert r["stalls"] == []


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1])))
