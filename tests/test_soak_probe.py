"""Cases a randomized soak of the transports found (random transport calls made from
inside every protocol callback, many connections at once): each is the smallest scenario
that showed the bug, run on uvcffi."""
import asyncio
import os
import random
import socket
import ssl

import pytest
from _helpers import run
from _tls_certs import Certs


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


# ------------------------------------------------------------------ the soak, short

class _Chaos:
    """A protocol that makes a random transport call in each of its callbacks and records
    them; ``check`` raises on an out-of-order callback."""

    def __init__(self, rnd, loop):
        self.rnd = rnd
        self.loop = loop
        self.events = []
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self.transport = None
        self.buf = bytearray(rnd.choice([1, 7, 4096]))

    def act(self):
        rnd, tr = self.rnd, self.transport
        k = rnd.random()
        try:
            if k < 0.3:
                tr.write(os.urandom(rnd.choice([0, 1, 1000, 200000])))
            elif k < 0.33:
                tr.close()
            elif k < 0.35:
                tr.abort()
            elif k < 0.4 and tr.can_write_eof():
                tr.write_eof()
            elif k < 0.5:
                tr.pause_reading()
                self.loop.call_later(rnd.random() * 0.005, tr.resume_reading)
            elif k < 0.55:
                tr.set_write_buffer_limits(high=rnd.choice([0, 10, 100000]))
            elif k < 0.6:
                tr.set_protocol(_switched(self))
        except RuntimeError:
            pass  # a write after write_eof()

    def note(self, what):
        events = self.events
        assert what == "made" or events[:1] == ["made"], events
        assert "lost" not in events, (what, events)
        if what == "data" or what == "eof":
            assert "eof" not in events, (what, events)
        if what == "pause":
            assert events.count("pause") == events.count("resume"), events
        if what == "resume":
            assert events.count("pause") == events.count("resume") + 1, events
        events.append(what)

    def connection_made(self, transport):
        self.transport = transport
        self.note("made")
        self.made.set_result(None)
        self.act()

    def data_received(self, data):
        self.note("data")
        self.act()

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        self.note("data")
        self.act()

    def eof_received(self):
        self.note("eof")
        self.act()
        return self.rnd.random() < 0.5

    def pause_writing(self):
        self.note("pause")
        self.act()

    def resume_writing(self):
        self.note("resume")
        self.act()

    def connection_lost(self, exc):
        self.note("lost")
        self.lost.set_result(exc)


class _ChaosPlain(_Chaos, asyncio.Protocol):
    pass


class _ChaosBuffered(_Chaos, asyncio.BufferedProtocol):
    pass


def _switched(proto):
    cls = _ChaosPlain if isinstance(proto, asyncio.BufferedProtocol) else _ChaosBuffered
    new = cls.__new__(cls)
    new.__dict__ = proto.__dict__  # one state, another kind of protocol
    return new


def _chaos(rnd, loop):
    return (_ChaosPlain if rnd.random() < 0.5 else _ChaosBuffered)(rnd, loop)


@pytest.mark.parametrize("seed", [1, 14])
def test_random_calls_in_callbacks(loop, tmp_path, seed):
    """Many TCP and Unix connections, plain and TLS, whose protocols (both ends) make a
    random transport call in every callback (write, close, abort, write_eof, pause and
    resume reading, new water marks, set_protocol() to the other kind of protocol):
    callbacks stay in order (connection_made first, no data after eof_received,
    pause/resume_writing alternating, connection_lost once and last), every
    connection ends by itself, never by the TLS shutdown timeout, and nothing reaches
    the exception handler.  Seed 1 met the TLS close that waited out the shutdown
    timeout (test_tls_behaviour's test_close_after_resume_reading_with_records_held),
    seed 14 the second connection_lost scheduled by a close() in resume_writing()
    (test_close_in_resume_writing_ends_the_connection_once above)."""

    certs = Certs(str(tmp_path))
    errors = []
    loop.set_exception_handler(lambda lp, context: errors.append(context))
    shutdown_timeout = 10.0

    async def one(rnd, i, kind, tls):
        sctx = certs.server() if tls else None
        cctx = certs.client() if tls else None
        extra = {"ssl_shutdown_timeout": shutdown_timeout} if tls else {}
        hostname = "localhost" if tls else None
        servers = []

        def server_protocol():
            proto = _chaos(rnd, loop)
            servers.append(proto)
            return proto

        if kind == "unix":
            path = str(tmp_path / f"s{i}")
            srv = await loop.create_unix_server(server_protocol, path, ssl=sctx, **extra)
            connect = loop.create_unix_connection(lambda: _chaos(rnd, loop), path, ssl=cctx,
                                                  server_hostname=hostname, **extra)
        else:
            srv = await loop.create_server(server_protocol, "127.0.0.1", 0, ssl=sctx,
                                           **extra)
            connect = loop.create_connection(lambda: _chaos(rnd, loop), "127.0.0.1",
                                             srv.sockets[0].getsockname()[1], ssl=cctx,
                                             server_hostname=hostname, **extra)
        try:
            tr, proto = await connect
        except (ConnectionError, ssl.SSLError):
            srv.close()  # the server's protocol closed during the handshake
            return []
        for _ in range(rnd.randint(0, 20)):
            if proto.lost.done():
                break
            proto.act()
            await asyncio.sleep(0)
        tr.close()
        lost = [await proto.lost]
        srv.close()
        await srv.wait_closed()
        for server_proto in servers:
            if tls:
                # (a connection whose handshake fails never reaches the protocol)
                await asyncio.wait({server_proto.made}, timeout=1)
            else:
                await server_proto.made
            if server_proto.transport is None:
                continue
            server_proto.transport.close()  # (its eof_received() may have kept it open)
            lost.append(await server_proto.lost)
        return lost

    async def main():
        rnd = random.Random(seed)
        jobs = []
        for i in range(40):
            kind = rnd.choice(["tcp", "unix"])
            jobs.append(one(random.Random(rnd.random()), i, kind, rnd.random() < 0.6))
        return await asyncio.wait_for(asyncio.gather(*jobs), shutdown_timeout * 2)

    results = run(loop, main(), timeout=shutdown_timeout * 3)
    for lost in results:
        for exc in lost:
            assert not isinstance(exc, asyncio.TimeoutError), lost
    assert errors == []
