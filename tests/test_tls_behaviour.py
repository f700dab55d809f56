"""TLS where asyncio 3.11's sslproto goes wrong and uvcffi's own TLS transport must not
(issue 11): each test is a case uvloop (or CPython 3.12+) handles, with the peer scripted
record by record (an ssl.SSLObject over a blocking socket in a thread), so that what
arrives when is decided by the test, not by timing.

- data after the peer's close_notify is ignored (RFC 8446 6.1), not parsed as records;
- data the peer sends after our close_notify is discarded, not an SSLError
  (APPLICATION_DATA_AFTER_CLOSE_NOTIFY, bpo-39951);
- records that arrive with the end of start_tls()'s handshake reach the protocol after
  start_tls() has returned, and data held while reading was paused is delivered on
  resume_reading(), in order, in the transport's context;
- what was written before the peer's close_notify is all sent before ours;
- no shutdown timer outlives a clean shutdown;
- close() while reading is paused still completes the close_notify exchange;
- a BufferedProtocol (start_tls) gets every byte of several records in one read.

And cases asyncio gets right, where uvcffi went wrong, with the lower transport scripted
too (MemoryLower: what arrives in one read, and an EOF in the same poll, is the test's
choice, on both loops):

- data and the peer's FIN that come with the end of the handshake: the data, then the EOF;
- TLS 1.3 session tickets (records without data) then the peer's FIN: a clean EOF, however
  the records were cut into reads; a FIN inside a record is still a truncation (uvcffi's
  SSLEOFError, where asyncio sees an EOF);
- a BufferedProtocol that sets another protocol in buffer_updated(): the rest of the read
  goes to the new one.
"""
import asyncio
import contextvars
import gc
import shutil
import socket
import ssl
import sys
import threading
import weakref

import pytest
from _helpers import run

TIMEOUT = 10

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="the openssl command line makes the test certificates")


class Peer:
    """A TLS peer on a blocking socket, driven record by record from a thread."""

    def __init__(self, conn, ctx, server_side):
        conn.settimeout(TIMEOUT)
        self.conn = conn
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                server_hostname=None if server_side else "localhost")

    def send_pending(self):
        data = self.outgoing.read()
        if data:
            self.conn.sendall(data)

    def recv_more(self):
        data = self.conn.recv(65536)
        if not data:
            raise EOFError("the peer closed the TCP connection")
        self.incoming.write(data)

    def handshake(self, flush=True):
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.send_pending()
                self.recv_more()
        if flush:
            self.send_pending()

    def read(self, n):
        """``n`` bytes of application data (b'' if close_notify comes first)."""
        data = b""
        while len(data) < n:
            try:
                chunk = self.obj.read(n - len(data))
            except ssl.SSLWantReadError:
                self.recv_more()
                continue
            if not chunk:
                break
            data += chunk
        return data

    def read_until_close_notify(self):
        total = 0
        while True:
            try:
                chunk = self.obj.read(65536)
            except ssl.SSLWantReadError:
                self.recv_more()
                continue
            except ssl.SSLZeroReturnError:
                return total
            if not chunk:
                return total
            total += len(chunk)

    def write(self, data):
        self.obj.write(data)
        self.send_pending()

    def unwrap(self):
        """Send our close_notify and wait for the peer's."""
        while True:
            try:
                self.obj.unwrap()
                break
            except ssl.SSLWantReadError:
                self.send_pending()
                self.recv_more()
        self.send_pending()


def serve_one(lsock, script):
    """Accept one connection in a thread and run ``script(conn)``; the result (or the
    exception) is in the returned dict once the thread is done."""
    result = {}

    def main():
        try:
            conn, _ = lsock.accept()
            with conn:
                result["value"] = script(conn)
        except BaseException as exc:  # reported by the test
            result["error"] = exc

    th = threading.Thread(target=main, daemon=True)
    th.start()
    return th, result


async def join(th, result):
    await asyncio.get_running_loop().run_in_executor(None, th.join, TIMEOUT)
    assert not th.is_alive(), "the peer thread is stuck"
    if "error" in result:
        raise result["error"]
    return result.get("value")


class Recorder(asyncio.Protocol):
    def __init__(self, loop):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.got = {}  # data length -> future
        self.lost = loop.create_future()
        self.loop = loop

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        self.events.append(("data", bytes(data)))
        self.data += data

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        if not self.lost.done():
            self.lost.set_result(exc)

    async def wait_for_bytes(self, n):
        while len(self.data) < n:
            await asyncio.sleep(0.005)


def record_errors(loop):
    errors = []
    loop.set_exception_handler(lambda loop, context: errors.append(context))
    return errors


