"""A socket or fd closed under the loop: never an abort, never a hang, never a misrouted byte.

libuv aborts the process when epoll_ctl fails on an fd it watches, so each scenario runs in
a child interpreter: an abort is then a failed test, not a dead test run.  Expected, as uvloop
does (asyncio hangs in several): an operation pending on a socket another task closes
finishes (the fd closes when it ends); a transport's socket closed by its creator keeps
working until the transport closes; add_reader/add_writer on a closed fd raise OSError.
"""
import subprocess
import sys
import textwrap

import pytest

PRELUDE = """
import asyncio, os, socket, sys, threading, time
import uvcffi

def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    return srv

async def connected_pair(loop):
    srv = listener()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, srv.getsockname())
    peer, _ = srv.accept()
    srv.close()
    return sock, peer
"""


def run_isolated(body):
    """Run ``async def main()`` (in ``body``) with uvcffi in a child; return the last line
    it prints.  A crash or a hang (the child's watchdog) fails the test."""
    code = PRELUDE + textwrap.dedent(body)
    if "async def main" in body:
        code += "\nprint('result', uvcffi.run(main()))\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr}"
    return proc.stdout.split("\n")[-2]


def test_sock_connect_then_close_completes_the_connect():
    assert run_isolated("""
    async def main():
        loop = asyncio.get_running_loop()
        srv = listener()
        sock = socket.socket()
        sock.setblocking(False)
        f = asyncio.ensure_future(loop.sock_connect(sock, srv.getsockname()))
        loop.call_soon(sock.close)
        await f
        closed = sock.fileno() == -1
        srv.close()
        return ("ok", closed)
    """) == "result ('ok', True)"


@pytest.mark.parametrize("method", ["sock_recv", "sock_recv_into"])
def test_pending_recv_on_a_socket_closed_by_another_task_gets_the_data(method):
    assert run_isolated(f"""
    async def main():
        loop = asyncio.get_running_loop()
        sock, peer = await connected_pair(loop)
        buf = bytearray(10)
        if "{method}" == "sock_recv":
            f = asyncio.ensure_future(loop.sock_recv(sock, 10))
        else:
            f = asyncio.ensure_future(loop.sock_recv_into(sock, buf))

        async def close_it():
            await asyncio.sleep(0.05)
            sock.close()
            await asyncio.sleep(0.05)
            peer.send(b"helo")

        closer = asyncio.ensure_future(close_it())
        got = await f
        await closer
        data = got if isinstance(got, bytes) else bytes(buf[:got])
        peer.close()
        return (data, sock.fileno())
    """) == "result (b'helo', -1)"


def test_pending_recv_ends_when_the_peer_closes():
    assert run_isolated("""
    async def main():
        loop = asyncio.get_running_loop()
        sock, peer = await connected_pair(loop)
        f = asyncio.ensure_future(loop.sock_recv(sock, 10))
        await asyncio.sleep(0.02)
        sock.close()
        await asyncio.sleep(0.02)
        peer.close()
        return (await f, sock.fileno())
    """) == "result (b'', -1)"


def test_sock_sendall_then_close_sends_everything():
    assert run_isolated("""
    async def main():
        loop = asyncio.get_running_loop()
        sock, peer = await connected_pair(loop)
        payload = b"x" * (8 << 20)  # far more than the socket buffers hold
        f = asyncio.ensure_future(loop.sock_sendall(sock, payload))
        loop.call_soon(sock.close)
        got = bytearray()
        def drain():
            while len(got) < len(payload):
                chunk = peer.recv(1 << 20)
                if not chunk:
                    break
                got.extend(chunk)
        t = threading.Thread(target=drain)
        t.start()
        await f
        await loop.run_in_executor(None, t.join)
        peer.close()
        return (len(got) == len(payload), sock.fileno())
    """) == "result (True, -1)"


def test_sock_accept_then_close_accepts():
    assert run_isolated("""
    async def main():
        loop = asyncio.get_running_loop()
        srv = listener()
        srv.setblocking(False)
        f = asyncio.ensure_future(loop.sock_accept(srv))
        await asyncio.sleep(0.01)
        srv.close()
        client = socket.create_connection(srv.getsockname())
        conn, _ = await f
        conn.close()
        client.close()
        return srv.fileno()
    """) == "result -1"


def test_a_closed_loop_lets_go_of_the_sockets_of_abandoned_waits():
    assert run_isolated("""
    loop = uvcffi.new_event_loop()
    async def abandon():
        sock, peer = await connected_pair(loop)
        asyncio.ensure_future(loop.sock_recv(sock, 10))
        await asyncio.sleep(0.01)
        return sock, peer
    sock, peer = loop.run_until_complete(abandon())
    sock.close()
    print("before", sock.fileno() != -1)
    loop.close()
    print("after", sock.fileno())
    peer.close()
    """) == "after -1"


@pytest.mark.parametrize("which", ["reader", "writer"])
def test_an_int_fd_closed_while_watched_never_aborts(which):
    assert run_isolated(f"""
    async def main():
        loop = asyncio.get_running_loop()
        add = loop.add_{which}
        results = []
        for round in range(50):
            a, b = socket.socketpair()
            fd = a.detach()
            add(fd, lambda: None)
            if round % 2:
                await asyncio.sleep(0)  # watched for an iteration first
            os.close(fd)
            # A change to a closed fd's watch reaches the kernel at once: an error here,
            # never an abort in libuv later.
            try:
                loop.add_{"writer" if which == "reader" else "reader"}(fd, lambda: None)
            except OSError:
                results.append("refused")
            await asyncio.sleep(0)
            loop.remove_reader(fd)
            loop.remove_writer(fd)
            b.close()
        return sorted(set(results))
    """) == "result ['refused']"


