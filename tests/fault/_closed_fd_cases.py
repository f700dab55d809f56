"""The cases of scenario 8 (fds closed under watched operations), one per process.

    python _closed_fd_cases.py LOOP CASE PHASE     LOOP: uvcffi or asyncio
    python _closed_fd_cases.py LOOP all            every case, one process each: a table

prints one JSON object: what the operation did after its fd was closed ("outcome"), and
the checks that follow.  test_fault_closed_fds.py runs each case in its own process, so an
abort of the interpreter (libuv calls abort() when epoll_ctl fails on an fd it was given)
fails one test instead of killing pytest.

An operation is started on a socket (or fd, or pipe), and the socket object is closed
(``os.close`` for the int fds of add_reader/add_writer):

- ``before``: before the loop polls the fd: in the iteration that started the operation
  (sock_*: its task has run up to its wait; transports: in connection_made, with
  reading starting right after it, as asyncio does; add_*: right after the call);
- ``polling``: from another thread while the loop is blocked in its poll, watching it;
- ``after``: once the operation has completed (transports: once data went through);
- ``closed`` (add_reader/add_writer only): before the call, which must raise OSError.

Then the peer acts (sends data, reads, connects, accepts a queued connection) and the
operation is given ``BOUND`` seconds to end.  The outcomes:

- ``completed``: it ended as if the close had waited for it (uvloop defers the close of a
  socket an operation is using until the operation ends: a pending sock_recv returns data
  the peer sends later, sock_connect completes), and what it returned is right;
- ``exception``: it ended with an exception (``detail`` names it);
- ``hang``: it did not end within BOUND seconds although the loop kept running (the fd
  was closed under the loop's watch: nothing is reported any more);
- ``wrong``: it ended with a wrong result.

And the checks every case ends with:

- ``loop_ok``: the loop still runs a timer and a fresh socketpair echo;
- ``spare_ok``: a socketpair made right after the close (once the loop has polled, so it
  likely got the closed fd's number) still works at the end: nothing closed it by mistake;
- ``spare_clean``: and no byte meant for the closed fd reached it;
- ``again_ok``: the same operation works on a new fd (likely with the old number too);
- ``stalls``: the watchdog's record (see _fault.Watchdog).
"""
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _fault import Watchdog  # noqa: E402

BOUND = 5.0
PHASES = ("before", "polling", "after")
ADD_PHASES = ("closed",) + PHASES + ("before_reused",)


def exc_name(exc):
    return type(exc).__name__


async def outcome_of(aw, check=None):
    """(outcome, detail) of awaiting ``aw`` for at most BOUND seconds."""
    try:
        result = await asyncio.wait_for(aw, BOUND)
    except asyncio.TimeoutError:
        return "hang", None
    except Exception as exc:
        return "exception", exc_name(exc)
    if check is not None and not check(result):
        return "wrong", repr(result)[:200]
    return "completed", None


async def close_from_thread(close):
    """Close from another thread while the loop is blocked in its poll (it has nothing to
    do but wait for its timers meanwhile)."""
    thread = threading.Thread(target=lambda: (time.sleep(0.03), close()))
    thread.start()
    await asyncio.sleep(0.1)
    thread.join()


async def start_then_close(phase, start, close):
    """Start the operation (``start()`` returns an awaitable) as a task, and close its fd
    per ``phase`` ("before" or "polling"); return the task."""
    task = asyncio.ensure_future(start())
    await asyncio.sleep(0)  # the task's first step runs: it is waiting for the fd now ...
    assert not task.done(), "the operation did not wait"
    if phase == "before":
        close()  # ... and this runs in the same iteration: the loop has not polled since
        await asyncio.sleep(0)  # now it polls: the fd is closed, its number still free
    else:
        await asyncio.sleep(0.05)  # polled a few times, nothing to report
        assert not task.done(), "the operation did not wait"
        await close_from_thread(close)
    return task


def send_quietly(sock, data):
    try:
        sock.send(data)
    except OSError:
        pass


def tcp_pair():
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        a = socket.create_connection(lsock.getsockname())
        b, _ = lsock.accept()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


