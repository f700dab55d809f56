"""Every protocol callback runs in the context its transport was created in (asyncio's
rule), never in the context of whoever called write(), close(), resume_reading() or
sendto(): a context variable set by that caller must not leak into the protocol, and what
connection_made() sets is seen by the callbacks after it.

Streams: TCP and Unix, plain and TLS, Protocol and BufferedProtocol, both ends uvcffi:
connection_made, data_received / get_buffer / buffer_updated, pause_writing,
resume_writing, eof_received, connection_lost.  Datagrams: datagram_received,
error_received, pause_writing, resume_writing, connection_lost.  Pipes and subprocesses:
data_received, pipe_data_received, pipe_connection_lost, process_exited,
connection_lost."""
import asyncio
import contextvars
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile

import pytest
from _helpers import run

TIMEOUT = 20
who = contextvars.ContextVar("who", default="nobody")        # set by each caller
made = contextvars.ContextVar("made", default="not set")     # set in connection_made


def _make_certs(directory):
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", key, "-out", cert, "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cert)
    return server, client


@pytest.fixture(scope="module")
def tls_contexts():
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line makes the test certificates")
    with tempfile.TemporaryDirectory() as d:
        yield _make_certs(d)


class Seen:
    """What each callback saw: (callback, who, made)."""

    def __init__(self):
        self.calls = []

    def note(self, name):
        self.calls.append((name, who.get(), made.get()))

    def names(self):
        return {c[0] for c in self.calls}

    def wrong(self, creator):
        """The calls that ran anywhere but in the creator's context (after
        connection_made: with what it set)."""
        bad = []
        for name, w, m in self.calls:
            if w != creator or (name != "connection_made" and m != "yes"):
                bad.append((name, w, m))
        return bad


def stream_protocol(buffered, loop, seen):
    """A protocol that records the context of each callback."""

    class Base:
        def __init__(self):
            self.transport = None
            self.received = 0
            self.got_data = asyncio.Event()
            self.paused = loop.create_future()
            self.resumed = loop.create_future()
            self.eof = loop.create_future()
            self.lost = loop.create_future()

        def connection_made(self, transport):
            seen.note("connection_made")
            made.set("yes")
            self.transport = transport

        def pause_writing(self):
            seen.note("pause_writing")
            if not self.paused.done():
                self.paused.set_result(None)

        def resume_writing(self):
            seen.note("resume_writing")
            if not self.resumed.done():
                self.resumed.set_result(None)

        def eof_received(self):
            seen.note("eof_received")
            self.eof.set_result(None)

        def connection_lost(self, exc):
            seen.note("connection_lost")
            self.lost.set_result(exc)

    if buffered:
        class Proto(Base, asyncio.BufferedProtocol):
            buf = bytearray(65536)

            def get_buffer(self, sizehint):
                seen.note("get_buffer")
                return self.buf

            def buffer_updated(self, nbytes):
                seen.note("buffer_updated")
                self.received += nbytes
                self.got_data.set()
    else:
        class Proto(Base, asyncio.Protocol):
            def data_received(self, data):
                seen.note("data_received")
                self.received += len(data)
                self.got_data.set()
    return Proto()


async def in_context(name, fn, *args):
    """Run ``fn(*args)`` from a task whose context variable says ``name``."""
    async def caller():
        who.set(name)
        return fn(*args)
    return await asyncio.ensure_future(caller())