def test_a_reused_fd_number_is_watched_again():
    assert run_isolated("""
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        number = a.fileno()
        loop.add_reader(number, lambda: None)
        await asyncio.sleep(0)
        a.close()  # closed without remove_reader: the kernel drops it from the set
        c, d = socket.socketpair()
        assert c.fileno() == number or d.fileno() == number
        mine = c if c.fileno() == number else d
        other = d if mine is c else c
        got = loop.create_future()
        loop.add_reader(number, lambda: got.done() or got.set_result(mine.recv(10)))
        other.send(b"again")
        data = await asyncio.wait_for(got, 10)
        loop.remove_reader(number)
        for s in (b, c, d):
            s.close()
        return data
    """) == "result b'again'"


def test_add_reader_on_a_closed_fd_raises_oserror():
    assert run_isolated("""
    async def main():
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        try:
            loop.add_reader(r, print)
        except OSError as exc:
            return type(exc).__name__
    """) == "result OSError"


def test_create_connection_sock_closed_by_its_creator_keeps_working():
    assert run_isolated("""
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        got = loop.create_future()

        class Proto(asyncio.Protocol):
            def data_received(self, data):
                got.set_result(data)

        transport, _ = await loop.create_connection(Proto, sock=a)
        a.close()  # the transport owns it now; the fd closes with the transport
        await asyncio.sleep(0.01)
        transport.write(b"out")
        b.send(b"in")
        data = await asyncio.wait_for(got, 10)
        echoed = b.recv(10)
        transport.close()
        await asyncio.sleep(0.01)
        b.close()
        return (data, echoed, a.fileno())
    """) == "result (b'in', b'out', -1)"


def test_create_server_sock_closed_by_its_creator_keeps_serving():
    assert run_isolated("""
    async def main():
        loop = asyncio.get_running_loop()
        srv_sock = listener()
        addr = srv_sock.getsockname()
        done = loop.create_future()

        class Proto(asyncio.Protocol):
            def data_received(self, data):
                done.set_result(data)

        server = await loop.create_server(Proto, sock=srv_sock)
        srv_sock.close()
        await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(b"hello")
        data = await asyncio.wait_for(done, 10)
        writer.close()
        server.close()
        await server.wait_closed()
        return (data, srv_sock.fileno())
    """) == "result (b'hello', -1)"


def test_unix_datagram_sock_closed_by_its_creator_keeps_working():
    assert run_isolated("""
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        got = loop.create_future()

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                got.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(Proto, sock=a)
        a.close()
        await asyncio.sleep(0.01)
        b.send(b"dgram")
        data = await asyncio.wait_for(got, 10)
        transport.close()
        await asyncio.sleep(0.01)
        b.close()
        return (data, a.fileno())
    """) == "result (b'dgram', -1)"


def test_pipes_closed_by_their_creator_keep_working():
    assert run_isolated("""
    async def main():
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        rfile, wfile = open(r, "rb", 0), open(w, "wb", 0)
        got = loop.create_future()
        lost = loop.create_future()

        class Reader(asyncio.Protocol):
            def data_received(self, data):
                got.set_result(data)

        class Writer(asyncio.BaseProtocol):
            def connection_lost(self, exc):
                lost.set_result(exc)

        rt, _ = await loop.connect_read_pipe(Reader, rfile)
        wt, _ = await loop.connect_write_pipe(Writer, wfile)
        rfile.close()  # the transports work on duplicates: closing these is harmless
        wfile.close()
        await asyncio.sleep(0.01)
        wt.write(b"piped")
        data = await asyncio.wait_for(got, 10)
        rt.close()  # the read end goes: the write pipe's hang-up watch reports it
        exc = await asyncio.wait_for(lost, 10)
        return (data, exc)
    """) == "result (b'piped', None)"


# A transport's own fd closed with os.close() (not its socket object's close(), which the
# loop defers): libuv would abort at its next epoll_ctl on that fd; the C core's fd guard
# (csrc/uvc_fdguard.h) turns that into connection_lost(OSError(EBADF)) for the transport.
TRANSPORT_PRELUDE = """
class Recorder(asyncio.Protocol):
    def __init__(self):
        self.data = []
        self.got = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.data.append(data)
        if not self.got.done():
            self.got.set_result(None)
    def connection_lost(self, exc):
        self.lost.set_result(exc)

class BufferedRecorder(Recorder, asyncio.BufferedProtocol):
    # read straight into its buffer (the transport's read-into mode), not via the arena
    def __init__(self):
        super().__init__()
        self.buf = bytearray(64)
    def get_buffer(self, sizehint):
        return self.buf
    def buffer_updated(self, nbytes):
        self.data_received(bytes(self.buf[:nbytes]))

async def transport_pair(loop):
    sock, peer = await connected_pair(loop)
    transport, protocol = await loop.create_connection(PROTOCOL, sock=sock)
    return transport, protocol, peer

def describe(exc):
    return (type(exc).__name__, getattr(exc, "errno", None))
"""


