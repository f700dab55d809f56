"""TLS on uvcffi beside asyncio's selector loop (the specification): ssl= on the connection
and server methods, loop.start_tls, asyncio streams over TLS, flow control through the TLS
layer, writes of memoryviews of any shape, clean close_notify shutdown, handshake failures
and timeouts (no fd left behind), peers that vanish mid-record, and bad arguments.

Certificates are made at test time with the openssl command line (PyPy has no CPython
test package to borrow them from)."""
import array
import asyncio
import gc
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading

import pytest
from _helpers import run, stream_echo

TIMEOUT = 10
PY311 = sys.version_info >= (3, 11)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="the openssl command line makes the test certificates")


# ---------------------------------------------------------------------------- fixtures

def _make_cert(directory, name, cn="localhost"):
    cert = os.path.join(directory, name + ".pem")
    key = os.path.join(directory, name + ".key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", key, "-out", cert, "-subj", f"/CN={cn}",
         "-addext", f"subjectAltName=DNS:{cn},IP:127.0.0.1"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    return cert, key


class Certs:
    def __init__(self, directory):
        self.cert, self.key = _make_cert(directory, "server")
        self.other_cert, self.other_key = _make_cert(directory, "other")

    def server(self, cert=None, key=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert or self.cert, key or self.key)
        return ctx

    def client(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.cert)
        return ctx


@pytest.fixture(scope="module")
def certs():
    with tempfile.TemporaryDirectory() as d:
        yield Certs(d)


def open_fds():
    """The process's open socket fds.  (Only sockets: libuv opens a reserve fd on /dev/null
    with a loop's first stream, once per loop, for its EMFILE handling.)"""
    gc.collect()
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                fds.add(fd)
        except OSError:
            pass  # the fd of the listdir itself, gone by now
    return fds


async def settle(n=5):
    # Closing a transport frees its fd a few loop iterations later (after connection_lost).
    for _ in range(n):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)


class Recorder(asyncio.Protocol):
    """Records protocol callbacks in order."""

    def __init__(self, loop):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.exc = "not lost"
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.exc = exc
        if not self.lost.done():
            self.lost.set_result(exc)


async def echo_handler(reader, writer):
    await stream_echo(reader, writer, tolerate=(ConnectionError, ssl.SSLError))


def tls_peer_thread(target, *args):
    th = threading.Thread(target=target, args=args, daemon=True)
    th.start()
    return th


def _blocking_handshake(conn, obj, incoming, outgoing):
    """Handshake of an ssl.SSLObject over a blocking socket (a raw peer whose records the
    test controls)."""
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            out = outgoing.read()
            if out:
                conn.sendall(out)
            data = conn.recv(65536)
            if not data:
                raise ConnectionError("peer closed during the handshake")
            incoming.write(data)
    out = outgoing.read()
    if out:
        conn.sendall(out)


# ---------------------------------------------------------------------------- ssl=

def test_streams_echo_and_extra_info(anyloop, certs):
    """open_connection/start_server over TLS: a 4 MiB echo (flow control through the TLS
    layer both ways) and every TLS extra-info name through the app transport."""
    payload = os.urandom(4 * 1024 * 1024)

    async def main():
        server = await asyncio.start_server(echo_handler, "127.0.0.1", 0, ssl=certs.server())
        port = server.sockets[0].getsockname()[1]
        cctx = certs.client()
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=cctx,
                                                       server_hostname="localhost")
        tr = writer.transport
        assert isinstance(tr, asyncio.Transport)
        assert isinstance(tr.get_extra_info("ssl_object"), ssl.SSLObject)
        assert tr.get_extra_info("sslcontext") is cctx
        assert tr.get_extra_info("peercert")["subject"] == ((("commonName", "localhost"),),)
        cipher = tr.get_extra_info("cipher")
        assert isinstance(cipher, tuple) and len(cipher) == 3
        assert tr.get_extra_info("compression") is None  # OpenSSL builds disable it
        assert tr.get_extra_info("peername") == ("127.0.0.1", port)
        assert tr.get_extra_info("socket").family == socket.AF_INET
        assert tr.get_extra_info("no such name", "dflt") == "dflt"
        assert not tr.can_write_eof()

        async def send():
            writer.write(payload)
            await writer.drain()

        sender = asyncio.ensure_future(send())
        got = await reader.readexactly(len(payload))
        await sender
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return got

    assert run(anyloop, main()) == payload