async def tls_client(loop, certs, lsock, factory=None):
    factory = factory or (lambda: Recorder(loop))
    return await loop.create_connection(factory, *lsock.getsockname(), ssl=certs.client(),
                                        server_hostname="localhost")


def close_against_peer(loop, script, client):
    """Run ``script`` as the peer of one connection and ``client(lsock)`` (a coroutine
    function that connects, closes and returns the protocol) against it; returns (the
    protocol, what its connection_lost() got, the exception handler's contexts) once the
    connection is lost and the peer's script ended with b"" (the client's FIN)."""
    async def main():
        errors = record_errors(loop)
        with socket.create_server(("127.0.0.1", 0)) as lsock:
            th, result = serve_one(lsock, script)
            proto = await client(lsock)
            exc = await asyncio.wait_for(proto.lost, TIMEOUT)
            assert await join(th, result) == b""
        return proto, exc, errors

    return run(loop, main())


# ---------------------------------------------------------------------------- closing

def test_data_after_peer_close_notify_is_ignored(loop, certs):
    """The peer sends data, its close_notify, then plaintext (a peer that unwrapped and
    went on in clear, or garbage): what follows a close_notify MUST be ignored (RFC 8446
    6.1).  The protocol gets the data, eof_received(), connection_lost(None), and no
    error is reported (asyncio 3.11 hands the plaintext to OpenSSL as records: an
    SSLError, WRONG_VERSION_NUMBER)."""
    def script(conn):
        peer = Peer(conn, certs.server(), server_side=True)
        peer.handshake()
        assert peer.read(4) == b"ping"
        peer.obj.write(b"pong")
        try:
            peer.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        # pong, close_notify and clear text in one segment: they arrive together
        conn.sendall(peer.outgoing.read() + b"HTTP/1.0 200 OK\r\n\r\nplaintext after TLS")
        rest = peer.read_until_close_notify()
        return rest

    async def main():
        errors = record_errors(loop)
        with socket.create_server(("127.0.0.1", 0)) as lsock:
            th, result = serve_one(lsock, script)
            tr, proto = await tls_client(loop, certs, lsock)
            tr.write(b"ping")
            exc = await asyncio.wait_for(proto.lost, TIMEOUT)
            assert await join(th, result) == 0  # our close_notify, no data after it
        return proto, exc, errors

    proto, exc, errors = run(loop, main())
    assert exc is None
    assert proto.events == ["made", ("data", b"pong"), "eof", ("lost", None)]
    assert errors == []


def test_trailing_data_at_shutdown_is_discarded(loop, certs):
    """bpo-39951: we close (close_notify sent) while the peer still sends data; the peer
    then answers our close_notify with its own.  The data is discarded and the close is
    clean: connection_lost(None), nothing reported (asyncio 3.11: unwrap() fails with
    APPLICATION_DATA_AFTER_CLOSE_NOTIFY and connection_lost gets that SSLError)."""
    closed = threading.Event()

    def script(conn):
        peer = Peer(conn, certs.server(), server_side=True)
        peer.handshake()
        assert peer.read(4) == b"ping"
        peer.write(b"pong")
        assert closed.wait(TIMEOUT)  # the client's close() ran
        peer.write(b"trailing data " * 100)
        assert peer.read_until_close_notify() == 0
        peer.unwrap()
        return "ok"

    class Client(Recorder):
        def data_received(self, data):
            super().data_received(data)
            if self.data == b"pong":
                self.transport.close()
                closed.set()

    async def main():
        errors = record_errors(loop)
        with socket.create_server(("127.0.0.1", 0)) as lsock:
            th, result = serve_one(lsock, script)
            tr, proto = await tls_client(loop, certs, lsock, lambda: Client(loop))
            tr.write(b"ping")
            exc = await asyncio.wait_for(proto.lost, TIMEOUT)
            assert await join(th, result) == "ok"
        return proto, exc, errors

    proto, exc, errors = run(loop, main())
    assert exc is None
    assert bytes(proto.data) == b"pong"  # nothing of the trailing data
    assert proto.events[-1] == ("lost", None)
    assert errors == []


def test_close_while_reading_paused(loop, certs):
    """pause_reading(), then close(): the close_notify exchange still completes (the
    peer's close_notify has to be read, paused or not); data the peer sent meanwhile is
    not delivered; eof_received() then connection_lost(None) (uvloop's
    test_shutdown_while_pause_reading).  asyncio 3.11 stops reading the records and
    fails unwrap() on the data it left unread."""
    def script(conn):
        peer = Peer(conn, certs.server(), server_side=True)
        peer.handshake(flush=False)
        peer.obj.write(b"trailing data")
        peer.send_pending()  # the end of the handshake and the data in one segment
        assert peer.read_until_close_notify() == 0
        peer.unwrap()
        return conn.recv(16384)  # then the client closes TCP: b""

    async def client(lsock):
        tr, proto = await tls_client(loop, certs, lsock)
        tr.pause_reading()
        tr.close()
        return proto

    proto, exc, errors = close_against_peer(loop, script, client)
    assert exc is None
    assert proto.events == ["made", "eof", ("lost", None)]
    assert errors == []