def run_transport_case(body, protocol="Recorder"):
    return run_isolated(TRANSPORT_PRELUDE + f"PROTOCOL = {protocol}\n" + textwrap.dedent(body))


# Both ways a stream transport reads: through the loop's arena (a Protocol) and straight
# into the protocol's buffer (a BufferedProtocol).
PROTOCOLS = pytest.mark.parametrize("protocol", ["Recorder", "BufferedRecorder"])


@PROTOCOLS
def test_resume_reading_on_a_transport_whose_fd_was_closed_loses_the_connection(protocol):
    assert run_transport_case("""
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol, peer = await transport_pair(loop)
        await asyncio.sleep(0.01)
        os.close(transport.get_extra_info("socket").fileno())
        transport.pause_reading()
        await asyncio.sleep(0.01)
        transport.resume_reading()  # libuv: EPOLL_CTL_ADD on a closed fd, then abort()
        exc = await protocol.lost  # no timer pending: a poll that blocks hangs here
        peer.close()
        return describe(exc), loop.stats()["events"].get("fd_lost")
    """, protocol) == "result (('OSError', 9), 1)"


@PROTOCOLS
def test_a_write_waiting_on_a_closed_fd_loses_the_connection(protocol):
    assert run_transport_case("""
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol, peer = await transport_pair(loop)
        transport.write(b"x" * (16 << 20))  # the peer reads nothing: the write waits
        await asyncio.sleep(0.05)
        assert transport.get_write_buffer_size() > 0
        os.close(transport.get_extra_info("socket").fileno())
        transport.pause_reading()  # libuv: EPOLL_CTL_MOD (still watching for POLLOUT)
        exc = await protocol.lost  # no timer pending: a poll that blocks hangs here
        peer.close()
        return describe(exc)
    """, protocol) == "result ('OSError', 9)"


@PROTOCOLS
def test_a_closed_fd_number_taken_by_another_socket_gets_none_of_its_bytes(protocol):
    assert run_transport_case("""
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol, peer = await transport_pair(loop)
        number = transport.get_extra_info("socket").fileno()
        transport.pause_reading()
        await asyncio.sleep(0.01)
        other, other_peer = socket.socketpair()
        os.dup2(other.fileno(), number)  # closes the transport's fd, reuses its number
        transport.resume_reading()  # EPOLL_CTL_ADD would watch the other socket
        other_peer.send(b"not for the transport")
        exc = await protocol.lost  # no timer pending: a poll that blocks hangs here
        transport.close()
        await asyncio.sleep(0.05)
        # The number still holds the other socket, with its bytes unread.
        got = os.read(number, 100)
        os.close(number)
        for s in (other, other_peer, peer):
            s.close()
        return describe(exc), protocol.data, got
    """, protocol) == "result (('OSError', 9), [], b'not for the transport')"


def test_a_new_transport_on_a_reused_number_is_not_closed_by_the_old_one():
    assert run_transport_case("""
    async def main():
        loop = asyncio.get_running_loop()
        old, old_protocol, old_peer = await transport_pair(loop)
        number = old.get_extra_info("socket").fileno()
        sock, peer = await connected_pair(loop)
        os.dup2(sock.fileno(), number)  # the old fd closed under the loop, number reused
        sock.close()
        reused = socket.socket(fileno=number)
        new, new_protocol = await loop.create_connection(Recorder, sock=reused)
        exc = await old_protocol.lost
        old.close()  # must not close the number: it is the new transport's fd now
        await asyncio.sleep(0.05)
        peer.send(b"ping")
        await new_protocol.got
        new.write(b"pong")
        await asyncio.sleep(0.05)
        answer = peer.recv(10)
        new.close()
        await new_protocol.lost
        for s in (peer, old_peer):
            s.close()
        return describe(exc), new_protocol.data, answer
    """) == "result (('OSError', 9), [b'ping'], b'pong')"


# A server's listening fd closed with os.close() under it.  The listener watches a
# duplicate of the fd (uvc_listener_new), as the pipe and UDP transports do: libuv never
# meets the closed fd, the server keeps serving, and its close() leaves the number alone.
SERVER_PRELUDE = """
class Accepted(asyncio.Protocol):
    def connection_made(self, transport):
        ACCEPTED.put_nowait(transport)
"""


def run_server_case(body):
    return run_isolated(SERVER_PRELUDE + "ACCEPTED = None\n" + textwrap.dedent(body))


def test_a_paused_listener_whose_fd_was_closed_resumes_accepting():
    # Out of fds, the server stops accepting and retries after a second (asyncio's
    # ACCEPT_RETRY_DELAY): libuv aborted the process at that retry (EPOLL_CTL_ADD of the
    # closed fd) when the listener watched the socket's own fd.
    assert run_server_case("""
    import resource
    async def main():
        global ACCEPTED
        ACCEPTED = asyncio.Queue()
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda loop, ctx: errors.append(ctx.get("exception")))
        server = await loop.create_server(Accepted, "127.0.0.1", 0)
        number = server.sockets[0].fileno()
        addr = server.sockets[0].getsockname()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        client = socket.socket()
        client.setblocking(False)
        fillers = []
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        try:
            while True:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        try:
            client.connect(addr)  # the kernel completes it; accept() meets EMFILE
        except BlockingIOError:
            pass
        while not errors:
            await asyncio.sleep(0.01)
        os.close(number)
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        transport = await ACCEPTED.get()  # the retry accepts the waiting connection
        transport.close()
        client.close()
        server.close()
        await server.wait_closed()
        return [getattr(e, "errno", None) for e in errors]
    """) == "result [24]"