def test_tls_over_unix_socket(anyloop, certs, tmp_path):
    path = str(tmp_path / "tls.sock")

    async def main():
        server = await asyncio.start_unix_server(echo_handler, path, ssl=certs.server())
        reader, writer = await asyncio.open_unix_connection(path, ssl=certs.client(),
                                                            server_hostname="localhost")
        writer.write(b"over unix")
        got = await reader.readexactly(9)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return got

    assert run(anyloop, main()) == b"over unix"


def test_protocol_callback_order(anyloop, certs):
    """Client and server protocols see connection_made, data, then (server closes) eof and
    connection_lost(None), in asyncio's order."""
    async def main():
        loop = asyncio.get_running_loop()
        servers = []

        def factory():
            servers.append(Recorder(loop))
            return servers[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=certs.server())
        port = server.sockets[0].getsockname()[1]
        tr, client = await loop.create_connection(lambda: Recorder(loop), "127.0.0.1", port,
                                                  ssl=certs.client(),
                                                  server_hostname="localhost")
        assert client.events == ["made"]
        tr.write(b"hello")
        while len(servers) < 1 or bytes(servers[0].data) != b"hello":
            await asyncio.sleep(0.01)
        servers[0].transport.write(b"world")
        servers[0].transport.close()
        exc = await client.lost
        server.close()
        return client, servers[0], exc

    client, srv, exc = run(anyloop, main())
    assert exc is None
    assert bytes(client.data) == b"world"
    if PY311 or anyloop.kind == "uvcffi":
        assert client.events == ["made", "data", "eof", "lost"]
    else:  # Python 3.9's sslproto: no eof_received for the peer's close_notify
        assert client.events == ["made", "data", "lost"]
    assert srv.events[:2] == ["made", "data"]


def test_clean_close_notify_shutdown(anyloop, certs):
    """Closing the TLS transport sends close_notify before the TCP close: a strict peer
    (suppress_ragged_eofs=False) sees a clean EOF, not "EOF in violation of protocol"."""
    result = {}

    def peer(lsock):
        conn, _ = lsock.accept()
        conn.settimeout(TIMEOUT)
        with certs.server().wrap_socket(conn, server_side=True,
                                        suppress_ragged_eofs=False) as tls:
            try:
                data = b""
                while True:
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                result["data"] = data
            except Exception as exc:
                result["error"] = exc

    async def main():
        loop = asyncio.get_running_loop()
        lsock = socket.create_server(("127.0.0.1", 0))
        th = tls_peer_thread(peer, lsock)
        tr, proto = await loop.create_connection(
            lambda: Recorder(loop), *lsock.getsockname(), ssl=certs.client(),
            server_hostname="localhost")
        tr.write(b"last words")
        tr.close()
        assert tr.is_closing()
        await loop.run_in_executor(None, th.join, TIMEOUT)
        lsock.close()
        tr.abort()  # Python 3.11's sslproto waits for the peer's close_notify: stop now
        await settle()

    run(anyloop, main())
    assert result == {"data": b"last words"}


def test_connect_accepted_socket_tls(anyloop, certs):
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        server_task = asyncio.ensure_future(loop.connect_accepted_socket(
            lambda: Recorder(loop), a, ssl=certs.server()))
        tr, proto = await loop.create_connection(lambda: Recorder(loop), sock=b,
                                                 ssl=certs.client(),
                                                 server_hostname="localhost")
        str_, sproto = await server_task
        tr.write(b"x" * 1000)
        while len(sproto.data) < 1000:
            await asyncio.sleep(0.01)
        assert sproto.transport.get_extra_info("ssl_object").server_side
        tr.close()
        str_.close()
        await settle()

    run(anyloop, main())


# ---------------------------------------------------------------------------- flow control