@pytest.mark.parametrize("buffered", [False, True], ids=["protocol", "buffered"])
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_stream_callbacks_in_creators_context(loop, tmp_path, tls_contexts, family, tls,
                                              buffered):
    server_ctx, client_ctx = tls_contexts if tls else (None, None)
    size = 8 * 1024 * 1024
    server_seen, client_seen = Seen(), Seen()

    async def main():
        servers = []

        def factory():
            servers.append(stream_protocol(buffered, loop, server_seen))
            return servers[-1]

        async def start_server():
            who.set("server creator")
            if family == "tcp":
                return await loop.create_server(factory, "127.0.0.1", 0, ssl=server_ctx)
            return await loop.create_unix_server(factory, str(tmp_path / "s"), ssl=server_ctx)

        async def connect():
            who.set("client creator")
            proto = stream_protocol(buffered, loop, client_seen)
            kw = {"ssl": client_ctx, "server_hostname": "localhost"} if tls else {}
            if family == "tcp":
                port = server.sockets[0].getsockname()[1]
                await loop.create_connection(lambda: proto, "127.0.0.1", port, **kw)
            else:
                await loop.create_unix_connection(lambda: proto, str(tmp_path / "s"), **kw)
            return proto

        server = await asyncio.ensure_future(start_server())
        client = await asyncio.ensure_future(connect())
        while not servers or servers[0].transport is None:
            await asyncio.sleep(0.005)
        srv = servers[0]
        await in_context("pauser", srv.transport.pause_reading)

        # The client's writes back up: pause_writing() inside the writer's write()
        chunk = b"x" * (256 * 1024)
        for _ in range(size // len(chunk)):
            await in_context("writer", client.transport.write, chunk)
            if client.paused.done():
                break
        await asyncio.wait_for(client.paused, TIMEOUT)
        # set_write_buffer_limits() may pause too: from yet another context
        await in_context("limiter", client.transport.set_write_buffer_limits, 1)
        await in_context("resumer", srv.transport.resume_reading)
        await asyncio.wait_for(client.resumed, TIMEOUT)

        # The server answers: data for the client
        await in_context("answerer", srv.transport.write, b"answer")
        await asyncio.wait_for(client.got_data.wait(), TIMEOUT)

        # The end: the client closes (TLS: close_notify, both see eof_received) or
        # half-closes (plain: the server gets eof_received and closes)
        if tls:
            await in_context("closer", client.transport.close)
        else:
            await in_context("closer", client.transport.write_eof)
        await asyncio.wait_for(srv.eof, TIMEOUT)
        if not tls:
            await in_context("closer", srv.transport.close)
        await asyncio.wait_for(asyncio.gather(srv.lost, client.lost), TIMEOUT)
        server.close()
        await server.wait_closed()

    run(loop, main(), timeout=60)
    expected = {"connection_made", "pause_writing", "resume_writing", "connection_lost",
                "eof_received"}
    expected |= {"get_buffer", "buffer_updated"} if buffered else {"data_received"}
    assert expected <= client_seen.names(), client_seen.names()
    assert (expected - {"pause_writing", "resume_writing"}) <= server_seen.names()
    assert client_seen.wrong("client creator") == []
    assert server_seen.wrong("server creator") == []


# ---------------------------------------------------------------------------- datagrams

class DatagramRecorder(asyncio.DatagramProtocol):
    def __init__(self, loop, seen):
        self.seen = seen
        self.transport = None
        self.got = asyncio.Event()
        self.error = loop.create_future()
        self.paused = loop.create_future()
        self.resumed = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.seen.note("connection_made")
        made.set("yes")
        self.transport = transport

    def datagram_received(self, data, addr):
        self.seen.note("datagram_received")
        self.got.set()
        if data == b"answer with an error" and addr:
            # sendto() from inside a callback (already in the transport's context): its
            # error_received() must still come, in that context, not as an exception
            self.transport.sendto(b"x" * 70000, addr)

    def error_received(self, exc):
        self.seen.note("error_received")
        if not self.error.done():
            self.error.set_result(exc)

    def pause_writing(self):
        self.seen.note("pause_writing")
        if not self.paused.done():
            self.paused.set_result(None)

    def resume_writing(self):
        self.seen.note("resume_writing")
        if not self.resumed.done():
            self.resumed.set_result(None)

    def connection_lost(self, exc):
        self.seen.note("connection_lost")
        self.lost.set_result(exc)


def test_udp_callbacks_in_creators_context(loop):
    seen = Seen()
    errors = []
    loop.set_exception_handler(lambda loop, context: errors.append(context))

    async def main():
        async def create():
            who.set("creator")
            return await loop.create_datagram_endpoint(
                lambda: DatagramRecorder(loop, seen), local_addr=("127.0.0.1", 0))

        tr, proto = await asyncio.ensure_future(create())
        addr = tr.get_extra_info("sockname")
        await in_context("sender", tr.sendto, b"to myself", addr)
        await asyncio.wait_for(proto.got.wait(), TIMEOUT)
        # A datagram too big for UDP: sendto()'s own error, reported to error_received()
        await in_context("sender", tr.sendto, b"x" * 70000, addr)
        await asyncio.wait_for(proto.error, TIMEOUT)
        # The same from inside datagram_received()
        proto.error = loop.create_future()
        await in_context("sender", tr.sendto, b"answer with an error", addr)
        await asyncio.wait_for(proto.error, TIMEOUT)
        await in_context("closer", tr.close)
        await asyncio.wait_for(proto.lost, TIMEOUT)

    run(loop, main())
    assert {"connection_made", "datagram_received", "error_received",
            "connection_lost"} <= seen.names()
    assert [c[0] for c in seen.calls].count("error_received") == 2
    assert seen.wrong("creator") == []
    assert errors == []


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="AF_UNIX datagram sockets")
def test_unix_datagram_callbacks_in_creators_context(loop):
    seen = Seen()

    async def main():
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        b.setblocking(False)

        async def create():
            who.set("creator")
            return await loop.create_datagram_endpoint(
                lambda: DatagramRecorder(loop, seen), sock=a)

        tr, proto = await asyncio.ensure_future(create())
        b.send(b"hello")
        await asyncio.wait_for(proto.got.wait(), TIMEOUT)
        # b never reads: the socket buffer fills, the transport buffers, and
        # pause_writing() comes inside the sender's sendto()
        tr.set_write_buffer_limits(high=4096)
        for _ in range(10000):
            await in_context("sender", tr.sendto, b"y" * 1024)
            if proto.paused.done():
                break
        await asyncio.wait_for(proto.paused, TIMEOUT)
        while True:  # the peer drains: resume_writing() from the loop
            try:
                b.recv(65536)
            except BlockingIOError:
                if proto.resumed.done():
                    break
                await asyncio.sleep(0.005)
        await in_context("closer", tr.close)
        await asyncio.wait_for(proto.lost, TIMEOUT)
        b.close()

    run(loop, main())
    assert {"connection_made", "datagram_received", "pause_writing", "resume_writing",
            "connection_lost"} <= seen.names()
    assert seen.wrong("creator") == []