def test_a_server_whose_fd_was_closed_keeps_serving_and_closes_no_other_file():
    assert run_server_case("""
    async def main():
        global ACCEPTED
        ACCEPTED = asyncio.Queue()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Accepted, "127.0.0.1", 0)
        number = server.sockets[0].fileno()
        addr = server.sockets[0].getsockname()
        os.close(number)
        other, other_peer = socket.socketpair()  # takes the number
        reused = other.fileno() == number
        reader, writer = await asyncio.open_connection(*addr)
        transport = await ACCEPTED.get()
        transport.close()
        writer.close()
        server.close()
        await server.wait_closed()
        other_peer.send(b"still open")
        got = other.recv(100)
        other.close()
        other_peer.close()
        return reused, got
    """) == "result (True, b'still open')"


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_a_server_on_the_number_of_a_stream_closed_under_the_loop(kind, tmp_path):
    # The stream transport was idle when its fd was closed, so the fd guard had not seen
    # it: libuv still counted the number as watched and refused the new listener (EEXIST).
    path = str(tmp_path / "s.sock")
    assert run_server_case(f"""
    async def main():
        global ACCEPTED
        ACCEPTED = asyncio.Queue()
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        number = a.fileno()
        old, _ = await loop.create_connection(asyncio.Protocol, sock=a)
        await asyncio.sleep(0.01)
        os.close(number)
        if "{kind}" == "tcp":
            server = await loop.create_server(Accepted, "127.0.0.1", 0)
            connect = asyncio.open_connection(*server.sockets[0].getsockname())
        else:
            server = await loop.create_unix_server(Accepted, {path!r})
            connect = asyncio.open_unix_connection({path!r})
        reused = server.sockets[0].fileno() == number
        reader, writer = await connect
        transport = await ACCEPTED.get()
        transport.write(b"served")
        got = await reader.readexactly(6)
        transport.close()
        writer.close()
        old.close()
        server.close()
        await server.wait_closed()
        b.close()
        return reused, got
    """) == "result (True, b'served')"


@pytest.mark.parametrize("kind", ["stream", "datagram"])
def test_a_transport_whose_fd_was_closed_closes_no_other_file(kind):
    # The number is reused by a socket the loop knows nothing of; the transport's close()
    # (libuv's close of its fd, and the socket object's) must not close it.
    assert run_isolated(f"""
    async def main():
        loop = asyncio.get_running_loop()
        lost = loop.create_future()

        class Lost:
            def connection_lost(self, exc):
                lost.set_result(exc)

        if "{kind}" == "stream":
            a, b = socket.socketpair()
            proto = type("Proto", (Lost, asyncio.Protocol), {{}})
            transport, _ = await loop.create_connection(proto, sock=a)
        else:
            a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            a.bind(("127.0.0.1", 0))
            b = None
            proto = type("Proto", (Lost, asyncio.DatagramProtocol), {{}})
            transport, _ = await loop.create_datagram_endpoint(proto, sock=a)
        number = a.fileno()
        await asyncio.sleep(0.01)
        os.close(number)
        other, other_peer = socket.socketpair()
        reused = other.fileno() == number
        transport.close()
        exc = await lost
        await asyncio.sleep(0.01)
        other_peer.send(b"still open")
        got = other.recv(100)
        for s in (other, other_peer, b):
            if s is not None:
                s.close()
        return reused, exc, got
    """) == "result (True, None, b'still open')"


@pytest.mark.parametrize("how", ["create_connection", "connect_accepted_socket"])
def test_a_loop_closed_over_a_transport_whose_fd_was_closed_closes_no_other_file(how):
    # loop.close() with the transport still open: libuv closes every handle's fd, and did
    # so without the fd guard's check that transport.close() makes, closing the number
    # that another socket had taken since.
    assert run_isolated(f"""
    loop = uvcffi.new_event_loop()
    async def setup():
        a, b = socket.socketpair()
        transport, _ = await loop.{how}(asyncio.Protocol, sock=a)
        await asyncio.sleep(0.01)
        return transport, a.fileno(), b
    transport, number, b = loop.run_until_complete(setup())
    os.close(number)
    other, other_peer = socket.socketpair()
    reused = other.fileno() == number
    loop.close()
    other_peer.send(b"still open")
    print("after", reused, other.recv(100))
    for s in (other, other_peer, b):
        s.close()
    """) == "after True b'still open'"