def test_flow_control_through_tls(anyloop, certs):
    """The app transport pauses the protocol when the peer stops reading, resumes it once
    the peer drains; pause_reading() on the app transport stops data_received."""
    async def main():
        loop = asyncio.get_running_loop()
        servers = []

        class Writer(Recorder):
            paused = 0
            resumed = 0

            def pause_writing(self):
                self.paused += 1
                self.events.append("pause")

            def resume_writing(self):
                self.resumed += 1
                self.events.append("resume")

        def factory():
            servers.append(Recorder(loop))
            return servers[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=certs.server())
        port = server.sockets[0].getsockname()[1]
        tr, client = await loop.create_connection(lambda: Writer(loop), "127.0.0.1", port,
                                                  ssl=certs.client(),
                                                  server_hostname="localhost")
        while not servers or servers[0].transport is None:
            await asyncio.sleep(0.01)
        srv = servers[0]
        srv.transport.pause_reading()
        assert not srv.transport.is_reading()
        chunk = b"z" * 65536
        sent = 0
        for _ in range(400):  # the kernel buffers fill long before 25 MiB
            tr.write(chunk)
            sent += len(chunk)
            if client.paused:
                break
            await asyncio.sleep(0)
        assert client.paused == 1
        assert tr.get_write_buffer_size() > 0
        await asyncio.sleep(0.1)
        received_while_paused = len(srv.data)
        await asyncio.sleep(0.1)
        assert len(srv.data) == received_while_paused  # nothing delivered while paused
        srv.transport.resume_reading()
        while len(srv.data) < sent:
            await asyncio.sleep(0.01)
        assert client.resumed == 1
        assert client.events[-2:] == ["pause", "resume"]
        assert tr.get_write_buffer_size() == 0  # all delivered: nothing counted twice
        tr.close()
        srv.transport.close()
        server.close()
        await settle()
        return sent, len(srv.data)

    sent, got = run(anyloop, main())
    assert sent == got


# ---------------------------------------------------------------------------- writing

# asyncio's sslproto hands views to ssl.SSLObject.write(), which differs on PyPy: there
# asyncio is not the specification (CPython's asyncio is).
PYPY_SSL_WRITES_ITEMS = ("PyPy's ssl.SSLObject.write() sends len() bytes of a view (its "
                         "items or rows), not all of its bytes")
PYPY_SSL_WRITES_STRIDED = ("PyPy's ssl.SSLObject.write() takes a view that is not "
                           "C-contiguous (CPython's raises BufferError)")


async def _tls_sink(loop, certs):
    """A TLS server that collects what one client sends until EOF: (server, port, future
    of the bytes)."""
    received = loop.create_future()

    async def handler(reader, writer):
        try:
            received.set_result(await reader.read())
        except (ConnectionError, ssl.SSLError) as exc:  # a client that failed
            received.set_result(exc)
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=certs.server())
    return server, server.sockets[0].getsockname()[1], received


@pytest.mark.parametrize("shape", ["uint32", "uint32-2d", "bytes-2d"])
def test_write_memoryview_counts_bytes(anyloop, certs, shape):
    """write() of a C-contiguous view whose items are not single bytes, or that has two
    dimensions, sends all of its bytes, in order.  400 KB: more than one 256 KiB chunk of
    uvcffi's PyPy path, which counted bytes but sliced items (the peer got corrupted
    data here; from about 800 KB the process crashed)."""
    if anyloop.kind == "asyncio" and sys.implementation.name == "pypy":
        pytest.skip(PYPY_SSL_WRITES_ITEMS)
    ints = array.array("I", range(100_000))  # 400,000 bytes
    if shape == "uint32":
        view = memoryview(ints)
    elif shape == "uint32-2d":
        view = memoryview(ints).cast("B").cast("I", (100, 1000))
    else:
        view = memoryview(ints).cast("B").cast("B", (400, 1000))
    expected = view.tobytes()
    assert len(expected) == 400_000

    async def main():
        loop = asyncio.get_running_loop()
        server, port, received = await _tls_sink(loop, certs)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=certs.client(),
                                                       server_hostname="localhost")
        writer.write(view)
        writer.close()
        await writer.wait_closed()
        got = await received
        server.close()
        await server.wait_closed()
        return got

    got = run(anyloop, main())
    assert len(got) == len(expected)
    assert got == expected