class Spare:
    """A socketpair made right after a close, so it likely takes the closed fd's number;
    ``check()`` at the end tells whether it survived (nothing closed it by mistake) and
    whether bytes meant for the closed fd reached it (blocking send/recv, no loop)."""

    def __init__(self):
        self.a, self.b = socket.socketpair()
        self.pending = b""  # what each end has waiting from make_ready()

    def make_ready(self):
        """Make both ends readable (and they are writable)."""
        self.a.send(b"r")
        self.b.send(b"r")
        self.pending = b"r"

    def check(self):
        """(alive, clean)."""
        clean = True
        try:
            for s in (self.a, self.b):
                s.setblocking(False)
                try:
                    clean = clean and s.recv(1 << 20) == self.pending
                except BlockingIOError:
                    clean = clean and not self.pending
                s.setblocking(True)
                s.settimeout(2)
            self.a.sendall(b"spare")
            return self.b.recv(100) == b"spare", clean
        except OSError:
            return False, clean
        finally:
            for s in (self.a, self.b):
                try:
                    s.close()
                except OSError:  # its fd was closed by someone else meanwhile
                    pass


async def loop_works(loop):
    """A timer, and a socketpair echo through sock_sendall/sock_recv."""
    await asyncio.sleep(0.01)
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    with a, b:
        await asyncio.wait_for(loop.sock_sendall(a, b"ping"), BOUND)
        return await asyncio.wait_for(loop.sock_recv(b, 100), BOUND) == b"ping"


# ---------------------------------------------------------------- sock_* methods

async def case_sock_recv(loop, phase, into=False):
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    buf = bytearray(100)

    def start():
        return loop.sock_recv_into(a, buf) if into else loop.sock_recv(a, 100)

    def check(result):
        got = bytes(buf[:result]) if into else result
        return got == expected

    if phase == "after":
        expected = b"first"
        b.send(b"first")
        res = await outcome_of(start(), check)
        a.close()
        spare = Spare()
        send_quietly(b, b"later")  # to a closed socket: nobody reads it
        await asyncio.sleep(0.05)
    else:
        expected = b"late data"
        task = await start_then_close(phase, start, a.close)
        spare = Spare()
        send_quietly(b, b"late data")  # EPIPE if the socket is really closed
        res = await outcome_of(task, check)
    b.close()
    # The same operation on a new socket works.
    c, d = socket.socketpair()
    c.setblocking(False)
    with c, d:
        d.send(b"again")
        buf = bytearray(100)
        r = await asyncio.wait_for(
            loop.sock_recv_into(c, buf) if into else loop.sock_recv(c, 100), BOUND)
        again = (bytes(buf[:r]) if into else r) == b"again"
    return res, spare, again


async def case_sock_recv_into(loop, phase):
    return await case_sock_recv(loop, phase, into=True)


def fill(sock):
    """Fill ``sock``'s send buffer (and the peer's receive buffer); return the count."""
    n = 0
    chunk = b"f" * 65536
    while True:
        try:
            n += sock.send(chunk)
        except BlockingIOError:
            return n


async def drain(loop, sock):
    """Read ``sock`` to EOF (or an error); return the bytes."""
    data = bytearray()
    while True:
        try:
            chunk = await loop.sock_recv(sock, 1 << 20)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def case_sock_sendall(loop, phase):
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    payload = bytes(range(256)) * 4096  # 1 MiB, more than the buffers take
    filled = fill(a)

    def start():
        return loop.sock_sendall(a, payload)

    expected = b"f" * filled + payload
    if phase == "after":
        task = asyncio.ensure_future(start())
        received = await asyncio.wait_for(_read_exactly(loop, b, len(expected)), BOUND)
        res = await outcome_of(task)
        if res[0] == "completed" and received != expected:
            res = ("wrong", "the peer got other bytes")
        a.close()
        spare = Spare()
    else:
        task = await start_then_close(phase, start, a.close)
        spare = Spare()
        reader = asyncio.ensure_future(drain(loop, b))
        res = await outcome_of(task)
        received = await asyncio.wait_for(reader, BOUND) if res[0] != "hang" else None
        if res[0] == "completed" and received != expected:
            res = ("wrong", f"the peer got {len(received)} of {len(expected)} bytes")
        if not reader.done():
            reader.cancel()
    b.close()
    c, d = socket.socketpair()
    c.setblocking(False)
    d.setblocking(False)
    with c, d:
        fill(c)
        t = asyncio.ensure_future(loop.sock_sendall(c, b"again"))
        await drain_some(loop, d)
        await asyncio.wait_for(t, BOUND)
        again = True
    return res, spare, again