@pytest.mark.parametrize("where", ["after_resume", "in_resumed_delivery"])
def test_close_after_resume_reading_with_records_held(loop, certs, where):
    """A BufferedProtocol pauses in buffer_updated() with records still undecrypted, then
    resume_reading() and close(), either in the same step or from the buffer_updated()
    that the resume's delivery calls: the close_notify exchange completes at once and
    connection_lost(None) follows, as on asyncio, where the close is immediate.  The
    lower transport stays paused until that delivery ends, and close() left _WRAPPED
    before it did: nothing resumed the socket, the peer's close_notify went unread until
    ssl_shutdown_timeout, and connection_lost() got TimeoutError (found by a soak)."""
    paused = threading.Event()

    def script(conn):
        peer = Peer(conn, certs.server(), server_side=True)
        peer.handshake()
        for _ in range(4):  # several records in one segment
            peer.obj.write(b"r" * 16384)
        peer.send_pending()
        assert paused.wait(TIMEOUT)
        peer.read_until_close_notify()
        peer.unwrap()
        return conn.recv(16384)  # then the client closes TCP: b""

    class Small(Recorder, asyncio.BufferedProtocol):
        def __init__(self, loop):
            Recorder.__init__(self, loop)
            self.first = loop.create_future()

        def get_buffer(self, sizehint):
            self.buf = bytearray(4096)
            return self.buf

        def buffer_updated(self, nbytes):
            self.data_received(self.buf[:nbytes])
            if not self.first.done():
                self.transport.pause_reading()  # records wait in the TLS layer's buffer
                self.first.set_result(None)
                paused.set()
            elif where == "in_resumed_delivery":
                self.transport.close()

    async def client(lsock):
        tr, proto = await loop.create_connection(
            lambda: Small(loop), *lsock.getsockname(), ssl=certs.client(),
            server_hostname="localhost", ssl_shutdown_timeout=TIMEOUT / 2)
        await proto.first
        tr.resume_reading()
        if where == "after_resume":
            tr.close()
        return proto

    proto, exc, errors = close_against_peer(loop, script, client)
    assert exc is None
    assert proto.events[-1] == ("lost", None)
    assert errors == []


