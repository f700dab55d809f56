"""A TLS peer that goes away at the end of the handshake or right after its request: the
server side still sees what asyncio shows it (found with aiohttp and uvicorn over TLS,
attacked by clients that reset or half-close at once).

The client runs over memory BIOs on a plain socket of the same loop: its last flight (and
whatever follows it, data, a reset, a FIN) is sent from one callback, so the server reads
all of it in one poll, as a busy server does."""
import asyncio
import shutil
import socket
import ssl
import struct

import pytest
from _helpers import run

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="the openssl command line (certificates)")


class Recorder(asyncio.Protocol):
    """Records its callbacks; connection_made starts a task, as aiohttp's server does
    (its task asserts the connection is still there when it first runs)."""

    def __init__(self, loop):
        self.loop = loop
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

        async def start():
            self.events.append("task")

        self.task = self.loop.create_task(start())

    def data_received(self, data):
        self.events.append("data")
        self.data += data

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


async def client_to_last_flight(loop, certs, port):
    """Connect and run a TLS 1.3 client handshake up to its Finished, which is left in
    the outgoing BIO (not sent): (socket, SSLObject, incoming BIO, outgoing BIO)."""
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    ctx = certs.client()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    while True:
        try:
            obj.do_handshake()
            return sock, obj, incoming, outgoing
        except ssl.SSLWantReadError:
            out = outgoing.read()
            if out:
                await loop.sock_sendall(sock, out)
            data = await loop.sock_recv(sock, 65536)
            assert data, "the server closed during the handshake"
            incoming.write(data)


def reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def serve_to_last_flight(loop, certs, protocol_class, protos):
    """A TLS server whose protocols (``protocol_class(loop)``) are appended to ``protos``,
    and a client taken to the last flight of its handshake: (server, then what
    client_to_last_flight() returns)."""

    def factory():
        protos.append(protocol_class(loop))
        return protos[-1]

    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=certs.server())
    port = server.sockets[0].getsockname()[1]
    return (server, *await client_to_last_flight(loop, certs, port))


@pytest.mark.parametrize("with_data", [False, True], ids=["finished", "finished+data"])
def test_reset_with_the_last_flight(anyloop, certs, with_data):
    """The client's Finished (and a first record of data) then a reset, read in one poll.
    The server's session tickets cannot be sent: that write fails at once.  As on asyncio,
    the protocol still gets connection_made, then (the data, and) connection_lost, and a
    task it started in connection_made runs before connection_lost.  uvcffi sent the
    tickets before connection_made: the failed write had connection_lost scheduled
    first, and the data was dropped (aiohttp logged an AssertionError per connection)."""
    loop = anyloop
    protos = []

    async def main():
        server, sock, obj, _, outgoing = await serve_to_last_flight(loop, certs, Recorder,
                                                                    protos)
        if with_data:
            obj.write(b"GET / HTTP/1.1\r\n")
        sock.send(outgoing.read())  # (small: the socket takes it all)
        reset(sock)
        # (the protocol was made at the accept, before the server's handshake flight)
        assert len(protos) == 1
        exc = await protos[0].lost
        protos[0].transport.close()  # (asyncio 3.9's warns of its TLS transport otherwise)
        server.close()
        await server.wait_closed()
        return exc

    exc = run(loop, main())
    proto = protos[0]
    assert isinstance(exc, ConnectionResetError), exc
    assert proto.events[0] == "made"
    assert proto.events[-1] == "lost"
    assert "task" in proto.events
    if with_data:
        assert "data" in proto.events
        assert bytes(proto.data) == b"GET / HTTP/1.1\r\n"


class Responder(asyncio.Protocol):
    """Answers each read from a task, as a server's request handler does (uvicorn runs
    the application in a task data_received starts); closes nothing itself."""

    def __init__(self, loop):
        self.loop = loop
        self.events = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.events.append("data")

        async def respond():
            self.events.append("respond")
            self.transport.write(b"response to " + data)

        self.loop.create_task(respond())

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


async def read_to_the_end(loop, sock, obj, incoming):
    """What the server sends until it closes (close_notify or TCP EOF), decrypted."""
    got = bytearray()
    while True:
        data = await loop.sock_recv(sock, 65536)
        if data:
            incoming.write(data)
        else:
            incoming.write_eof()
        try:
            while True:
                chunk = obj.read(65536)
                if not chunk:
                    return bytes(got)
                got += chunk
        except ssl.SSLWantReadError:
            if not data:
                return bytes(got)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return bytes(got)


@pytest.mark.parametrize("with_finished", [False, True], ids=["after", "with-finished"])
def test_request_then_fin_in_one_read_is_answered(anyloop, certs, with_finished):
    """A request and the client's TCP FIN (no close_notify: a half-close) sent together,
    after the handshake or with the client's Finished.  asyncio reads the FIN on a later
    iteration than the data, so a handler task the data started has written its response
    before the EOF closes the connection: the client gets it.  uvcffi delivers the data
    that comes with the Finished one turn of the loop later (start_tls() returns first)
    and handled the FIN as soon as it was read, on that turn: the connection closed
    before the task ran, and its response was dropped (uvicorn over TLS answered nothing
    to a client that half-closed after its request)."""
    loop = anyloop
    protos = []

    async def main():
        server, sock, obj, incoming, outgoing = await serve_to_last_flight(
            loop, certs, Responder, protos)
        if not with_finished:
            await loop.sock_sendall(sock, outgoing.read())
            # The server's session tickets: its handshake is done.
            incoming.write(await loop.sock_recv(sock, 65536))
            with pytest.raises(ssl.SSLWantReadError):
                obj.read(65536)
        obj.write(b"request")
        sock.send(outgoing.read())  # (small: the socket takes it all)
        sock.shutdown(socket.SHUT_WR)
        response = await read_to_the_end(loop, sock, obj, incoming)
        sock.close()
        await protos[0].lost
        server.close()
        await server.wait_closed()
        return response

    assert run(loop, main()) == b"response to request"
    assert protos[0].events[:2] == ["data", "respond"]


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_request_then_close_notify_drain_does_not_fail(anyloop, certs, version):
    """A line and the client's close_notify in one read (``echo ping | openssl s_client``
    sends that), to a streams server that echoes the line: write() then drain().  The
    echo cannot be delivered (the TLS layer answers the close_notify and drops it), but
    on asyncio drain() returns and the next read gives EOF: asyncio closes the lower
    transport from the loop after the close_notify exchange, so connection_lost comes
    after the handler's next step.  uvcffi closed it at once: connection_lost came first
    and drain() raised ConnectionResetError('Connection lost'), an error per connection
    in the server's log that asyncio does not have."""
    loop = anyloop

    async def main():
        result = loop.create_future()

        async def handler(reader, writer):
            line = await reader.readline()
            writer.write(line)
            try:
                await writer.drain()
                result.set_result(("drained", line, await reader.read()))
            except Exception as exc:
                result.set_result(exc)
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=certs.server())
        port = server.sockets[0].getsockname()[1]
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        ctx = certs.client()
        ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                out = outgoing.read()
                if out:
                    await loop.sock_sendall(sock, out)
                incoming.write(await loop.sock_recv(sock, 65536))
        await loop.sock_sendall(sock, outgoing.read())  # (TLS 1.3: the client's Finished)
        obj.write(b"ping\n")
        with pytest.raises(ssl.SSLWantReadError):
            obj.unwrap()  # our close_notify, after the line
        sock.send(outgoing.read())  # (small: the socket takes it all)
        got = await result
        sock.close()
        server.close()
        await server.wait_closed()
        return got

    assert run(loop, main()) == ("drained", b"ping\n", b"")