@pytest.mark.parametrize("first, then", [
    ("add_reader", "add_writer"), ("add_writer", "add_reader"), ("add_writer", "sock_recv"),
    ("both", "remove_writer"),
])
def test_callbacks_of_a_closed_fd_never_run_for_the_file_that_reuses_its_number(first, then):
    # The fd was closed without remove_reader/remove_writer: the kernel dropped it from the
    # loop's set, and a new socket took its number.  Watching that number for the other
    # direction (or unwatching one of two) re-registered the old callbacks along with it:
    # they ran for the new socket at every iteration.  (asyncio's selector raises
    # FileNotFoundError there, and drops them.)
    assert run_isolated(f"""
    async def main():
        loop = asyncio.get_running_loop()
        stale = []
        a, b = socket.socketpair()
        number = a.fileno()
        if "{first}" in ("add_reader", "both"):
            loop.add_reader(number, stale.append, "old reader")
        if "{first}" in ("add_writer", "both"):
            loop.add_writer(number, stale.append, "old writer")
        await asyncio.sleep(0)  # registered, and polled
        a.close()
        b.close()
        await asyncio.sleep(0)  # what that poll saw has run
        stale.clear()
        c, d = socket.socketpair()
        assert c.fileno() == number
        c.setblocking(False)
        if "{then}" == "sock_recv":
            recv = asyncio.ensure_future(loop.sock_recv(c, 10))
            await asyncio.sleep(0)  # it waits for the number to be readable
        d.send(b"new")  # the new socket is readable, and writable
        if "{then}" == "sock_recv":
            got = await recv
        elif "{then}" == "remove_writer":
            loop.remove_writer(number)
            got = None
        else:
            ready = loop.create_future()
            getattr(loop, "{then}")(number, lambda: ready.done() or ready.set_result(None))
            await ready
            getattr(loop, "{then}".replace("add", "remove"))(number)
            got = c.recv(10)
        for _ in range(3):  # a level-triggered watch reports the ready socket each time
            await asyncio.sleep(0)
        loop.remove_reader(number)
        loop.remove_writer(number)
        c.close()
        d.close()
        return stale, got
    """) == "result ([], %r)" % (None if then == "remove_writer" else b"new")


UDP_PRELUDE = """
class Proto(asyncio.DatagramProtocol):
    def __init__(self):
        self.lost = asyncio.get_running_loop().create_future()
    def connection_lost(self, exc):
        self.lost.set_result(exc)

async def udp_endpoint_on_a_stray_number(loop):
    # A socket object whose fd the program closed with os.close() still thinks it owns the
    # number: closing the object later (a double close) closes whatever has the number by
    # then, here libuv's own duplicate of the endpoint's socket.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    stray = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    number = stray.fileno()
    os.close(number)
    transport, proto = await loop.create_datagram_endpoint(Proto, sock=sock)
    st, mine = os.fstat(number), os.fstat(sock.fileno())
    assert (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)  # libuv's duplicate
    stray.close()
    return transport, proto, sock, number
"""


def run_udp_case(body):
    return run_isolated(UDP_PRELUDE + textwrap.dedent(body))


def test_a_udp_endpoint_whose_libuv_fd_was_closed_resumes_into_an_error_not_an_abort():
    # libuv registers a resumed UDP handle with epoll at its next poll and aborts the process
    # when that fails (EBADF): the fd guard now covers UDP handles as it covers streams.
    assert run_udp_case("""
    async def main():
        loop = asyncio.get_running_loop()
        transport, proto, sock, number = await udp_endpoint_on_a_stray_number(loop)
        transport.pause_reading()
        await asyncio.sleep(0)
        transport.resume_reading()  # libuv: EPOLL_CTL_ADD on the closed number, abort()
        exc = await proto.lost  # no timer pending: a poll that blocks hangs here
        return type(exc).__name__, exc.errno, sock.fileno()
    """) == "result ('OSError', 9, -1)"


def test_a_udp_endpoint_whose_libuv_fd_was_closed_closes_no_other_file():
    assert run_udp_case("""
    async def main():
        loop = asyncio.get_running_loop()
        transport, proto, sock, number = await udp_endpoint_on_a_stray_number(loop)
        other, other_peer = socket.socketpair()
        assert other.fileno() == number
        transport.close()  # libuv closed its fd number, the other socket's now
        await proto.lost
        await asyncio.sleep(0)  # libuv's close callback has run
        other_peer.send(b"still open")
        got = other.recv(100)
        other.close()
        other_peer.close()
        return got, sock.fileno()
    """) == "result (b'still open', -1)"


def test_a_closed_fd_whose_file_lives_on_never_wakes_the_file_that_reuses_its_number():
    # epoll keeps a registration while any fd refers to its file: closing the number does
    # not remove it when the file lives on in a duplicate.  The number's new file, watched,
    # had its callback run at every poll for the duplicate's data (asyncio's does too).
    assert run_isolated("""
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        number = a.fileno()
        loop.add_reader(number, lambda: None)
        await asyncio.sleep(0)  # registered, and polled
        keep = os.dup(number)
        a.close()  # without remove_reader: the registration lives on with keep's file
        c, d = socket.socketpair()
        assert c.fileno() == number
        b.send(b"for the closed number's file")  # keep is readable; c is not
        fired = []
        loop.add_reader(number, fired.append, "new")
        for _ in range(3):
            await asyncio.sleep(0)
        loop.remove_reader(number)
        for fd in (keep, b, c, d):
            os.close(fd) if isinstance(fd, int) else fd.close()
        return fired
    """) == "result []"