# ---------------------------------------------------------------------------- pipes

def test_read_pipe_callbacks_in_creators_context(loop):
    seen = Seen()

    async def main():
        rfd, wfd = os.pipe()
        proto = stream_protocol(False, loop, seen)

        async def create():
            who.set("creator")
            return await loop.connect_read_pipe(lambda: proto, os.fdopen(rfd, "rb", 0))

        tr, _ = await asyncio.ensure_future(create())
        os.write(wfd, b"through the pipe")
        await asyncio.wait_for(proto.got_data.wait(), TIMEOUT)
        await in_context("pauser", tr.pause_reading)
        os.write(wfd, b"held")
        await in_context("resumer", tr.resume_reading)
        os.close(wfd)
        await asyncio.wait_for(proto.lost, TIMEOUT)

    run(loop, main())
    assert {"connection_made", "data_received", "eof_received",
            "connection_lost"} <= seen.names()
    assert seen.wrong("creator") == []


def test_write_pipe_callbacks_in_creators_context(loop):
    seen = Seen()

    async def main():
        rfd, wfd = os.pipe()
        proto = stream_protocol(False, loop, seen)

        async def create():
            who.set("creator")
            return await loop.connect_write_pipe(lambda: proto, os.fdopen(wfd, "wb", 0))

        tr, _ = await asyncio.ensure_future(create())
        for _ in range(1000):
            await in_context("writer", tr.write, b"z" * 65536)
            if proto.paused.done():
                break
        await asyncio.wait_for(proto.paused, TIMEOUT)
        reader = os.fdopen(rfd, "rb", 0)
        while not proto.resumed.done():
            await loop.run_in_executor(None, reader.read, 1 << 20)
        await in_context("closer", tr.close)
        reader.close()
        await asyncio.wait_for(proto.lost, TIMEOUT)

    run(loop, main())
    assert {"connection_made", "pause_writing", "resume_writing",
            "connection_lost"} <= seen.names()
    assert seen.wrong("creator") == []


