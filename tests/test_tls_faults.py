"""TLS faults end in an error, never in a hang or a leak (issue 11): garbage where a
ClientHello should be, renegotiation asked by either side (TLS 1.2, through the openssl
command line, whose s_client and s_server renegotiate on a typed "R" / "r"), a handshake
that fails or times out (no transport, task or fd left), a peer that drops mid-record."""
import asyncio
import gc
import os
import shutil
import socket
import ssl
import subprocess

import pytest
from _helpers import run

TIMEOUT = 10

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="the openssl command line (certificates, peers)")


def socket_fds():
    gc.collect()
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                fds.add(fd)
        except OSError:
            pass
    return fds


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)


class Recorder(asyncio.Protocol):
    def __init__(self, loop):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.got = asyncio.Event()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        self.events.append("data")
        self.data += data
        self.got.set()

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


def current_tasks():
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x00\x05" + b"\xff" * 5,  # a handshake record that is no ClientHello
    bytes(range(256)) * 4,
])
def test_garbage_instead_of_client_hello(loop, certs, garbage):
    """The server answers garbage with an error (an alert, then the close): the client
    sees the connection end, the server made no protocol connection, left no fd and no
    task, and still serves TLS afterwards."""
    async def main():
        protocols = []

        def factory():
            protocols.append(Recorder(loop))
            return protocols[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=certs.server())
        port = server.sockets[0].getsockname()[1]
        before = socket_fds()
        tasks = current_tasks()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(garbage)
        try:
            while await asyncio.wait_for(reader.read(65536), TIMEOUT):
                pass  # the alert, if any, then EOF
        except ConnectionResetError:
            pass
        writer.close()
        await settle()
        leaked = socket_fds() - before
        new_tasks = current_tasks() - tasks
        # still serving
        r2, w2 = await asyncio.open_connection("127.0.0.1", port, ssl=certs.client(),
                                               server_hostname="localhost")
        w2.close()
        await w2.wait_closed()
        server.close()
        await server.wait_closed()
        return protocols, leaked, new_tasks

    protocols, leaked, new_tasks = run(loop, main())
    assert leaked == set()
    assert new_tasks == set()
    assert protocols[0].events == []  # never connected: no connection_made, no lost