def test_a_removed_reader_of_a_closed_fd_whose_file_lives_on_leaves_no_events_behind():
    # remove_reader after the close cannot take the registration out (the number names no
    # file, so epoll_ctl cannot find it): epoll kept reporting the duplicate's file, for
    # nobody, at every poll (a busy loop while it stays readable; asyncio's too).
    assert run_isolated("""
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        number = a.fileno()
        loop.add_reader(number, lambda: None)
        await asyncio.sleep(0)
        keep = os.dup(number)
        a.close()
        loop.remove_reader(number)
        b.send(b"for nobody")  # keep stays readable
        await asyncio.sleep(0)  # (the stale registration is met here)
        before = loop.stats()["events"].get("poll", 0)
        for _ in range(5):
            await asyncio.sleep(0)
        after = loop.stats()["events"].get("poll", 0)
        os.close(keep)
        b.close()
        return after - before
    """) == "result 0"


def test_a_reading_udp_endpoint_whose_libuv_fd_was_closed_is_lost_not_flooded_with_errors():
    # The stray close leaves the socket's file open (the caller's fd), so epoll still
    # reports it under the closed number, and libuv's every receive there fails with EBADF:
    # error_received() ran at every iteration, for good, while the transport lived on.
    assert run_udp_case("""
    async def main():
        loop = asyncio.get_running_loop()
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # made before: no reuse
        transport, proto, sock, number = await udp_endpoint_on_a_stray_number(loop)
        first = loop.create_future()
        proto.error_received = lambda exc: first.done() or first.set_result(("error", exc))
        proto.lost.add_done_callback(
            lambda f: first.done() or first.set_result(("lost", f.result())))
        sender.sendto(b"datagram", sock.getsockname())
        what, exc = await first
        transport.close()
        await proto.lost
        sender.close()
        return what, type(exc).__name__, exc.errno, sock.fileno()
    """) == "result ('lost', 'OSError', 9, -1)"


@pytest.mark.parametrize("how", ["detach", "os.close"])
def test_a_sock_recv_whose_fd_number_was_closed_and_reused_never_reads_the_new_file(how):
    # The wait's fd was closed under it (os.close() of the number, the socket object
    # detached first or not) while another fd kept its file open, so epoll still reported
    # that file under the number; a blocking socket took the number.  The loop's receive
    # went to the number: recv() on the new socket blocked the whole loop for good.  Now:
    # a detached socket has no fd, and its receive fails as asyncio's sock.recv() does;
    # a number that is another file's is read without blocking (MSG_DONTWAIT), so the loop
    # goes on (asyncio's blocks here), and the wait with it.
    assert run_isolated(f"""
    import faulthandler
    faulthandler.dump_traceback_later(30, exit=True)  # a blocked loop fails fast
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        keep = os.dup(a.fileno())  # the file lives on: epoll keeps reporting it
        recv = asyncio.ensure_future(loop.sock_recv(a, 10))
        await asyncio.sleep(0)  # it waits for the number to be readable
        number = a.fileno()
        if "{how}" == "detach":
            a.detach()
        os.close(number)
        c, d = socket.socketpair()  # blocking, on the number
        assert c.fileno() == number
        b.send(b"for the file kept open")
        for _ in range(3):
            await asyncio.sleep(0)
        if recv.done():
            exc = recv.exception()
            outcome = (type(exc).__name__, exc.errno)
        else:
            outcome = "waiting"
            recv.cancel()
        faulthandler.cancel_dump_traceback_later()
        for s in (b, c, d):
            s.close()
        os.close(keep)
        return outcome
    """) == ("result ('OSError', 9)" if how == "detach" else "result waiting")


FDSET_PRELUDE = """
import faulthandler
from uvcffi._uv import lib
faulthandler.dump_traceback_later(20, exit=True)  # a loop that hangs fails, not the run

def stray_number():
    # A socket object whose fd the program closed with os.close() still thinks it owns the
    # number: closing the object later (a double close) closes whatever took the number
    # in between, here the loop's fd set, opened by the next add_reader.
    stray = socket.socket()
    number = stray.fileno()
    os.close(number)
    return stray, number

def watch(loop, sock):
    got = loop.create_future()
    def read():
        if not got.done():
            got.set_result(sock.recv(100))
    loop.add_reader(sock, read)
    return got
"""


def run_fdset_case(body):
    return run_isolated(FDSET_PRELUDE + textwrap.dedent(body))


def test_the_fd_sets_fd_closed_before_its_first_poll_never_aborts_and_keeps_watching():
    # libuv registers the set's epoll fd at its next poll and aborted the process when that
    # failed (EBADF).  Now the set starts again on a new epoll fd, with what it watched.
    assert run_fdset_case("""
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        stray, number = stray_number()
        got = watch(loop, a)  # the set opens, on the stray number
        assert lib.uvc_fdset_fd(loop._uv) == number
        stray.close()  # before the loop has polled once
        b.send(b"still heard")
        data = await got
        loop.remove_reader(a)
        a.close()
        b.close()
        return data
    """) == "result b'still heard'"