# ---------------------------------------------------------------------------- subprocess

def test_subprocess_callbacks_in_creators_context(loop):
    seen = Seen()

    class Proto(asyncio.SubprocessProtocol):
        def __init__(self):
            self.exited = loop.create_future()
            self.lost = loop.create_future()

        def connection_made(self, transport):
            seen.note("connection_made")
            made.set("yes")

        def pipe_data_received(self, fd, data):
            seen.note("pipe_data_received")

        def pipe_connection_lost(self, fd, exc):
            seen.note("pipe_connection_lost")

        def process_exited(self):
            seen.note("process_exited")
            self.exited.set_result(None)

        def connection_lost(self, exc):
            seen.note("connection_lost")
            self.lost.set_result(exc)

    async def main():
        async def create():
            who.set("creator")
            return await loop.subprocess_exec(
                Proto, sys.executable, "-c",
                "import sys; sys.stdout.write(sys.stdin.read()); sys.stderr.write('e')",
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        tr, proto = await asyncio.ensure_future(create())
        stdin = tr.get_pipe_transport(0)
        await in_context("writer", stdin.write, b"echo me")
        await in_context("closer", stdin.close)
        await asyncio.wait_for(proto.exited, TIMEOUT)
        await asyncio.wait_for(proto.lost, TIMEOUT)
        await in_context("closer", tr.close)

    run(loop, main())
    assert {"connection_made", "pipe_data_received", "pipe_connection_lost",
            "process_exited", "connection_lost"} <= seen.names()
    assert seen.wrong("creator") == []


def test_subprocess_stdin_flow_control_in_creators_context(loop):
    """pause_writing()/resume_writing() for a child's stdin reach the subprocess protocol
    in the subprocess transport's context, not in the writer's."""
    seen = Seen()
    child = (
        "import signal, sys\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])\n"
        "sys.stdout.write('ready'); sys.stdout.flush()\n"
        "signal.sigwait([signal.SIGUSR1])\n"  # stdin is not read before this
        "sys.stdout.write(str(len(sys.stdin.buffer.read())))\n"
    )

    class Proto(asyncio.SubprocessProtocol):
        def __init__(self):
            self.ready = loop.create_future()
            self.paused = loop.create_future()
            self.resumed = loop.create_future()
            self.out = b""
            self.exited = loop.create_future()

        def connection_made(self, transport):
            seen.note("connection_made")
            made.set("yes")

        def pipe_data_received(self, fd, data):
            seen.note("pipe_data_received")
            self.out += data
            if self.out == b"ready" and not self.ready.done():
                self.ready.set_result(None)

        def pause_writing(self):
            seen.note("pause_writing")
            if not self.paused.done():
                self.paused.set_result(None)

        def resume_writing(self):
            seen.note("resume_writing")
            if not self.resumed.done():
                self.resumed.set_result(None)

        def process_exited(self):
            seen.note("process_exited")
            self.exited.set_result(None)

    async def main():
        async def create():
            who.set("creator")
            return await loop.subprocess_exec(Proto, sys.executable, "-c", child,
                                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)

        tr, proto = await asyncio.ensure_future(create())
        await asyncio.wait_for(proto.ready, TIMEOUT)
        stdin = tr.get_pipe_transport(0)
        sent = 0
        for _ in range(1000):
            await in_context("writer", stdin.write, b"s" * 65536)
            sent += 65536
            if proto.paused.done():
                break
        await asyncio.wait_for(proto.paused, TIMEOUT)
        tr.send_signal(__import__("signal").SIGUSR1)
        await asyncio.wait_for(proto.resumed, TIMEOUT)
        await in_context("closer", stdin.close)
        await asyncio.wait_for(proto.exited, TIMEOUT)
        tr.close()
        return sent, proto

    sent, proto = run(loop, main())
    assert proto.out == b"ready" + str(sent).encode()
    assert {"pause_writing", "resume_writing"} <= seen.names()
    assert seen.wrong("creator") == []
