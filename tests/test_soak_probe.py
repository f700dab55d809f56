"""Cases a randomized soak of the transports found (random transport calls made from
inside every protocol callback, many connections at once): each is the smallest scenario
that showed the bug, run on uvcffi."""
import asyncio
import os
import socket

import pytest
from _helpers import run


@pytest.mark.parametrize("kind", ["socket", "pipe"])
@pytest.mark.parametrize("how", ["close", "abort"])
def test_close_in_resume_writing_ends_the_connection_once(loop, kind, how):
    """resume_writing() closes (or aborts) the transport, the buffer just drained: one
    connection_lost(None) and nothing for the exception handler.  The write completion
    that called resume_writing() went on to see an empty buffer on a closing transport
    and scheduled a second _call_connection_lost, which failed on the protocol already
    let go ("Exception in callback ... 'NoneType' object has no attribute
    'connection_lost'").  (asyncio 3.11 logs the same kind of error here.)"""
    errors = []
    loop.set_exception_handler(lambda lp, context: errors.append(context))

    class Writer(asyncio.Protocol):
        def __init__(self):
            self.events = []
            self.resumed = loop.create_future()
            self.lost = loop.create_future()

        def connection_made(self, transport):
            self.transport = transport

        def pause_writing(self):
            self.events.append("pause")

        def resume_writing(self):
            self.events.append("resume")
            getattr(self.transport, how)()
            self.resumed.set_result(None)

        def connection_lost(self, exc):
            self.events.append(("lost", exc))
            self.lost.set_result(None)

    async def main():
        if kind == "pipe":
            rfd, wfd = os.pipe()
            reader = os.fdopen(rfd, "rb", 0)
            tr, proto = await loop.connect_write_pipe(Writer, os.fdopen(wfd, "wb", 0))
            fd = rfd
        else:
            a, reader = socket.socketpair()
            tr, proto = await loop.create_unix_connection(Writer, sock=a)
            fd = reader.fileno()
        os.set_blocking(fd, False)

        def readable():
            fut = loop.create_future()

            def ready():
                loop.remove_reader(fd)
                if not fut.done():
                    fut.set_result(None)
            loop.add_reader(fd, ready)
            return fut

        try:
            tr.write(b"x" * (4 * 1024 * 1024))  # far over the high-water mark
            while not proto.resumed.done():  # read until the buffer drains
                await readable()
                os.read(fd, 1 << 20)
            await proto.lost
            # the second, failing _call_connection_lost would run in the next iterations
            for _ in range(3):
                await asyncio.sleep(0)
        finally:
            reader.close()
        return proto

    proto = run(loop, main())
    assert proto.events == ["pause", "resume", ("lost", None)]
    assert errors == []