@pytest.mark.parametrize("then", ["add_reader", "sock_recv", "nothing"])
def test_watches_after_the_fd_sets_fd_was_closed_under_the_loop_keep_working(then):
    # Once libuv had registered the set's fd, closing it took the registration along: the
    # watched fds' callbacks never ran again (a hang), and the next add_reader or sock_*
    # wait failed (OSError EBADF from the closed set).  Now the set's readiness still
    # reaches the loop (the set holds its file open in a second fd), and the set, found
    # closed there or by the next watch, starts again with every fd it watched.
    assert run_fdset_case(f"""
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        c, d = socket.socketpair()
        c.setblocking(False)
        stray, number = stray_number()
        first = watch(loop, a)
        assert lib.uvc_fdset_fd(loop._uv) == number
        await asyncio.sleep(0)  # libuv polls the set's fd now
        stray.close()
        if "{then}" == "add_reader":
            second = watch(loop, c)
        elif "{then}" == "sock_recv":
            second = asyncio.ensure_future(loop.sock_recv(c, 100))
            await asyncio.sleep(0)
        b.send(b"first")
        got = [await first]
        if "{then}" != "nothing":
            d.send(b"second")
            got.append(await second)
            loop.remove_reader(c)
        loop.remove_reader(a)
        for s in (a, b, c, d):
            s.close()
        return got
    """) == ("result [b'first']" if then == "nothing" else "result [b'first', b'second']")


@pytest.mark.parametrize("when", ["before the first poll", "after"])
def test_the_file_that_takes_the_fd_sets_closed_number_is_neither_read_nor_closed(when):
    # The set's number closed under the loop, then taken by a pipe: libuv watched the pipe
    # in the set's place, or nothing, and the socket's reader never ran (a hang); add_reader
    # on the pipe was refused as the set's own number (EBADF), and the set, closing with
    # the loop, closed the number: the pipe.  Now the set starts again elsewhere and leaves
    # the number to the pipe, whose bytes stay for its own reader.
    assert run_fdset_case(f"""
    async def scenario():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        stray, number = stray_number()
        first = watch(loop, a)
        assert lib.uvc_fdset_fd(loop._uv) == number
        if "{when}" == "after":
            await asyncio.sleep(0)
        stray.close()
        r, w = os.pipe()
        assert r == number
        os.write(w, b"piped")
        b.send(b"socket")
        got = [await first]
        for _ in range(3):
            await asyncio.sleep(0)
        piped = loop.create_future()
        loop.add_reader(r, lambda: piped.done() or piped.set_result(os.read(r, 100)))
        got.append(await piped)
        loop.remove_reader(r)
        os.write(w, b" own")
        loop.remove_reader(a)
        a.close()
        b.close()
        return got, r, w

    got, r, w = uvcffi.run(scenario())
    left = os.read(r, 100)  # the loop closed with its set: not this number
    os.close(r)
    os.close(w)
    print("result", got, left)
    """) == "result [b'socket', b'piped'] b' own'"


@pytest.mark.parametrize("when", ["before the first poll", "after"])
def test_an_epoll_set_that_takes_the_fd_sets_closed_number_is_left_alone(when):
    # Every epoll fd is the same inode to fstat, so only the set's own registrations tell
    # it from another epoll set that took its number (here a selector's): libuv watched the
    # selector's set in the fd set's place, or nothing, and the socket's reader never ran
    # (a hang).  Now the fd set starts again elsewhere, and the selector keeps its events.
    assert run_fdset_case(f"""
    import select

    async def scenario():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        x, y = socket.socketpair()
        stray, number = stray_number()
        first = watch(loop, a)
        assert lib.uvc_fdset_fd(loop._uv) == number
        if "{when}" == "after":
            await asyncio.sleep(0)
        stray.close()
        ep = select.epoll()
        assert ep.fileno() == number
        ep.register(x.fileno(), select.EPOLLIN)
        y.send(b"for the selector")
        b.send(b"socket")
        got = await first
        for _ in range(3):
            await asyncio.sleep(0)
        loop.remove_reader(a)
        a.close()
        b.close()
        return got, ep, x, y

    got, ep, x, y = uvcffi.run(scenario())
    ready = ep.poll(0) == [(x.fileno(), select.EPOLLIN)]  # its own, still there
    ep.close()
    x.close()
    y.close()
    print("result", got, ready)
    """) == "result b'socket' True"


# The listener's own duplicate of the listening socket closed by a stray close (a socket
# object closed twice, the duplicate taking its number in between).  The caller's socket is
# still open and listening, so the server goes on serving on a new duplicate of it.
LISTENER_PRELUDE = """
import faulthandler
faulthandler.dump_traceback_later(20, exit=True)  # a server that stops serving fails

FIRST = None

def settle(what):
    if FIRST is not None and not FIRST.done():
        FIRST.set_result(what)

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(data)
        settle(("served", data))

def errors_of(loop):
    errors = []
    def handler(loop, ctx):
        exc = ctx.get("exception")
        errors.append((ctx["message"], getattr(exc, "errno", None)))
        settle(("error", getattr(exc, "errno", None)))
    loop.set_exception_handler(handler)
    return errors

def stray_number():
    # A socket object whose fd the program closed with os.close() still thinks it owns the
    # number: closing it later closes whatever took the number in between.
    stray = socket.socket()
    number = stray.fileno()
    os.close(number)
    return stray, number

def assert_duplicate(sock, number):
    st, mine = os.fstat(number), os.fstat(sock.fileno())
    assert (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)  # the listener's duplicate

async def ping(loop, client, addr):
    # Connected without the loop, whose own fds (its fd set) would take a free number: the
    # kernel completes the connection into the listening socket's backlog.
    global FIRST
    FIRST = loop.create_future()
    client.connect(addr)
    client.sendall(b"ping")
    return await FIRST  # (the client stays open: its number is not freed for a reuse)

def listening_socket():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()
"""


