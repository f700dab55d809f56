"""One write (or datagram) of more than 4 GiB.

libuv describes memory with uv_buf_t, whose length is an unsigned int: the C core must
never put such a length in one buffer, where it would keep only the length modulo 2**32
(a stream lost everything past 4 GiB, a datagram went out cut short).

The payload is a private anonymous mapping of 4 GiB + 10 bytes in which only the pages of
a few marks are touched: every other page reads as the kernel's one zero page, so the
payload itself costs almost no memory.  The stream transport still copies the part of a
write the socket does not take at once (DESIGN.md, point 4), and the UDP transport copies
a datagram that is not bytes, so each test needs that much memory free, and is skipped,
saying so, on a machine without it.
"""
import asyncio
import errno
import mmap
import socket
import sys
import threading

import pytest
from _helpers import run

BOUNDARY = 1 << 32
SIZE = BOUNDARY + 10
# Bytes written at these offsets: the start, across the 4 GiB boundary, the very end.
MARKS = {0: b"head", BOUNDARY - 3: b"across", SIZE - 4: b"tail"}
# The copy of the payload the transport makes, and room for everything else.
MEMORY_NEEDED = SIZE + (1 << 30)
# A hang guard, not a speed requirement: 4 GiB go through a socket in a few seconds.
WATCHDOG = 100


def available_memory():
    """MemAvailable of /proc/meminfo in bytes (0 if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.fixture
def payload():
    """SIZE bytes, zero but for MARKS, as a memoryview of a private anonymous mapping."""
    if sys.maxsize < SIZE:
        pytest.skip("a 32-bit build cannot map more than 4 GiB")
    if available_memory() < MEMORY_NEEDED:
        pytest.skip(f"needs {MEMORY_NEEDED >> 20} MiB of available memory for the "
                    f"transport's copy of a {SIZE}-byte write (see /proc/meminfo)")
    try:
        m = mmap.mmap(-1, SIZE, flags=mmap.MAP_PRIVATE)
    except (OSError, OverflowError, ValueError) as exc:
        pytest.skip(f"cannot map {SIZE} bytes: {exc}")
    for off, mark in MARKS.items():
        m[off:off + len(mark)] = mark
    view = memoryview(m)
    yield view
    view.release()
    m.close()


def count_and_check(sock, result):
    """Read ``sock`` to EOF: how many bytes came, and what stood at the offsets of MARKS."""
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    total = 0
    seen = {off: b"" for off in MARKS}
    try:
        while True:
            n = sock.recv_into(buf)
            if not n:
                break
            for off, mark in MARKS.items():
                lo, hi = max(off, total), min(off + len(mark), total + n)
                if lo < hi:
                    seen[off] += bytes(view[lo - total:hi - total])
            total += n
    finally:
        result["total"] = total
        result["seen"] = seen


class Lost(asyncio.Protocol):
    def __init__(self):
        self.lost = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_stream_write_over_4_gib_arrives_whole(loop, payload):
    """A single transport.write() of 4 GiB + 10 bytes: the peer receives every byte, in
    order (the marks stand where they were written), and close() waits for all of them."""
    a, b = socket.socketpair()
    result = {}
    reader = threading.Thread(target=count_and_check, args=(b, result), daemon=True)

    async def main():
        tr, pr = await loop.create_unix_connection(Lost, sock=a)
        reader.start()
        tr.write(payload)
        assert 0 < tr.get_write_buffer_size() <= SIZE
        tr.close()  # connection_lost once everything is sent; the peer then reads EOF
        assert await pr.lost is None
        assert tr.get_write_buffer_size() == 0

    try:
        run(loop, main(), timeout=WATCHDOG)
        reader.join(WATCHDOG)
        assert not reader.is_alive()
    finally:
        a.close()
        b.close()
    assert result["total"] == SIZE
    assert result["seen"] == MARKS


class Errors(asyncio.DatagramProtocol):
    def __init__(self):
        self.errors = []

    def error_received(self, exc):
        self.errors.append(exc)


def test_datagram_over_4_gib_is_refused_not_cut(anyloop, payload):
    """No datagram carries 4 GiB: sendto() reports EMSGSIZE to error_received(), as the
    kernel refuses it for asyncio, and the peer receives nothing but the next datagram."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)

    async def main():
        tr, pr = await anyloop.create_datagram_endpoint(
            Errors, remote_addr=receiver.getsockname())
        tr.sendto(payload)
        assert [e.errno for e in pr.errors] == [errno.EMSGSIZE]
        assert all(isinstance(e, OSError) for e in pr.errors)
        tr.sendto(b"next")
        assert await anyloop.sock_recv(receiver, 65536) == b"next"
        tr.close()

    try:
        run(anyloop, main(), timeout=WATCHDOG)
    finally:
        receiver.close()