def test_write_non_contiguous_memoryview_fails_the_connection(anyloop, certs):
    """A view that is not C-contiguous (every other byte): asyncio hands it to
    SSLObject.write(), whose BufferError fails the connection (connection_lost gets it,
    the exception handler hears of it; write() itself returns).  uvcffi's PyPy path sent
    a copy of it instead, and the wrong bytes for a two-dimensional one."""
    if anyloop.kind == "asyncio" and sys.implementation.name == "pypy":
        pytest.skip(PYPY_SSL_WRITES_STRIDED)

    async def main():
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda loop, context: errors.append(context))
        server, port, received = await _tls_sink(loop, certs)
        tr, proto = await loop.create_connection(
            lambda: Recorder(loop), "127.0.0.1", port, ssl=certs.client(),
            server_hostname="localhost")
        tr.write(memoryview(bytes(range(256)) * 16)[::2])
        exc = await proto.lost
        await received  # the server saw the connection go (how is the TLS layer's business)
        server.close()
        await server.wait_closed()
        return exc, errors

    exc, errors = run(anyloop, main())
    assert isinstance(exc, BufferError), exc
    # (the server's side of the broken connection may be reported too)
    assert len([c for c in errors if isinstance(c.get("exception"), BufferError)]) == 1


# ---------------------------------------------------------------------------- start_tls

async def _start_tls_pair(loop, certs, *, server_ctx=None, client_hostname="localhost"):
    """A plain TCP connection upgraded to TLS on both ends; returns the app transports and
    protocols (or raises what the client's start_tls raised)."""
    server_done = loop.create_future()

    async def on_server(reader, writer):
        try:
            line = await reader.readline()
            assert line == b"STARTTLS\n"
            writer.write(b"GO\n")
            await writer.drain()
            proto = Recorder(loop)
            # asyncio's StreamReaderProtocol stays registered; a fresh protocol is used
            # here so the test sees exactly what start_tls delivers.
            tls = await loop.start_tls(writer.transport, proto,
                                       server_ctx or certs.server(), server_side=True)
            proto.transport = tls
            # The writer is kept: a StreamWriter that is collected closes its transport.
            server_done.set_result((tls, proto, writer))
        except BaseException as exc:
            if not server_done.done():
                server_done.set_exception(exc)

    server = await asyncio.start_server(on_server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"STARTTLS\n")
    assert await reader.readline() == b"GO\n"
    client = Recorder(loop)
    try:
        tls = await loop.start_tls(writer.transport, client, certs.client(),
                                   server_hostname=client_hostname)
    finally:
        server.close()
    # The writer goes with the result: a StreamWriter that is collected closes its transport.
    return tls, client, server_done, writer


def test_start_tls_both_sides(anyloop, certs):
    async def main():
        loop = asyncio.get_running_loop()
        tls, client, server_done, client_writer = await _start_tls_pair(loop, certs)
        stls, sproto, server_writer = await server_done
        assert isinstance(tls, asyncio.Transport)
        assert tls.get_protocol() is client
        assert tls.get_extra_info("peercert")["subject"] == ((("commonName", "localhost"),),)
        assert client.events == []  # start_tls does not call connection_made again
        tls.write(b"secret")
        while bytes(sproto.data) != b"secret":
            await asyncio.sleep(0.01)
        stls.write(b"reply")
        while bytes(client.data) != b"reply":
            await asyncio.sleep(0.01)
        tls.close()
        await asyncio.wait_for(sproto.lost, TIMEOUT)
        stls.close()
        await settle()

    run(anyloop, main())


def test_start_tls_handshake_failure_frees_fd(anyloop, certs):
    """A certificate the client does not trust: the client's start_tls raises the
    verification error; the connection is closed and its fd freed."""
    async def main():
        loop = asyncio.get_running_loop()
        before = open_fds()
        with pytest.raises(ssl.SSLCertVerificationError):
            await _start_tls_pair(loop, certs, server_ctx=certs.server(certs.other_cert,
                                                                       certs.other_key))
        await settle()
        return open_fds() - before

    assert run(anyloop, main()) == set()