def run_listener_case(body):
    return run_isolated(LISTENER_PRELUDE + textwrap.dedent(body))


@pytest.mark.parametrize("then", ["closed", "a pipe's", "a listening socket's"])
@pytest.mark.parametrize("when", ["before the first poll", "after an accept"])
def test_a_listener_whose_duplicate_was_closed_keeps_serving_and_leaves_the_number_alone(
        when, then):
    # libuv registers the listener's poll at its next poll and aborted the process when that
    # failed (EBADF); registered already, the registration outlived the number (the caller's
    # fd keeps the file open), and accept() on the number failed at every readiness (EBADF,
    # ENOTSOCK on the pipe that took it), the clients never served; a listening socket that
    # took the number had its clients accepted by the server.  Now the duplicate is cut off,
    # a new one listens, and the number's new file is never read, accepted from or closed.
    assert run_listener_case(f"""
    async def scenario():
        loop = asyncio.get_running_loop()
        errors = errors_of(loop)
        sock, addr = listening_socket()
        first, second = socket.socket(), socket.socket()  # made before: no reuse
        its_client = socket.socket()
        stray, number = stray_number()
        pipe = []
        other = []

        def stray_close():
            assert_duplicate(sock, number)
            stray.close()
            if "{then}" == "a pipe's":
                pipe.extend(os.pipe())
                assert pipe[0] == number
                os.write(pipe[1], b"the pipe's")  # readable: a listener on it would accept
            elif "{then}" == "a listening socket's":
                other.append(socket.socket())
                assert other[0].fileno() == number
                other[0].bind(("127.0.0.1", 0))
                other[0].listen()
                its_client.connect(other[0].getsockname())  # waits: not the server's to take

        if "{when}" == "before the first poll":
            server = await loop.create_server(Echo, sock=sock, start_serving=False)
            started = asyncio.ensure_future(server.start_serving())
            loop.call_soon(stray_close)  # the same turn: before the loop polls
            await started
            served = []
        else:
            server = await loop.create_server(Echo, sock=sock)
            served = [await ping(loop, first, addr)]
            stray_close()
        for _ in range(3):
            await asyncio.sleep(0)
        served.append(await ping(loop, second, addr))
        first.close()
        second.close()
        server.close()
        await server.wait_closed()
        return served, errors, pipe, other, its_client

    served, errors, pipe, other, its_client = uvcffi.run(scenario())
    left = None
    if pipe:
        left = os.read(pipe[0], 100)  # the loop closed: the pipe is still whole, unread
        os.close(pipe[0])
        os.close(pipe[1])
    if other:
        other[0].setblocking(False)
        conn, _ = other[0].accept()  # still in its backlog, and the socket still open
        left = conn.getpeername() == its_client.getsockname()
        conn.close()
        other[0].close()
    its_client.close()
    print("result", served[-1], errors, left)
    """) == "result ('served', b'ping') [] %r" % {
        "a pipe's": b"the pipe's", "a listening socket's": True}.get(then)


def test_a_paused_listener_whose_duplicate_was_closed_resumes_on_a_new_one():
    # Out of fds the listener stops watching and resumes a second later (asyncio's
    # ACCEPT_RETRY_DELAY): libuv aborted the process at that resume (EPOLL_CTL_ADD of the
    # closed duplicate).  Now a new duplicate listens and the waiting client is served.
    assert run_listener_case("""
    import resource
    async def main():
        loop = asyncio.get_running_loop()
        errors = errors_of(loop)
        sock, addr = listening_socket()
        client = socket.socket()
        stray, number = stray_number()
        server = await loop.create_server(Echo, sock=sock)
        assert_duplicate(sock, number)
        global FIRST
        FIRST = loop.create_future()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        fillers = []
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        try:
            while True:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        client.connect(addr)  # the kernel completes it; accept() meets EMFILE
        client.sendall(b"ping")
        while not errors:
            await asyncio.sleep(0.01)
        stray.close()  # while paused: the resume registers the duplicate again
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        FIRST = loop.create_future()
        served = await FIRST
        client.close()
        server.close()
        await server.wait_closed()
        return served, errors
    """) == "result (('served', b'ping'), [('socket.accept() out of system resource', 24)])"


def test_a_listener_whose_duplicate_and_socket_were_both_closed_stops_with_the_error():
    # Nothing is left to listen on: the error is logged as an accept error (asyncio's
    # message) and the server stops accepting; its close() closes no other file.
    assert run_listener_case("""
    async def scenario():
        loop = asyncio.get_running_loop()
        errors = errors_of(loop)
        sock, addr = listening_socket()
        stray, number = stray_number()
        server = await loop.create_server(Echo, sock=sock, start_serving=False)

        def close_both():
            assert_duplicate(sock, number)
            stray.close()
            os.close(sock.fileno())

        started = asyncio.ensure_future(server.start_serving())
        loop.call_soon(close_both)  # the same turn: before the loop polls
        await started
        for _ in range(3):
            await asyncio.sleep(0)
        other = os.pipe()  # takes the numbers: neither is the server's to close
        server.close()
        await server.wait_closed()
        return errors, other

    errors, other = uvcffi.run(scenario())
    os.write(other[1], b"still open")
    print("result", errors, os.read(other[0], 100))
    """) == "result [('Error on accepting a connection', 9)] b'still open'"