def test_everything_written_is_sent_before_close_notify(loop, certs):
    """We close() with megabytes written still waiting in our buffers, and the peer's
    close_notify comes before they are out: all of it goes out, then our close_notify
    (asyncio 3.11 stops handing records to the socket while its writing is paused, and
    closes the socket as soon as the close_notify exchange is done: what waited is lost).
    The peer reads nothing until we have written everything: the kernel's buffers hold a
    few MiB at most, the rest waits in the transport."""
    size = 32 * 1024 * 1024
    written = threading.Event()
    handshaken = threading.Event()

    def script(conn):
        peer = Peer(conn, certs.server(), server_side=True)
        peer.handshake()
        handshaken.set()
        assert written.wait(TIMEOUT)
        try:
            peer.obj.unwrap()  # our close_notify; TLS 1.3 lets the client go on sending
        except ssl.SSLWantReadError:
            pass
        peer.send_pending()
        return peer.read_until_close_notify()

    async def main():
        errors = record_errors(loop)
        with socket.create_server(("127.0.0.1", 0)) as lsock:
            th, result = serve_one(lsock, script)
            tr, proto = await tls_client(loop, certs, lsock)
            # Nothing is written before the peer's handshake is over: records arriving with
            # its last handshake read would sit in its BIO, and its unwrap() below would
            # then fail with APPLICATION_DATA_AFTER_CLOSE_NOTIFY (OpenSSL 3), the peer's
            # doing, not ours.
            assert await loop.run_in_executor(None, handshaken.wait, TIMEOUT)
            chunk = b"x" * (256 * 1024)
            for _ in range(size // len(chunk)):
                tr.write(chunk)
            buffered = tr.get_write_buffer_size()
            tr.close()  # with the records still waiting: they go first, then close_notify
            written.set()
            exc = await asyncio.wait_for(proto.lost, TIMEOUT)
            received = await join(th, result)
        return proto, exc, received, buffered, errors

    proto, exc, received, buffered, errors = run(loop, main())
    assert buffered > 0
    assert received == size
    assert exc is None
    assert proto.events == ["made", "eof", ("lost", None)]
    assert errors == []


def test_no_shutdown_timer_after_clean_close(loop, certs):
    """After a clean close (both close_notify sent) nothing of the connection stays
    referenced: no timer (the shutdown timeout's, the handshake's) keeps the transport,
    its protocol or its SSLContext alive (uvloop's test_shutdown_timeout_handler_leak,
    here on both ends and without a garbage collection)."""
    def script(conn):
        peer = Peer(conn, certs.server(), server_side=True)
        peer.handshake()
        assert peer.read(4) == b"ping"
        peer.write(b"pong")
        assert peer.read_until_close_notify() == 0
        peer.unwrap()
        return "ok"

    async def main():
        ctx = certs.client()
        with socket.create_server(("127.0.0.1", 0)) as lsock:
            th, result = serve_one(lsock, script)
            tr, proto = await loop.create_connection(
                lambda: Recorder(loop), *lsock.getsockname(), ssl=ctx,
                server_hostname="localhost")
            tr.write(b"ping")
            await proto.wait_for_bytes(4)
            tr.close()
            exc = await asyncio.wait_for(proto.lost, TIMEOUT)
            assert await join(th, result) == "ok"
        refs = weakref.ref(ctx), weakref.ref(tr), weakref.ref(proto)
        return exc, refs

    gc.disable()
    try:
        exc, refs = run(loop, main())
        for _ in range(3):
            loop.run_until_complete(asyncio.sleep(0))
        if sys.implementation.name != "cpython":
            # No reference counting (PyPy): only a collection frees anything.  A timer
            # left in the loop would still keep them alive through it.
            gc.collect()
        alive = [r() for r in refs if r() is not None]
    finally:
        gc.enable()
    assert exc is None
    assert alive == []


# ---------------------------------------------------------------------------- reading

def test_data_held_while_paused_delivered_on_resume(loop, certs):
    """Records that arrive while reading is paused are delivered after resume_reading():
    from the loop (not inside resume_reading), in order, once, and in the transport's
    context, not in the context of whoever resumed (asyncio 3.11 schedules the delivery
    in the resumer's context: its context variables leak into data_received)."""
    var = contextvars.ContextVar("var", default="unset")
    sent = threading.Event()

    def script(conn):
        peer = Peer(conn, certs.server(), server_side=True)
        peer.handshake()
        assert peer.read(5) == b"pause"
        peer.obj.write(b"first ")
        peer.obj.write(b"second ")
        peer.send_pending()
        sent.set()
        assert peer.read(6) == b"resume"
        peer.write(b"third")
        assert peer.read_until_close_notify() == 0
        peer.unwrap()
        return "ok"

    class Client(Recorder):
        def connection_made(self, transport):
            var.set("connection")
            super().connection_made(transport)

        def data_received(self, data):
            super().data_received(data)
            self.events.append(("context", var.get()))

    async def main():
        with socket.create_server(("127.0.0.1", 0)) as lsock:
            th, result = serve_one(lsock, script)
            tr, proto = await tls_client(loop, certs, lsock, lambda: Client(loop))
            tr.pause_reading()
            assert not tr.is_reading()
            tr.write(b"pause")
            await loop.run_in_executor(None, sent.wait, TIMEOUT)
            await asyncio.sleep(0.05)  # let the records reach us (no assert on it)
            assert proto.data == b""

            var.set("resumer")
            tr.resume_reading()
            assert proto.data == b""  # delivered from the loop, not from in here
            await proto.wait_for_bytes(len(b"first second "))
            tr.write(b"resume")
            await proto.wait_for_bytes(len(b"first second third"))
            tr.close()
            await asyncio.wait_for(proto.lost, TIMEOUT)
            assert await join(th, result) == "ok"
        return proto

    proto = run(loop, main())
    assert bytes(proto.data) == b"first second third"
    contexts = [e[1] for e in proto.events if e[0] == "context"]
    assert contexts and set(contexts) == {"connection"}, proto.events


def test_start_tls_returns_before_first_data(loop, certs):
    """start_tls() on the server side, the client's first data in the same segment as
    its Finished: the protocol gets that data after start_tls() has returned the new
    transport (uvloop: "schedule first data after waiter wakeup"); asyncio 3.11 calls
    data_received() first, before the caller has the transport."""
    order = []

    def script(conn):
        conn.sendall(b"STARTTLS\n")
        assert conn.recv(3) == b"GO\n"
        peer = Peer(conn, certs.client(), server_side=False)
        peer.handshake(flush=False)
        peer.obj.write(b"hello")
        peer.send_pending()  # Finished and the data together
        assert peer.read(5) == b"world"
        assert peer.read_until_close_notify() == 0
        peer.unwrap()
        return "ok"

    class Server(Recorder):
        def data_received(self, data):
            order.append("data")
            super().data_received(data)

    async def main():
        with socket.socket() as csock:
            server_proto = Server(loop)
            server = await loop.create_server(lambda: server_proto, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            result = {}

            def client():
                try:
                    csock.settimeout(TIMEOUT)
                    csock.connect(("127.0.0.1", port))
                    result["value"] = script(csock)
                except BaseException as exc:
                    result["error"] = exc

            th = threading.Thread(target=client, daemon=True)
            th.start()
            await server_proto.wait_for_bytes(len(b"STARTTLS\n"))
            plain = server_proto.transport
            plain.write(b"GO\n")
            order.clear()
            tls = await loop.start_tls(plain, server_proto, certs.server(), server_side=True)
            order.append("start_tls returned")
            await server_proto.wait_for_bytes(len(b"STARTTLS\nhello"))
            tls.write(b"world")
            tls.close()
            await asyncio.wait_for(server_proto.lost, TIMEOUT)
            assert await join(th, result) == "ok"
            server.close()
            await server.wait_closed()
        return server_proto

    proto = run(loop, main())
    assert order == ["start_tls returned", "data"]
    assert bytes(proto.data) == b"STARTTLS\nhello"


def test_start_tls_buffered_protocol_gets_every_record(loop, certs):
    """start_tls() on a client whose protocol is a BufferedProtocol, several records in
    one read: every byte reaches its buffer, in order (asyncio 3.11 reads the records
    after the first into a copy of the buffer's tail, bytearray slicing: they are lost,
    and buffer_updated() counts bytes that were never written)."""
    def script(conn):
        assert conn.recv(9) == b"STARTTLS\n"
        conn.sendall(b"GO\n")
        peer = Peer(conn, certs.server(), server_side=True)
        peer.handshake()
        assert peer.read(4) == b"sync"
        for word in (b"first ", b"second ", b"third"):
            peer.obj.write(word)  # three records
        peer.send_pending()  # in one segment
        assert peer.read_until_close_notify() == 0
        peer.unwrap()
        return "ok"

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(64)
            self.data = bytearray()
            self.lost = loop.create_future()

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            self.data += self.buf[:nbytes]

        def eof_received(self):
            pass

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def main():
        with socket.create_server(("127.0.0.1", 0)) as lsock:
            th, result = serve_one(lsock, script)
            proto = Buffered()
            tr, _ = await loop.create_connection(lambda: proto, *lsock.getsockname())
            tr.write(b"STARTTLS\n")
            while bytes(proto.data) != b"GO\n":
                await asyncio.sleep(0.005)
            proto.data.clear()
            tls = await loop.start_tls(tr, proto, certs.client(), server_hostname="localhost")
            tls.write(b"sync")
            while len(proto.data) < len(b"first second third"):
                await asyncio.sleep(0.005)
            tls.close()
            exc = await asyncio.wait_for(proto.lost, TIMEOUT)
            assert await join(th, result) == "ok"
        return proto, exc

    proto, exc = run(loop, main())
    assert bytes(proto.data) == b"first second third"
    assert exc is None


# ---------------------------------------------------------------------------- scripted reads

class MemoryLower(asyncio.Transport):
    """The transport start_tls() runs TLS over, driven by the test: what the TLS layer
    writes is kept for the peer (take()), what the peer sends arrives in one read
    (feed()), and feed_eof() is its FIN, at once (as a socket's reads and its EOF come in
    one poll).  Both loops' start_tls() take it (``_start_tls_compatible``); its protocol
    is a Protocol (uvcffi's TLS layer) or a BufferedProtocol (asyncio's)."""

    _start_tls_compatible = True

    def __init__(self, loop, protocol):
        super().__init__()
        self._loop = loop
        self._protocol = protocol
        self._sent = bytearray()
        self._closed = False
        self.reading = loop.create_future()  # done when start_tls() resumes reading

    def get_protocol(self):
        return self._protocol

    def set_protocol(self, protocol):
        self._protocol = protocol

    def pause_reading(self):
        pass

    def resume_reading(self):
        if not self.reading.done():
            self.reading.set_result(None)

    def is_reading(self):
        return True

    def write(self, data):
        self._sent += data  # a copy: the TLS layer may reuse its buffer

    def get_write_buffer_size(self):
        return 0

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def get_extra_info(self, name, default=None):
        return default

    def is_closing(self):
        return self._closed

    def close(self):
        self._force_close(None)

    def abort(self):
        self._force_close(None)

    def _force_close(self, exc):
        # (asyncio's socket transports have it too: both TLS layers fail through it)
        if not self._closed:
            self._closed = True
            self._loop.call_soon(self._protocol.connection_lost, exc)

    def take(self):
        data = bytes(self._sent)
        self._sent.clear()
        return data

    def feed(self, data):
        protocol = self._protocol
        if isinstance(protocol, asyncio.BufferedProtocol):
            view = memoryview(data)
            while view:
                buf = protocol.get_buffer(len(view))
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
                protocol.buffer_updated(n)
                view = view[n:]
        else:
            protocol.data_received(data)

    def feed_eof(self):
        if not self._protocol.eof_received():
            self.close()


class MemoryPeer:
    """The other end of a MemoryLower: an ssl.SSLObject in memory."""

    def __init__(self, ctx, lower, *, server_side):
        self.lower = lower
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                server_hostname=None if server_side else "localhost")

    def handshake_step(self):
        """Take what the TLS layer sent, go on with the handshake: True once it is done."""
        self.incoming.write(self.lower.take())
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def records(self):
        """The records made since the last call."""
        return self.outgoing.read()


needs_tls13 = pytest.mark.skipif(not ssl.HAS_TLSv1_3,
                                 reason="the scenario is TLS 1.3's (OpenSSL without it)")


def tls13(ctx):
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


@needs_tls13
def test_data_and_fin_with_the_end_of_the_handshake(anyloop, certs):
    """A server gets the client's Finished, its first data and its FIN in one poll (the
    client wrote and closed at once; TLS 1.3 lets its data follow its Finished).  As
    asyncio: data_received() gets the data, then eof_received(), connection_lost(None).
    uvcffi schedules that first data for after start_tls() has returned, and handled the
    EOF before that read ran: the records still in its BIO looked like half a record, so
    the data was dropped and connection_lost got SSLEOFError."""
    async def main():
        loop = asyncio.get_running_loop()
        errors = record_errors(loop)
        proto = Recorder(loop)
        lower = MemoryLower(loop, proto)
        started = asyncio.ensure_future(
            loop.start_tls(lower, proto, certs.server(), server_side=True))
        await lower.reading
        peer = MemoryPeer(tls13(certs.client()), lower, server_side=False)
        assert not peer.handshake_step()  # the ClientHello
        lower.feed(peer.records())
        assert peer.handshake_step()  # the server's flight: the client is done
        peer.obj.write(b"first data")
        lower.feed(peer.records())  # the client's Finished and its data, in one read
        lower.feed_eof()  # and its FIN, in the same poll
        tls = await started
        exc = await asyncio.wait_for(proto.lost, TIMEOUT)
        tls.close()  # (a no-op by now; asyncio 3.9's transport warns if never called)
        return proto.events, exc, errors

    events, exc, errors = run(anyloop, main())
    assert exc is None
    assert events == [("data", b"first data"), "eof", ("lost", None)]
    assert errors == []


async def tls13_client_over_memory(loop, certs, proto):
    """start_tls() as a TLS 1.3 client over a MemoryLower, a MemoryPeer server at the other
    end: (tls, lower, peer) once the handshake is done on both ends.  The session tickets
    the server sends after it are the peer's next records()."""
    lower = MemoryLower(loop, proto)
    started = asyncio.ensure_future(
        loop.start_tls(lower, proto, tls13(certs.client()), server_hostname="localhost"))
    await lower.reading
    peer = MemoryPeer(certs.server(), lower, server_side=True)
    assert not peer.handshake_step()  # the ClientHello in, the server's flight out
    lower.feed(peer.records())
    tls = await started
    assert peer.handshake_step()  # the client's Finished
    return tls, lower, peer


@needs_tls13
def test_session_tickets_then_fin_is_a_clean_eof(anyloop, certs):
    """The server sends its session tickets after the handshake, then closes TCP without
    close_notify (nothing else was said).  As asyncio: eof_received(), connection_lost(None).
    uvcffi took the SSLWantReadError that ends a read of records without data for half a
    record, and reported the EOF as a truncation (SSLEOFError)."""
    async def main():
        loop = asyncio.get_running_loop()
        errors = record_errors(loop)
        proto = Recorder(loop)
        tls, lower, peer = await tls13_client_over_memory(loop, certs, proto)
        tickets = peer.records()
        assert tickets
        lower.feed(tickets)
        lower.feed_eof()
        exc = await asyncio.wait_for(proto.lost, TIMEOUT)
        tls.close()  # (a no-op by now; asyncio 3.9's transport warns if never called)
        return proto.events, exc, errors

    events, exc, errors = run(anyloop, main())
    assert exc is None
    assert events == ["eof", ("lost", None)]
    assert errors == []


@needs_tls13
@pytest.mark.parametrize("piece", [1, 3, 7, 700, 100_000])
@pytest.mark.parametrize("with_data", [False, True], ids=["tickets", "tickets+data"])
def test_records_read_in_pieces_then_fin_is_a_clean_eof(anyloop, certs, piece, with_data):
    """Session tickets (and two records of data), read in pieces of ``piece`` bytes
    (record headers and bodies cut anywhere), then FIN right after the last whole record:
    all the data, eof_received(), connection_lost(None), as asyncio.  (uvcffi finds where
    the stream stands from the records' headers, not from OpenSSL: see the test above.)"""
    payload = bytes(range(256)) * 20 if with_data else b""

    async def main():
        loop = asyncio.get_running_loop()
        errors = record_errors(loop)
        proto = Recorder(loop)
        tls, lower, peer = await tls13_client_over_memory(loop, certs, proto)
        if payload:
            peer.obj.write(payload[:4000])
            peer.obj.write(payload[4000:])
        stream = peer.records()  # the tickets, then the records of data
        for pos in range(0, len(stream), piece):
            lower.feed(stream[pos:pos + piece])
        lower.feed_eof()
        exc = await asyncio.wait_for(proto.lost, TIMEOUT)
        tls.close()
        return proto.events, exc, errors

    events, exc, errors = run(anyloop, main())
    assert exc is None
    assert b"".join(e[1] for e in events if e[0] == "data") == payload
    assert events[-2:] == ["eof", ("lost", None)]
    assert errors == []


@needs_tls13
@pytest.mark.parametrize("cut", [1, 3, 5, 100])
def test_fin_inside_a_record_after_tickets_is_a_truncation(loop, certs, cut):
    """Session tickets, a whole record of data, then the first ``cut`` bytes of the next
    record (inside its header, at its end, inside its body) and FIN: the data of the whole
    record, then connection_lost(SSLEOFError), no eof_received().  uvcffi's choice, kept
    (asyncio calls this an EOF: see test_tls.py's test_peer_drops_mid_record)."""
    async def main():
        proto = Recorder(loop)
        tls, lower, peer = await tls13_client_over_memory(loop, certs, proto)
        peer.obj.write(b"whole")
        whole = peer.records()  # the tickets and the record
        peer.obj.write(b"cut" * 100)
        lower.feed(whole + peer.records()[:cut])
        lower.feed_eof()
        return proto.events, await asyncio.wait_for(proto.lost, TIMEOUT)

    events, exc = run(loop, main())
    assert isinstance(exc, ssl.SSLEOFError), exc
    assert events[:-1] == [("data", b"whole")]


@needs_tls13
def test_session_tickets_then_fin_over_a_socket(anyloop, certs):
    """The same over a socket (uvcffi's reads from its arena, and the PyPy path's): the
    server's tickets, then its FIN, nothing else: eof_received(), connection_lost(None)."""
    def script(conn):
        peer = Peer(conn, tls13(certs.server()), server_side=True)
        peer.handshake()  # its last records: the session tickets
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):  # until the client closes
            pass
        return "ok"

    async def main():
        loop = asyncio.get_running_loop()
        errors = record_errors(loop)
        with socket.create_server(("127.0.0.1", 0)) as lsock:
            th, result = serve_one(lsock, script)
            tr, proto = await tls_client(loop, certs, lsock)
            exc = await asyncio.wait_for(proto.lost, TIMEOUT)
            assert await join(th, result) == "ok"
            tr.close()  # (a no-op by now; asyncio 3.9's transport warns if never called)
        return proto.events, exc, errors

    events, exc, errors = run(anyloop, main())
    assert exc is None
    assert events == ["made", "eof", ("lost", None)]
    assert errors == []