@pytest.mark.parametrize("how", ["cancelled", "timed out"])
def test_start_tls_ended_in_the_handshake_does_not_tell_the_protocol(anyloop, certs, how):
    """start_tls() cancelled, or out of ssl_handshake_timeout, against a peer that never
    answers: start_tls() raises and the connection closes, but the protocol given to it
    gets no connection_lost(): as on asyncio, it never had that connection."""
    async def main():
        loop = asyncio.get_running_loop()
        with socket.socket() as lsock:
            lsock.bind(("127.0.0.1", 0))
            lsock.listen()
            calls = []

            class Plain(asyncio.Protocol):
                def connection_made(self, transport):
                    calls.append("made")

                def connection_lost(self, exc):
                    calls.append(("lost", exc))

            protocol = Plain()
            transport, _ = await loop.create_connection(lambda: protocol,
                                                        *lsock.getsockname())
            peer, _ = lsock.accept()
            with peer:
                upgrade = asyncio.ensure_future(loop.start_tls(
                    transport, protocol, certs.client(), server_hostname="localhost",
                    ssl_handshake_timeout=0.05 if how == "timed out" else None))
                if how == "cancelled":
                    await asyncio.sleep(0)
                    upgrade.cancel()
                with pytest.raises((asyncio.CancelledError, ConnectionAbortedError,
                                    asyncio.TimeoutError)):
                    await upgrade
                await settle()
                assert transport.is_closing()
            return calls

    assert run(anyloop, main()) == ["made"]


def test_start_tls_bad_arguments(anyloop, certs):
    async def main():
        loop = asyncio.get_running_loop()
        server = await asyncio.start_server(echo_handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        proto = asyncio.Protocol()
        with pytest.raises(TypeError, match="sslcontext is expected to be an instance of "
                                            "ssl.SSLContext, got 'ctx'"):
            await loop.start_tls(writer.transport, proto, "ctx")
        with pytest.raises(TypeError, match="sslcontext is expected"):
            await loop.start_tls(writer.transport, proto, None)

        class NotATransport(asyncio.Transport):
            pass

        with pytest.raises(TypeError, match="is not supported by start_tls()"):
            await loop.start_tls(NotATransport(), proto, certs.client())
        rfd, wfd = os.pipe()
        pipe_tr, _ = await loop.connect_read_pipe(asyncio.Protocol, os.fdopen(rfd, "rb"))
        try:
            with pytest.raises(TypeError, match="is not supported by start_tls()"):
                await loop.start_tls(pipe_tr, proto, certs.client())
        finally:
            pipe_tr.close()
            os.close(wfd)
        with pytest.raises(ValueError, match="ssl_handshake_timeout should be a positive "
                                             "number, got 0"):
            await loop.start_tls(writer.transport, proto, certs.client(),
                                 server_hostname="localhost", ssl_handshake_timeout=0)
        # The transport is still usable after the refusals: nothing was changed.
        assert not writer.transport.is_closing()
        writer.write(b"still plain")
        assert await reader.readexactly(11) == b"still plain"
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(anyloop, main())


@pytest.mark.skipif(not PY311, reason="StreamWriter.start_tls is new in Python 3.11")
def test_stream_writer_start_tls(anyloop, certs):
    async def main():
        upgraded = asyncio.Event()

        async def on_server(reader, writer):
            assert await reader.readline() == b"STARTTLS\n"
            writer.write(b"GO\n")
            await writer.drain()
            await writer.start_tls(certs.server())
            upgraded.set()
            await echo_handler(reader, writer)

        server = await asyncio.start_server(on_server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"GO\n"
        await writer.start_tls(certs.client(), server_hostname="localhost")
        assert writer.get_extra_info("ssl_object") is not None
        writer.write(b"now encrypted\n")
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return line

    assert run(anyloop, main()) == b"now encrypted\n"


# ---------------------------------------------------------------------------- faults

def test_handshake_timeout_frees_fd(anyloop, certs):
    """A server that accepts TCP and never speaks TLS: create_connection raises asyncio's
    ConnectionAbortedError after ssl_handshake_timeout and leaves no fd behind."""
    async def main():
        loop = asyncio.get_running_loop()
        lsock = socket.create_server(("127.0.0.1", 0))
        before = open_fds()
        try:
            with pytest.raises(ConnectionAbortedError,
                               match="SSL handshake is taking longer than 0.2 seconds"):
                await loop.create_connection(asyncio.Protocol, *lsock.getsockname(),
                                             ssl=certs.client(), server_hostname="localhost",
                                             ssl_handshake_timeout=0.2)
            await settle()
            return open_fds() - before
        finally:
            lsock.close()

    # The listening socket's backlog holds one accepted-by-kernel fd: not ours.
    assert run(anyloop, main()) == set()


def test_handshake_failure_frees_fd(anyloop, certs):
    """Hostname mismatch: SSLCertVerificationError from create_connection, no fd left; the
    server drops its side too."""
    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0,
                                          ssl=certs.server())
        port = server.sockets[0].getsockname()[1]
        before = open_fds()
        with pytest.raises(ssl.SSLCertVerificationError, match="wrong.example"):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port,
                                         ssl=certs.client(), server_hostname="wrong.example")
        await settle(20)
        after = open_fds()
        server.close()
        await server.wait_closed()
        return after - before

    assert run(anyloop, main()) == set()