async def _read_exactly(loop, sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = await loop.sock_recv(sock, 1 << 20)
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def drain_some(loop, sock):
    """Read what is buffered on ``sock`` (so its peer can send again)."""
    while True:
        try:
            if not await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 0.05):
                return
        except asyncio.TimeoutError:
            return


def full_listener():
    """A listening socket whose accept queue is full: a connect to it stays pending (its
    SYN is dropped and sent again after 1 s) until ``accept_one`` makes room."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    fillers = []
    # Fill the queue: connects complete while there is room, then stay pending.
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(lsock.getsockname())
        fillers.append(s)
    time.sleep(0.05)
    return lsock, fillers


async def case_sock_connect(loop, phase):
    if phase == "after":
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        fillers = []
        s = socket.socket()
        s.setblocking(False)
        res = await outcome_of(loop.sock_connect(s, lsock.getsockname()))
        s.close()
        spare = Spare()
    else:
        lsock, fillers = full_listener()
        s = socket.socket()
        s.setblocking(False)
        task = await start_then_close(
            phase, lambda: loop.sock_connect(s, lsock.getsockname()), s.close)
        spare = Spare()
        # Make room in the accept queue: the retransmitted SYN then completes the connect.
        lsock.setblocking(False)
        accepter = asyncio.ensure_future(_accept_all(lsock))
        res = await outcome_of(task)
        accepter.cancel()
    for f in fillers:
        f.close()
    # The same operation on a new socket works.
    c = socket.socket()
    c.setblocking(False)
    with c:
        lsock.listen(16)
        await asyncio.wait_for(loop.sock_connect(c, lsock.getsockname()), BOUND)
        again = True
    lsock.close()
    return res, spare, again


async def _accept_all(lsock):
    conns = []
    try:
        while True:
            try:
                conns.append(lsock.accept()[0])
            except BlockingIOError:
                await asyncio.sleep(0.01)
    finally:
        for c in conns:
            c.close()


async def case_sock_connect_refused(loop, phase):
    # A bound socket that does not listen: the connect is answered with a RST at once.
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    address = target.getsockname()
    s = socket.socket()
    s.setblocking(False)
    if phase == "after":
        res = await outcome_of(loop.sock_connect(s, address))
        s.close()
        spare = Spare()
    else:
        task = asyncio.ensure_future(loop.sock_connect(s, address))
        if phase == "before":
            await asyncio.sleep(0)  # the task's first step: connect() called, waiting
            s.close()
            await asyncio.sleep(0)  # the loop polls
        else:
            # The refusal comes before any poll can be caught waiting: close it from a
            # thread during the next poll anyway, whatever state the connect is in.
            await close_from_thread(s.close)
        spare = Spare()
        res = await outcome_of(task)
    target.close()
    c = socket.socket()
    c.setblocking(False)
    with c:
        try:
            await asyncio.wait_for(loop.sock_connect(c, address), BOUND)
            again = False
        except ConnectionRefusedError:
            again = True
    # A refused connect is the expected end: report it as "completed" when it is that.
    if res == ("exception", "ConnectionRefusedError"):
        res = ("completed", "refused")
    return res, spare, again


async def case_sock_accept(loop, phase):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    lsock.setblocking(False)
    address = lsock.getsockname()
    client = socket.socket()
    client.setblocking(False)

    def check(result):
        conn, _ = result
        conn.close()
        return True

    if phase == "after":
        task = asyncio.ensure_future(loop.sock_accept(lsock))
        await asyncio.sleep(0.01)
        client.connect_ex(address)
        res = await outcome_of(task, check)
        lsock.close()
        spare = Spare()
    else:
        task = await start_then_close(phase, lambda: loop.sock_accept(lsock), lsock.close)
        spare = Spare()
        client.connect_ex(address)  # refused if the listener is really gone
        res = await outcome_of(task, check)
    client.close()
    l2 = socket.socket()
    l2.bind(("127.0.0.1", 0))
    l2.listen()
    l2.setblocking(False)
    with l2:
        c = socket.create_connection(l2.getsockname())
        conn, _ = await asyncio.wait_for(loop.sock_accept(l2), BOUND)
        conn.close()
        c.close()
        again = True
    return res, spare, again


# ---------------------------------------------------------------- add_reader / add_writer

async def case_add_fd(loop, phase, writer=False):
    add = loop.add_writer if writer else loop.add_reader
    remove = loop.remove_writer if writer else loop.remove_reader
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    fd = w if writer else r
    other = r if writer else w
    calls = {"before close": 0, "after close": 0}
    closed = [False]
    fired = loop.create_future()

    def callback():
        calls["after close" if closed[0] else "before close"] += 1
        if not fired.done():
            fired.set_result(None)

    def close():
        os.close(fd)
        # Callbacks from events the loop collected before the close may still run in this
        # iteration, on asyncio's loop as on uvcffi: count from the next one on.
        loop.call_soon_threadsafe(closed.__setitem__, 0, True)

    detail = None
    if phase == "closed":
        close()
        try:
            add(fd, callback)
        except OSError as exc:
            res = ("completed", exc_name(exc))  # refused, as asyncio's selector does
        except Exception as exc:
            res = ("exception", exc_name(exc))
        else:
            res = ("wrong", "add_* accepted a closed fd")
            remove(fd)
        spare = Spare()
    else:
        if writer and phase != "after":
            _fill_pipe(w)  # not writable: the loop waits for it
        add(fd, callback)
        if phase == "before":
            close()
            await asyncio.sleep(0)  # the loop polls: the fd is closed, its number free
            spare = Spare()
        elif phase == "before_reused":
            close()
            spare = Spare()  # takes the closed fd's number before the loop polls
            spare.make_ready()
            await asyncio.sleep(0)
        elif phase == "polling":
            await asyncio.sleep(0.05)
            await close_from_thread(close)
            spare = Spare()
        else:
            if not writer:
                os.write(w, b"x")
            await asyncio.wait_for(fired, BOUND)
            close()  # still watched: the callback has run
            spare = Spare()
        await asyncio.sleep(0.05)  # the loop goes on polling
        try:
            removed = remove(fd)
        except Exception as exc:
            res = ("exception", "remove: " + exc_name(exc))
        else:
            if calls["after close"]:
                # The fd's number now belongs to the spare socket: the callback was run
                # for a file it never watched (asyncio's selector registered the pipe
                # itself, which left the epoll set with its close).
                res = ("wrong", f"the callback ran {calls['after close']} times after the close")
            else:
                res = ("completed", None)
            detail = f"callback ran {calls}, remove_* returned {removed!r}"
    os.close(other)
    # A new pipe (its fds likely the closed one's numbers) is watched and heard.
    r2, w2 = os.pipe()
    os.set_blocking(r2, False)
    os.set_blocking(w2, False)
    heard = loop.create_future()
    fd2 = w2 if writer else r2
    add(fd2, lambda: heard.done() or heard.set_result(None))
    if not writer:
        os.write(w2, b"y")
    try:
        await asyncio.wait_for(heard, BOUND)
        again = True
    except asyncio.TimeoutError:
        again = False
    remove(fd2)
    os.close(r2)
    os.close(w2)
    if detail is not None:
        res = (res[0], (res[1] + "; " if res[1] else "") + detail)
    return res, spare, again


def _fill_pipe(w):
    try:
        while True:
            os.write(w, b"p" * 65536)
    except BlockingIOError:
        pass


async def case_add_reader(loop, phase):
    return await case_add_fd(loop, phase, writer=False)


async def case_add_writer(loop, phase):
    return await case_add_fd(loop, phase, writer=True)


# ---------------------------------------------------------------- transports

class Recorder(asyncio.Protocol):
    """Records what a transport reports; ``on_made`` runs inside connection_made."""

    def __init__(self, loop, on_made=None):
        self.loop = loop
        self.on_made = on_made
        self.data = bytearray()
        self.datagrams = []
        self.got = loop.create_future()  # the first data
        self.lost = loop.create_future()
        self.errors = []

    def connection_made(self, transport):
        self.transport = transport
        if self.on_made is not None:
            self.on_made()

    def data_received(self, data):
        self.data += data
        if not self.got.done():
            self.got.set_result(None)

    def datagram_received(self, data, addr):
        self.datagrams.append(data)
        if not self.got.done():
            self.got.set_result(None)

    def error_received(self, exc):
        self.errors.append(exc)

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


async def lost_outcome(proto, expected):
    """The outcome of a stream transport whose fd was closed, once the peer has sent
    ``expected`` and EOF: connection_lost(None) with the data = completed."""
    try:
        exc = await asyncio.wait_for(asyncio.shield(proto.lost), BOUND)
    except asyncio.TimeoutError:
        return "hang", f"got {bytes(proto.data)!r}, no connection_lost"
    if exc is not None:
        return "exception", exc_name(exc)
    if bytes(proto.data) != expected:
        return "wrong", f"got {bytes(proto.data)!r}"
    return "completed", None


async def case_stream_sock(loop, phase, accepted):
    """create_connection(sock=) or connect_accepted_socket(sock=) on one end of a TCP pair."""
    a, b = tcp_pair()
    b.setblocking(True)
    b.settimeout(BOUND)
    closer = a.close if phase == "before" else None
    proto = Recorder(loop, on_made=closer)
    if accepted:
        transport, _ = await loop.connect_accepted_socket(lambda: proto, a)
    else:
        transport, _ = await loop.create_connection(lambda: proto, sock=a)
    # "before": closed in connection_made; this runs after the loop's next poll.
    expected = b"late"
    if phase == "before":
        spare = Spare()
    elif phase == "polling":
        await asyncio.sleep(0.05)
        await close_from_thread(a.close)
        spare = Spare()
    else:
        b.sendall(b"first ")
        await asyncio.wait_for(asyncio.shield(proto.got), BOUND)
        a.close()
        spare = Spare()
        expected = b"first late"
    await asyncio.sleep(0)
    try:
        b.sendall(b"late")
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    res = await lost_outcome(proto, expected)
    transport.close()
    await asyncio.sleep(0.05)
    b.close()
    # The same on a new pair.
    c, d = tcp_pair()
    p2 = Recorder(loop)
    if accepted:
        t2, _ = await loop.connect_accepted_socket(lambda: p2, c)
    else:
        t2, _ = await loop.create_connection(lambda: p2, sock=c)
    d.send(b"again")
    d.shutdown(socket.SHUT_WR)
    again = await lost_outcome(p2, b"again") == ("completed", None)
    t2.close()
    d.close()
    return res, spare, again


async def case_create_connection_sock(loop, phase):
    return await case_stream_sock(loop, phase, accepted=False)


async def case_connect_accepted_socket(loop, phase):
    return await case_stream_sock(loop, phase, accepted=True)


async def echo_client(loop, address):
    """Connect, send, read the echo: True / False, or the exception's name."""
    c = socket.socket()
    c.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(c, address), BOUND)
        await loop.sock_sendall(c, b"hello")
        c.shutdown(socket.SHUT_WR)
        return await asyncio.wait_for(drain(loop, c), BOUND) == b"hello"
    except asyncio.TimeoutError:
        return "timeout"
    except OSError as exc:
        return exc_name(exc)
    finally:
        c.close()


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        return False