@needs_tls13
@pytest.mark.parametrize("pause", [False, True], ids=["running", "paused"])
@pytest.mark.parametrize("successor", ["Protocol", "BufferedProtocol"])
def test_buffered_protocol_sets_another_protocol_mid_read(anyloop, certs, successor, pause):
    """A BufferedProtocol with a 100-byte buffer gets a record of 1000 bytes, and its first
    buffer_updated() sets another protocol: the other 900 bytes go to that one (a
    Protocol's data_received, or the new BufferedProtocol's buffer), as in asyncio and in
    uvcffi's stream transport (5d8aeee).  uvcffi's TLS transport went on filling the first
    protocol's buffer until the read was used up.  ``paused``: buffer_updated() pauses
    reading too, and the 900 bytes (decrypted already) come after resume_reading()."""
    if anyloop.kind == "asyncio" and sys.version_info < (3, 11):
        pytest.skip("asyncio before 3.11 feeds the rest of a decrypted chunk to the "
                    "protocol it began with")
    payload = bytes(range(250)) * 4

    class Plain(asyncio.Protocol):
        def __init__(self):
            self.data = bytearray()
            self.lost = asyncio.get_running_loop().create_future()

        def data_received(self, data):
            self.data += data
            received.append(bytes(data))
            if sum(map(len, received)) == len(payload):
                complete.set_result(None)

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    class Buffered(Plain, asyncio.BufferedProtocol):
        def __init__(self, successor=None):
            super().__init__()
            self.buf = bytearray(100)
            self.successor = successor
            self.transport = None

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            self.data_received(self.buf[:nbytes])
            if self.successor is not None:
                self.transport.set_protocol(self.successor)
                if pause:
                    self.transport.pause_reading()

    received = []
    complete = None

    async def main():
        nonlocal complete
        loop = asyncio.get_running_loop()
        errors = record_errors(loop)
        complete = loop.create_future()
        second = Plain() if successor == "Protocol" else Buffered()
        first = Buffered(second)
        tls, lower, peer = await tls13_client_over_memory(loop, certs, first)
        first.transport = tls
        peer.obj.write(payload)  # one record
        lower.feed(peer.records())  # (after the session tickets)
        if pause:
            assert len(second.data) == 0
            tls.resume_reading()
        await asyncio.wait_for(complete, TIMEOUT)  # (asyncio hands the rest over later)
        tls.abort()
        assert await asyncio.wait_for(second.lost, TIMEOUT) is None
        return bytes(first.data), bytes(second.data), errors

    first, second, errors = run(anyloop, main())
    assert (len(first), len(second)) == (100, 900)
    assert first + second == payload
    assert errors == []


