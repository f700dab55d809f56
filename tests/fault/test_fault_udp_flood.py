"""Scenario 4: a UDP flood must not starve the loop's timers.

A datagram endpoint receives for about 2 s everything two other processes can send it (as
fast as they can, datagrams of 0-1400 bytes, each carrying its sequence number and a body
the receiver checks byte for byte), while a ``call_later(0)`` ticker reschedules itself.
Two senders and a deep receive buffer, so that the socket never runs dry while a sender is
descheduled on the 2 cores: the loop always has datagrams waiting.
A loop that keeps reading as long as datagrams keep coming never gets to its timers.  A timer
of delay 0 is due at the next iteration whatever the clock says, so a fair loop runs the
ticker between any two of its batches of reads: the datagrams received between two ticks
are at most one iteration's reads (libuv reads 32 at a time), where a starving loop would
read the whole flood between two.  Counted in datagrams, not in time, so that a loaded
machine, which slows both the loop and its clock's view of the flood, cannot fail it.
The receiver must get data, all of it intact.  On uvcffi and on asyncio's own loop.
"""
import asyncio
import socket
import struct
import sys

from _fault import Watchdog
from _helpers import run

FLOOD_SECONDS = 2.0
SENDERS = 2
RCVBUF = 4 * 1024 * 1024
# Far above one iteration's reads (asyncio reads one datagram per ready event, libuv 32 per
# handle), far below what a loop that starves its timers reads between two ticks (the flood).
MAX_BETWEEN_TICKS = 1000
HEADER = struct.Struct("!QI")  # sequence number, body length
SIZES = (0, 1, 16, 100, 512, 1000, 1400)
PATTERN = bytes(range(256)) * 300  # bodies are slices of it, starting at seq % 251

SENDER = r"""
import socket, struct, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
HEADER = struct.Struct("!QI")
SIZES = %r
PATTERN = bytes(range(256)) * 300
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", port))
seq = sent = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(64):
        size = SIZES[seq %% len(SIZES)]
        start = seq %% 251
        try:
            s.send(HEADER.pack(seq, size) + PATTERN[start:start + size])
            sent += 1
        except OSError:  # ECONNREFUSED from an earlier datagram, ENOBUFS: go on
            pass
        seq += 1
print(sent)
""" % (SIZES,)


def check_datagram(data):
    """True if ``data`` is a datagram the sender made, intact."""
    if len(data) < HEADER.size:
        return False
    seq, size = HEADER.unpack_from(data)
    start = seq % 251
    return size == len(data) - HEADER.size and data[HEADER.size:] == PATTERN[start:start + size]


def test_udp_flood_does_not_starve_timers(anyloop):
    loop = anyloop

    class Receiver(asyncio.DatagramProtocol):
        def __init__(self):
            self.received = 0
            self.bad = 0
            self.first = loop.create_future()
            self.errors = []

        def datagram_received(self, data, addr):
            if check_datagram(data):
                self.received += 1
            else:
                self.bad += 1
            if not self.first.done():
                self.first.set_result(loop.time())

        def error_received(self, exc):
            self.errors.append(exc)

    ticks = {"during": 0, "running": True, "last": 0, "most_between": 0}

    def tick():
        if flooding:
            ticks["during"] += 1
            between = receiver.received + receiver.bad - ticks["last"]
            ticks["most_between"] = max(ticks["most_between"], between)
        ticks["last"] = receiver.received + receiver.bad
        if ticks["running"]:
            loop.call_later(0, tick)

    receiver = None

    flooding = False

    async def main():
        nonlocal flooding, receiver
        async with Watchdog(stall_after=5.0) as wd:
            transport, proto = await loop.create_datagram_endpoint(
                Receiver, local_addr=("127.0.0.1", 0)
            )
            port = transport.get_extra_info("sockname")[1]
            # A deep receive buffer (as deep as net.core.rmem_max allows): it never runs
            # dry while a sender is descheduled, so the loop always has datagrams to read.
            transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            receiver = proto
            loop.call_later(0, tick)
            senders = [
                await asyncio.create_subprocess_exec(
                    sys.executable, "-c", SENDER, str(port), str(FLOOD_SECONDS),
                    stdout=asyncio.subprocess.PIPE,
                )
                for _ in range(SENDERS)
            ]
            await proto.first
            flooding = True
            outs = [await s.stdout.read() for s in senders]
            flooding = False
            for s in senders:
                assert await s.wait() == 0
            ticks["running"] = False
            transport.close()
        return proto, sum(int(out) for out in outs), wd

    proto, sent, wd = run(loop, main(), timeout=60)
    assert sent > 0
    assert proto.received > 0 and proto.bad == 0
    assert proto.errors == []
    assert ticks["during"] > 0
    assert ticks["most_between"] <= MAX_BETWEEN_TICKS, (
        f"{ticks['most_between']} datagrams read between two ticks ({ticks['during']} ticks "
        f"during the flood, {proto.received} of {sent} datagrams received)"
    )
    assert not wd.stalls