async def case_create_server_sock(loop, phase):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    address = lsock.getsockname()
    server = await loop.create_server(Echo, sock=lsock)
    if phase == "before":
        lsock.close()  # create_server returned in this iteration: not polled yet
        await asyncio.sleep(0)  # the loop polls
    elif phase == "polling":
        await asyncio.sleep(0.05)
        await close_from_thread(lsock.close)
    else:
        if await echo_client(loop, address) is not True:
            return ("wrong", "the server did not echo before the close"), Spare(), False
        lsock.close()
    spare = Spare()
    got = await echo_client(loop, address)
    if got is True:
        res = ("completed", None)
    elif got == "ConnectionRefusedError":
        res = ("exception", "the client was refused: the listener is gone")
    elif got == "timeout":
        res = ("hang", "a client connected and got no echo")
    else:
        res = ("wrong", repr(got))
    try:
        server.close()
        await asyncio.wait_for(server.wait_closed(), BOUND)
    except asyncio.TimeoutError:
        res = ("hang", "server.wait_closed()")
    except Exception as exc:
        res = (res[0], f"{res[1]}; server.close() raised {exc_name(exc)}")
    l2 = socket.socket()
    l2.bind(("127.0.0.1", 0))
    l2.listen()
    s2 = await loop.create_server(Echo, sock=l2)
    again = await echo_client(loop, l2.getsockname()) is True
    s2.close()
    await asyncio.wait_for(s2.wait_closed(), BOUND)
    return res, spare, again