@pytest.mark.parametrize("piece", [1, 2, 4, 5, 6, 299, 16_406, 40_000])
def test_record_boundaries_of_reads_in_a_larger_buffer(piece):
    """What the TLS layer keeps of where its reads end in the stream of records (white
    box: SSLTransport._track_records, the state _on_peer_eof judges an EOF by), for reads
    given as a window of a larger buffer as the loop's arena hands them (bytes around it
    that are not the stream's), cut in pieces of every size: after each piece, the bytes
    still to come of the current record, 0 at a record's end, or a header's first bytes."""
    from uvcffi.transports import tls

    bodies = [0, 1, 300, 16_401, 4, 70]  # records of these lengths, back to back
    stream = b"".join(bytes([23, 3, 3, len(b) >> 8, len(b) & 0xFF]) + b
                      for b in (bytes([i]) * n for i, n in enumerate(bodies)))
    ends = []
    for n in bodies:
        ends.append((ends[-1] if ends else 0) + 5 + n)
    base = 37
    arena = memoryview(b"\xff" * base + stream + b"\xff" * 100)

    class State:
        _rec_left = 0
        _rec_head = b""

    state = State()
    for pos in range(0, len(stream), piece):
        end = min(pos + piece, len(stream))
        tls.SSLTransport._track_records(state, arena, base + pos, base + end)
        start = max([0] + [e for e in ends if e <= end])  # the record that holds the end
        if end == start:
            expected = (0, None)
        elif end - start < 5:
            expected = (tls._REC_IN_HEADER, stream[start:end])
        else:
            expected = (next(e for e in ends if e > end) - end, None)
        in_header = state._rec_left == tls._REC_IN_HEADER
        assert (state._rec_left, state._rec_head if in_header else None) == expected, end
    assert state._rec_left == 0


def test_nothing_buffered_after_connection_lost(loop, certs):
    """The peer goes away (a FIN, no close_notify) and the protocol writes 1 MiB from its
    eof_received(): the records never reach the socket, and once connection_lost() has
    come get_write_buffer_size() is 0, as a plain socket transport's is (nothing will
    ever be sent).  uvcffi still counted the records left in the outgoing BIO (found by
    tests/test_differential.py).  (asyncio 3.11's raises AttributeError there.)"""
    class Writer(Recorder):
        def eof_received(self):
            super().eof_received()
            self.transport.write(bytes(1 << 20))

    async def main():
        server = await loop.create_server(Abort, "127.0.0.1", 0, ssl=certs.server())
        try:
            lsock = server.sockets[0]
            tr, proto = await tls_client(loop, certs, lsock, lambda: Writer(loop))
            exc = await asyncio.wait_for(proto.lost, TIMEOUT)
        finally:
            server.close()
            await server.wait_closed()
        return proto, exc, tr.get_write_buffer_size()

    class Abort(asyncio.Protocol):
        def connection_made(self, transport):
            transport.abort()

    proto, exc, size = run(loop, main())
    assert proto.events[:2] == ["made", "eof"]
    assert size == 0