def test_server_handshake_timeout_drops_silent_client(anyloop, certs):
    """A client that connects to a TLS server and never speaks: the server gives up after
    ssl_handshake_timeout, closes the connection and frees its fd."""
    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0,
                                          ssl=certs.server(), ssl_handshake_timeout=0.2)
        port = server.sockets[0].getsockname()[1]
        before = open_fds()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            assert await reader.read() == b""  # closed by the server
        except ConnectionResetError:
            pass  # or reset: either way the server let go
        writer.close()
        await settle(20)
        leaked = open_fds() - before
        server.close()
        await server.wait_closed()
        return leaked

    assert run(anyloop, main()) == set()


def test_plaintext_client_to_tls_server(anyloop, certs):
    """A client that does not speak TLS: the server drops it (EOF), no fd stays open, and
    the server still serves TLS clients afterwards."""
    async def main():
        server = await asyncio.start_server(echo_handler, "127.0.0.1", 0, ssl=certs.server())
        port = server.sockets[0].getsockname()[1]
        before = open_fds()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        assert await reader.read() == b""
        writer.close()
        await settle(20)
        leaked = open_fds() - before
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=certs.client(),
                                                       server_hostname="localhost")
        writer.write(b"ok")
        got = await reader.readexactly(2)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return leaked, got

    assert run(anyloop, main()) == (set(), b"ok")