async def case_create_datagram_endpoint_sock(loop, phase):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    address = s.getsockname()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closer = s.close if phase == "before" else None
    proto = Recorder(loop, on_made=closer)
    transport, _ = await loop.create_datagram_endpoint(lambda: proto, sock=s)
    if phase == "before":
        spare = Spare()
    elif phase == "polling":
        await asyncio.sleep(0.05)
        await close_from_thread(s.close)
        spare = Spare()
    elif phase == "after":
        peer.sendto(b"first", address)
        await asyncio.wait_for(asyncio.shield(proto.got), BOUND)
        s.close()
        spare = Spare()
        proto.got = loop.create_future()
    await asyncio.sleep(0)
    peer.sendto(b"late", address)
    done, _ = await asyncio.wait([proto.got, proto.lost], timeout=BOUND,
                                 return_when=asyncio.FIRST_COMPLETED)
    if proto.got in done:
        if proto.datagrams[-1] == b"late":
            res = ("completed", None)
        else:
            res = ("wrong", repr(proto.datagrams))
    elif proto.lost in done:
        exc = proto.lost.result()
        res = ("exception", exc_name(exc) if exc is not None else "connection_lost(None)")
    elif proto.errors:
        res = ("exception", "error_received: " + exc_name(proto.errors[0]))
    else:
        res = ("hang", "no datagram, no connection_lost")
    transport.close()
    await asyncio.sleep(0.05)
    peer.close()
    s2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s2.bind(("127.0.0.1", 0))
    p2 = Recorder(loop)
    t2, _ = await loop.create_datagram_endpoint(lambda: p2, sock=s2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as q:
        q.sendto(b"again", s2.getsockname())
        try:
            await asyncio.wait_for(asyncio.shield(p2.got), BOUND)
            again = p2.datagrams == [b"again"]
        except asyncio.TimeoutError:
            again = False
    t2.close()
    return res, spare, again


# ---------------------------------------------------------------- pipes

async def case_connect_read_pipe(loop, phase):
    r, w = os.pipe()
    rf = open(r, "rb", buffering=0)
    closer = rf.close if phase == "before" else None
    proto = Recorder(loop, on_made=closer)
    transport, _ = await loop.connect_read_pipe(lambda: proto, rf)
    expected = b"late"
    if phase == "before":
        spare = Spare()
    elif phase == "polling":
        await asyncio.sleep(0.05)
        await close_from_thread(rf.close)
        spare = Spare()
    elif phase == "after":
        os.write(w, b"first ")
        await asyncio.wait_for(asyncio.shield(proto.got), BOUND)
        rf.close()
        spare = Spare()
        expected = b"first late"
    await asyncio.sleep(0)
    try:
        os.write(w, b"late")
    except BrokenPipeError:  # the read end is really closed
        pass
    os.close(w)
    res = await lost_outcome(proto, expected)
    transport.close()
    await asyncio.sleep(0.05)
    r2, w2 = os.pipe()
    p2 = Recorder(loop)
    t2, _ = await loop.connect_read_pipe(lambda: p2, open(r2, "rb", buffering=0))
    os.write(w2, b"again")
    os.close(w2)
    again = await lost_outcome(p2, b"again") == ("completed", None)
    t2.close()
    return res, spare, again


async def case_connect_write_pipe(loop, phase):
    r, w = os.pipe()
    os.set_blocking(r, False)
    wf = open(w, "wb", buffering=0)
    closer = wf.close if phase == "before" else None
    proto = Recorder(loop, on_made=closer)
    transport, _ = await loop.connect_write_pipe(lambda: proto, wf)
    expected = b"late"
    if phase == "before":
        spare = Spare()
    elif phase == "polling":
        await asyncio.sleep(0.05)
        await close_from_thread(wf.close)
        spare = Spare()
    elif phase == "after":
        transport.write(b"first ")
        got = await asyncio.wait_for(_read_pipe(r, 6), BOUND)
        if got != b"first ":
            return ("wrong", repr(got)), Spare(), False
        wf.close()
        spare = Spare()
    await asyncio.sleep(0)
    transport.write(b"late")
    transport.close()  # flushes, then closes the pipe: the reader sees EOF
    try:
        exc = await asyncio.wait_for(asyncio.shield(proto.lost), BOUND)
    except asyncio.TimeoutError:
        res = ("hang", "no connection_lost")
    else:
        if exc is not None:
            res = ("exception", exc_name(exc))
        else:
            got = await asyncio.wait_for(_read_pipe(r, None), BOUND)
            res = ("completed", None) if got == expected else ("wrong", f"the reader got {got!r}")
    os.close(r)
    r2, w2 = os.pipe()
    os.set_blocking(r2, False)
    p2 = Recorder(loop)
    t2, _ = await loop.connect_write_pipe(lambda: p2, open(w2, "wb", buffering=0))
    t2.write(b"again")
    t2.close()
    again = await asyncio.wait_for(_read_pipe(r2, None), BOUND) == b"again"
    os.close(r2)
    return res, spare, again


async def _read_pipe(r, n):
    """Read ``n`` bytes (None: to EOF) from the non-blocking pipe fd ``r``, polling.
    Stops early (with what it has) at EOF or an error."""
    data = b""
    while n is None or len(data) < n:
        try:
            chunk = os.read(r, 65536)
        except BlockingIOError:
            await asyncio.sleep(0.005)
            continue
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data


# ---------------------------------------------------------------- running a case

CASES = {
    "sock_recv": PHASES,
    "sock_recv_into": PHASES,
    "sock_sendall": PHASES,
    "sock_connect": PHASES,
    "sock_connect_refused": PHASES,
    "sock_accept": PHASES,
    "add_reader": ADD_PHASES,
    "add_writer": ADD_PHASES,
    "connect_read_pipe": PHASES,
    "connect_write_pipe": PHASES,
    "create_connection_sock": PHASES,
    "connect_accepted_socket": PHASES,
    "create_server_sock": PHASES,
    "create_datagram_endpoint_sock": PHASES,
}


def new_loop(kind):
    if kind == "uvcffi":
        import uvcffi

        return uvcffi.new_event_loop()
    return asyncio.SelectorEventLoop()


def run_case(kind, case, phase):
    loop = new_loop(kind)
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(
        f"{ctx.get('message')}: {ctx.get('exception')!r}"))
    fn = globals()["case_" + case]

    async def main():
        async with Watchdog(stall_after=5.0) as wd:
            res, spare, again = await fn(loop, phase)
            ok = await loop_works(loop)
        return res, spare, again, ok, wd

    try:
        res, spare, again, ok, wd = loop.run_until_complete(main())
        alive, clean = spare.check()
        report = {
            "outcome": res[0], "detail": res[1], "loop_ok": ok, "spare_ok": alive,
            "spare_clean": clean, "again_ok": again, "stalls": wd.stalls,
        }
    except BaseException:  # the case itself broke: say where
        import traceback

        report = {"outcome": "error", "detail": traceback.format_exc()[-2000:]}
    report["errors"] = errors[:5]
    try:
        loop.close()
    except BaseException as exc:
        report["close"] = repr(exc)
    return report


def run_in_subprocess(kind, case, phase, timeout=60):
    """Run one case in a new interpreter: (returncode or "timeout", report or None,
    stderr tail)."""
    cmd = [sys.executable, os.path.abspath(__file__), kind, case, phase]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr or ""
        if isinstance(err, bytes):
            err = err.decode(errors="replace")
        return "timeout", None, err[-2000:]
    report = None
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            report = json.loads(line)
    return p.returncode, report, p.stderr[-2000:]


def main(argv):
    kind = argv[1]
    if argv[2] == "all":
        for case, phases in CASES.items():
            for phase in phases:
                rc, report, err = run_in_subprocess(kind, case, phase)
                if report is None:
                    line = f"process ended: {rc}"
                else:
                    line = ", ".join(f"{k}={v}" for k, v in report.items()
                                     if v not in (None, [], True))
                print(f"{kind:7} {case:30} {phase:8} rc={rc}  {line}", flush=True)
        return 0
    print(json.dumps(run_case(kind, argv[2], argv[3])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