def test_client_asks_renegotiation(loop, certs):
    """TLS 1.2 client-initiated renegotiation (openssl s_client, "R"): OpenSSL 3 servers
    refuse it; the connection ends with the SSLError, never hangs."""
    async def main():
        protos = []

        def factory():
            protos.append(Recorder(loop))
            return protos[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=certs.server())
        port = server.sockets[0].getsockname()[1]
        client = await asyncio.create_subprocess_exec(
            "openssl", "s_client", "-tls1_2", "-connect", f"127.0.0.1:{port}",
            "-servername", "localhost",
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client.stdin.write(b"hello\n")
            while not protos:
                await asyncio.sleep(0.01)
            await asyncio.wait_for(protos[0].got.wait(), TIMEOUT)
            client.stdin.write(b"R\n")  # s_client: renegotiate
            exc = await asyncio.wait_for(protos[0].lost, TIMEOUT)
        finally:
            if client.returncode is None:
                client.kill()
            await client.wait()
        server.close()
        await server.wait_closed()
        return protos[0], exc

    proto, exc = run(loop, main(), timeout=30)
    assert bytes(proto.data) == b"hello\n"
    assert isinstance(exc, ssl.SSLError), exc
    assert proto.events[-1] == "lost"


def test_server_asks_renegotiation(loop, certs):
    """TLS 1.2 server-initiated renegotiation (openssl s_server, "r"): the client's TLS
    layer answers the handshake from its read path, and data flows both ways after it."""
    async def main():
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = await asyncio.create_subprocess_exec(
            "openssl", "s_server", "-tls1_2", "-cert", certs.cert, "-key", certs.key,
            "-accept", f"127.0.0.1:{port}",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            async def expect(word):
                while True:
                    line = await asyncio.wait_for(server.stdout.readline(), TIMEOUT)
                    assert line, f"s_server ended before printing {word!r}"
                    if word in line:
                        return line

            await expect(b"ACCEPT")
            tr, proto = await loop.create_connection(
                lambda: Recorder(loop), "127.0.0.1", port, ssl=certs.client(),
                server_hostname="localhost")
            tr.write(b"hello\n")
            await expect(b"hello")
            server.stdin.write(b"r\n")  # s_server: renegotiate
            await expect(b"SSL_do_handshake")
            tr.write(b"after renegotiation\n")
            await expect(b"after renegotiation")
            server.stdin.write(b"from the server\n")
            while b"from the server" not in proto.data:
                await asyncio.wait_for(proto.got.wait(), TIMEOUT)
                proto.got.clear()
            tr.abort()
            await asyncio.wait_for(proto.lost, TIMEOUT)
        finally:
            if server.returncode is None:
                server.kill()
            await server.wait()
        return proto

    proto = run(loop, main(), timeout=30)
    assert bytes(proto.data) == b"from the server\n"
    assert "lost" in proto.events


def test_handshake_timeout_leaves_nothing(loop, certs):
    """A server that never answers the ClientHello: ConnectionAbortedError after
    ssl_handshake_timeout; no fd, no task, no transport (the SSLContext is freed)."""
    import weakref

    async def main():
        with socket.create_server(("127.0.0.1", 0)) as lsock:
            before = socket_fds() | {str(lsock.fileno())}
            tasks = current_tasks()
            ctx = certs.client()
            with pytest.raises(ConnectionAbortedError, match="SSL handshake is taking longer"):
                await loop.create_connection(asyncio.Protocol, *lsock.getsockname(), ssl=ctx,
                                             server_hostname="localhost",
                                             ssl_handshake_timeout=0.2)
            ref = weakref.ref(ctx)
            del ctx
            await settle()
            conn, _ = lsock.accept()  # the connection the kernel accepted for us
            conn.close()
            return socket_fds() - before, current_tasks() - tasks, ref

    leaked, new_tasks, ref = run(loop, main())
    gc.collect()
    assert leaked == set()
    assert new_tasks == set()
    assert ref() is None


def test_garbage_after_handshake_is_an_error(loop, certs):
    """Records that do not decrypt (garbage after a good handshake): connection_lost gets
    the SSLError; nothing of the garbage reaches data_received."""
    import threading

    def peer(lsock):
        conn, _ = lsock.accept()
        tls = certs.server().wrap_socket(conn, server_side=True)
        tls.sendall(b"good")
        # the plain socket again: an application-data record that does not decrypt
        with socket.socket(fileno=tls.detach()) as plain:
            plain.sendall(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
            plain.recv(1024)  # until the client closes

    async def main():
        with socket.create_server(("127.0.0.1", 0)) as lsock:
            th = threading.Thread(target=peer, args=(lsock,), daemon=True)
            th.start()
            tr, proto = await loop.create_connection(
                lambda: Recorder(loop), *lsock.getsockname(), ssl=certs.client(),
                server_hostname="localhost")
            exc = await asyncio.wait_for(proto.lost, TIMEOUT)
            await loop.run_in_executor(None, th.join, TIMEOUT)
        return proto, exc

    proto, exc = run(loop, main())
    assert bytes(proto.data) == b"good"
    assert isinstance(exc, ssl.SSLError), exc


def test_shutdown_timeout(loop, certs):
    """A peer that takes our close_notify and never answers with its own: after
    ssl_shutdown_timeout the connection is dropped and connection_lost() gets asyncio's
    TimeoutError('SSL shutdown timed out'); the peer did get our close_notify."""
    import threading

    got = {}

    def peer(lsock, release):
        conn, _ = lsock.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = certs.server().wrap_bio(incoming, outgoing, server_side=True)
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    conn.sendall(outgoing.read())
                    incoming.write(conn.recv(65536))
            conn.sendall(outgoing.read())
            while True:  # until the client's close_notify, then silence
                try:
                    if not obj.read(1024):
                        got["close_notify"] = True
                        break
                except ssl.SSLWantReadError:
                    incoming.write(conn.recv(65536))
                except ssl.SSLZeroReturnError:
                    got["close_notify"] = True
                    break
            release.wait(TIMEOUT)

    async def main():
        release = threading.Event()
        with socket.create_server(("127.0.0.1", 0)) as lsock:
            th = threading.Thread(target=peer, args=(lsock, release), daemon=True)
            th.start()
            tr, proto = await loop.create_connection(
                lambda: Recorder(loop), *lsock.getsockname(), ssl=certs.client(),
                server_hostname="localhost", ssl_shutdown_timeout=0.3)
            tr.close()
            try:
                exc = await asyncio.wait_for(proto.lost, TIMEOUT)
            finally:
                release.set()
            await loop.run_in_executor(None, th.join, TIMEOUT)
        return exc

    exc = run(loop, main())
    assert isinstance(exc, asyncio.TimeoutError), exc
    assert str(exc) == "SSL shutdown timed out"
    assert got == {"close_notify": True}