def _raw_tls_server(lsock, certs, delivered, finish):
    """Accept one connection, handshake with an SSLObject, send one whole record and, once
    the client has it (``delivered``), half of the next; then ``finish(conn)``."""
    conn, _ = lsock.accept()
    conn.settimeout(TIMEOUT)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = certs.server().wrap_bio(incoming, outgoing, server_side=True)
    try:
        _blocking_handshake(conn, obj, incoming, outgoing)
        obj.write(b"complete record")
        conn.sendall(outgoing.read())
        delivered.wait(TIMEOUT)
        obj.write(b"H" * 4000)
        record = outgoing.read()
        conn.sendall(record[:len(record) // 2])
    finally:
        finish(conn)


def _reset(conn):
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()


@pytest.mark.parametrize("how", ["fin", "reset"])
def test_peer_drops_mid_record(anyloop, certs, how):
    """The peer sends half a TLS record then goes away.  With a reset the protocol gets
    connection_lost(ConnectionResetError).  With a plain close uvcffi reports the
    truncation as the error it is, connection_lost(ssl.SSLEOFError) and no EOF; asyncio's
    sslproto calls it an EOF and connection_lost(None).  The half record is never
    delivered."""
    delivered = threading.Event()

    class Client(Recorder):
        def data_received(self, data):
            super().data_received(data)
            delivered.set()

    async def main():
        loop = asyncio.get_running_loop()
        lsock = socket.create_server(("127.0.0.1", 0))
        th = tls_peer_thread(_raw_tls_server, lsock, certs, delivered,
                             socket.socket.close if how == "fin" else _reset)
        tr, proto = await loop.create_connection(
            lambda: Client(loop), *lsock.getsockname(), ssl=certs.client(),
            server_hostname="localhost")
        exc = await proto.lost
        await loop.run_in_executor(None, th.join, TIMEOUT)
        lsock.close()
        await settle()
        return proto, exc

    proto, exc = run(anyloop, main())
    assert bytes(proto.data) == b"complete record"
    if how == "reset":
        assert isinstance(exc, ConnectionResetError)
        assert proto.events == ["made", "data", "lost"], proto.events
    elif anyloop.kind == "uvcffi":
        assert isinstance(exc, ssl.SSLEOFError), exc
        assert proto.events == ["made", "data", "lost"], proto.events
    else:
        assert exc is None
        assert proto.events == ["made", "data", "eof", "lost"]


def test_reset_right_after_data_is_an_error(anyloop):
    """Data and a reset that arrive together (the TLS layer sees this when a peer aborts
    after its last record): data_received, then connection_lost(ConnectionResetError) as
    asyncio's recv() reports it, not EOF (libuv alone calls it an EOF: POLLHUP after a
    partial read)."""
    async def main():
        loop = asyncio.get_running_loop()
        lsock = socket.create_server(("127.0.0.1", 0))
        with lsock:
            tr, proto = await loop.create_connection(lambda: Recorder(loop),
                                                     *lsock.getsockname())
            conn, _ = lsock.accept()
            tr.pause_reading()  # both arrive before the transport reads again
            conn.sendall(b"last")
            _reset(conn)
            await asyncio.sleep(0.05)
            tr.resume_reading()
            exc = await proto.lost
        return proto, exc

    proto, exc = run(anyloop, main())
    assert bytes(proto.data) == b"last"
    assert isinstance(exc, ConnectionResetError)
    assert proto.events == ["made", "data", "lost"]


# ---------------------------------------------------------------------------- arguments

def test_ssl_argument_errors(anyloop, certs):
    async def main():
        loop = asyncio.get_running_loop()
        server = await asyncio.start_server(echo_handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        before = open_fds()
        with pytest.raises(ValueError, match="server_hostname is only meaningful with ssl"):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port,
                                         server_hostname="x")
        with pytest.raises(ValueError, match="ssl_handshake_timeout is only meaningful"):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port,
                                         ssl_handshake_timeout=1)
        with pytest.raises(ValueError, match="ssl_handshake_timeout should be a positive "
                                             "number, got -1"):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port,
                                         ssl=certs.client(), server_hostname="localhost",
                                         ssl_handshake_timeout=-1)
        with pytest.raises(TypeError):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port,
                                         ssl=certs.client(), server_hostname="localhost",
                                         ssl_handshake_timeout="soon")
        with pytest.raises(ValueError, match="You must set server_hostname when using ssl "
                                             "without a host"):
            await loop.create_connection(asyncio.Protocol, sock=socket.socket(),
                                         ssl=certs.client())
        with pytest.raises(TypeError, match="ssl argument must be an SSLContext or None"):
            await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=True)
        with pytest.raises(ValueError, match="you have to pass server_hostname when using ssl"):
            await loop.create_unix_connection(asyncio.Protocol, "/nonexistent",
                                              ssl=certs.client())
        a, b = socket.socketpair()
        with a, b:
            with pytest.raises(ValueError, match="Server side SSL needs a valid SSLContext"):
                await loop.connect_accepted_socket(asyncio.Protocol, a, ssl=True)
        if PY311:
            with pytest.raises(ValueError, match="ssl_shutdown_timeout should be a positive "
                                                 "number, got 0"):
                await loop.create_connection(asyncio.Protocol, "127.0.0.1", port,
                                             ssl=certs.client(), server_hostname="localhost",
                                             ssl_shutdown_timeout=0)
            with pytest.raises(ValueError, match="ssl_shutdown_timeout is only meaningful"):
                await loop.create_connection(asyncio.Protocol, "127.0.0.1", port,
                                             ssl_shutdown_timeout=1)
        await settle()
        leaked = open_fds() - before
        server.close()
        await server.wait_closed()
        return leaked

    # asyncio makes the SSLProtocol after connecting and leaves that socket to the garbage
    # collector when the timeout is refused; uvcffi checks first.
    leaked = run(anyloop, main())
    if anyloop.kind == "uvcffi":
        assert leaked == set()


def test_non_context_ssl_refused_early(loop, certs):
    """uvcffi refuses an ssl= that is no SSLContext before connecting (asyncio raises
    AttributeError "... has no attribute 'wrap_bio'" after connecting, and its servers
    accept it and then fail every connection)."""
    async def main():
        server = await asyncio.start_server(echo_handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        before = open_fds()
        for bad in ("yes", 1, object()):
            with pytest.raises(TypeError, match="ssl argument must be an SSLContext"):
                await loop.create_connection(asyncio.Protocol, "127.0.0.1", port, ssl=bad,
                                             server_hostname="localhost")
            with pytest.raises(TypeError, match="ssl argument must be an SSLContext"):
                await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=bad)
        with pytest.raises(ValueError, match="ssl_handshake_timeout should be a positive"):
            await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=certs.server(),
                                     ssl_handshake_timeout=-5)
        await settle()
        leaked = open_fds() - before
        server.close()
        await server.wait_closed()
        return leaked

    assert run(loop, main()) == set()
