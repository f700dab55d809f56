"""Datagram endpoints: UDP (IPv4, IPv6) on libuv, AF_UNIX on the socket; asyncio's rules."""
import asyncio
import errno
import logging
import os
import select
import socket
import sys
import tempfile

import pytest
from _helpers import socket_refusal

from uvcffi._uv import lib
from uvcffi.transports import datagram as dg_module
from uvcffi.transports._base import LOG_THRESHOLD_FOR_CONNLOST_WRITES

HAS_IPV6 = socket.has_ipv6
try:
    socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
except OSError:
    HAS_IPV6 = False

needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 on this machine")


def run(loop, coro, timeout=10):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


class Proto(asyncio.DatagramProtocol):
    """Records every callback; echoes datagrams that start with b'ping'."""

    def __init__(self):
        self.events = []
        self.received = asyncio.Queue()
        self.errors = asyncio.Queue()
        self.lost = asyncio.get_event_loop().create_future()
        self.transport = None

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport

    def datagram_received(self, data, addr):
        self.events.append("data")
        if data.startswith(b"ping"):
            self.transport.sendto(b"pong" + data[4:], addr)
        self.received.put_nowait((data, addr))

    def error_received(self, exc):
        self.events.append("error")
        self.errors.put_nowait(exc)

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


async def endpoint(**kw):
    return await asyncio.get_running_loop().create_datagram_endpoint(Proto, **kw)


async def close_all(*transports):
    for t in transports:
        t.close()
    for t in transports:
        await t.get_protocol().lost if t.get_protocol() else None


@pytest.mark.parametrize(
    "host", ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)]
)
def test_echo_unconnected_and_connected(loop, host):
    async def main():
        st, sp = await endpoint(local_addr=(host, 0))
        assert isinstance(st, asyncio.DatagramTransport)
        assert isinstance(st, asyncio.Transport)
        server_addr = st.get_extra_info("sockname")
        assert st.get_extra_info("peername") is None
        # unconnected client: answers come from the server's address, as recvfrom gives it
        ut, up = await endpoint(local_addr=(host, 0))
        ut.sendto(b"ping1", server_addr)
        data, addr = await up.received.get()
        assert (data, addr) == (b"pong1", server_addr)
        data, addr = await sp.received.get()
        assert data == b"ping1" and addr == ut.get_extra_info("sockname")
        # connected client: sendto without address, peername known
        ct, cp = await endpoint(remote_addr=server_addr[:2])
        assert ct.get_extra_info("peername") == server_addr
        ct.sendto(b"ping2")
        ct.sendto(bytearray(b"ping3"))
        ct.sendto(memoryview(b"xping4")[1:])
        got = [(await cp.received.get())[0] for _ in range(3)]
        assert got == [b"pong2", b"pong3", b"pong4"]
        sock = ct.get_extra_info("socket")
        assert sock.family == (socket.AF_INET if host == "127.0.0.1" else socket.AF_INET6)
        await close_all(st, ut, ct)
        assert sp.events[0] == "made" and sp.events[-1] == "lost"
        assert cp.events == ["made", "data", "data", "data", "lost"]
        assert await cp.lost is None

    run(loop, main())


def test_empty_and_large_datagrams(loop):
    async def main():
        st, sp = await endpoint(local_addr=("127.0.0.1", 0))
        ct, cp = await endpoint(remote_addr=st.get_extra_info("sockname"))
        ct.sendto(b"")  # asyncio 3.11 sends nothing for empty data
        big = os.urandom(65507)  # the largest IPv4 UDP payload
        ct.sendto(big)
        data, _ = await sp.received.get()
        assert data == big
        # several datagrams per loop iteration (batches the kernel's receive buffer
        # holds: UDP may drop beyond it): none cut, none lost, order kept
        for _batch in range(10):
            for i in range(10):
                ct.sendto(b"%d:" % i + b"x" * 8000)
            for i in range(10):
                data, _ = await sp.received.get()
                assert data == b"%d:" % i + b"x" * 8000
        await close_all(st, ct)

    run(loop, main())


def test_oversized_datagram_goes_to_error_received(loop):
    async def main():
        st, sp = await endpoint(local_addr=("127.0.0.1", 0))
        addr = st.get_extra_info("sockname")
        ut, up = await endpoint(family=socket.AF_INET)
        ut.sendto(b"x" * 70000, addr)
        exc = await up.errors.get()
        assert isinstance(exc, OSError) and exc.errno == errno.EMSGSIZE
        ut.sendto(b"ping", addr)  # the transport lives on
        assert (await up.received.get())[0] == b"pong"
        await close_all(st, ut)

    run(loop, main())


def test_connection_refused_keeps_transport(loop):
    async def main():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()
        s.close()
        ct, cp = await endpoint(remote_addr=dead)
        ct.sendto(b"hello")
        exc = await cp.errors.get()
        assert isinstance(exc, ConnectionRefusedError)
        assert not ct.is_closing()
        ct.sendto(b"again")
        assert isinstance(await cp.errors.get(), ConnectionRefusedError)
        await close_all(ct)
        assert cp.events[-1] == "lost"

    run(loop, main())


def test_bad_input(loop):
    async def main():
        st, sp = await endpoint(local_addr=("127.0.0.1", 0))
        addr = st.get_extra_info("sockname")
        ct, cp = await endpoint(remote_addr=addr)
        with pytest.raises(TypeError, match="bytes-like"):
            ct.sendto("text")
        with pytest.raises(TypeError):
            ct.sendto(None)
        with pytest.raises(ValueError, match="Invalid address"):
            ct.sendto(b"x", ("127.0.0.1", 1))
        # Empty data is dropped before the address is looked at (asyncio 3.11, PyPy's
        # 3.9): no error for an address a connected transport would refuse.
        for empty in (b"", bytearray(), memoryview(b"")):
            ct.sendto(empty, ("127.0.0.1", 1))
        with pytest.raises(TypeError):
            ct.sendto(0, ("127.0.0.1", 1))  # the type is checked first, empty or not
        ct.sendto(b"x", addr)  # the connected address itself is fine
        assert (await sp.received.get())[0] == b"x"
        # an IPv6 address on an IPv4 socket: socket.sendto's gaierror, in error_received
        ut, up = await endpoint(family=socket.AF_INET)
        ut.sendto(b"x", ("::1", 5))
        assert isinstance(await up.errors.get(), OSError)
        assert not ut.is_closing()
        await close_all(st, ct, ut)

    run(loop, main())


def test_malformed_address_is_fatal_as_in_asyncio(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        ut, up = await endpoint(family=socket.AF_INET)
        ut.sendto(b"x", "not-a-tuple")
        assert ut.is_closing()
        exc = await up.lost
        assert isinstance(exc, TypeError)
        assert contexts and contexts[0]["message"] == "Fatal write error on datagram transport"
        assert contexts[0]["transport"] is ut

        ut, up = await endpoint(family=socket.AF_INET)
        ut.sendto(b"x", ("127.0.0.1", 70000))
        assert isinstance(await up.lost, OverflowError)

    run(loop, main())


@pytest.mark.parametrize(
    "host,port",
    [("127.0.0.1", 70000), ("127.0.0.1", -1), ("127.0.0.1", "70000"),
     pytest.param("::1", 71091, marks=needs_ipv6)],
)
def test_endpoint_port_out_of_range(anyloop, host, port):
    # asyncio binds/connects the IP address as it is: the socket refuses the port with
    # OverflowError.  getaddrinfo would wrap it (70000 -> 4464), as uvcffi used to.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    async def main():
        for kw, method in (("local_addr", "bind"), ("remote_addr", "connect")):
            exc_type, message = socket_refusal(
                method, (host, int(port)), family=family, kind=socket.SOCK_DGRAM)
            with pytest.raises(exc_type) as info:
                await anyloop.create_datagram_endpoint(Proto, **{kw: (host, port)})
            assert str(info.value) == message

    run(anyloop, main())


def fatal_or_error_received(anyloop, transport, protocol, contexts):
    """What a sendto() did: ("fatal", type, message) or ("error", type, message)."""
    async def outcome():
        if transport.is_closing():
            exc = await protocol.lost
            assert contexts[0]["message"] == "Fatal write error on datagram transport"
            return ("fatal", type(exc), str(exc))
        exc = await protocol.errors.get()
        return ("error", type(exc), str(exc))
    return outcome()


def test_broadcast_remote_port_out_of_range(anyloop):
    # With allow_broadcast the remote address is not connected, only remembered: the
    # first sendto() to it is what fails, fatally, as socket.sendto() refuses the port.
    contexts = []
    anyloop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        t, p = await anyloop.create_datagram_endpoint(
            Proto, remote_addr=("127.0.0.1", 70000), allow_broadcast=True)
        t.sendto(b"x")
        exc_type, message = socket_refusal(
            "sendto", b"x", ("127.0.0.1", 70000), kind=socket.SOCK_DGRAM)
        got = await fatal_or_error_received(anyloop, t, p, contexts)
        assert got == ("fatal", exc_type, message)

    run(anyloop, main())


SENDTO_BAD_ADDRESSES = [
    ("127.0.0.1", 70000),
    ("127.0.0.1", -1),
    ("127.0.0.1", 2**40),
    ("127.0.0.1", 2**70),
    ("127.0.0.1", "80"),
    ("127.0.0.1", 1.5),
    # CPython resolves the host before it checks the port's range, PyPy after
    ("no-such-host.invalid", 70000),
    pytest.param(("::1", 70000), marks=needs_ipv6),
    pytest.param(("::1", 80, 2**20), marks=needs_ipv6),
]


@pytest.mark.parametrize("addr", SENDTO_BAD_ADDRESSES, ids=repr)
def test_sendto_bad_address_as_socket_sendto(anyloop, addr):
    # asyncio hands the address to socket.sendto(): its OSError goes to error_received(),
    # its TypeError or OverflowError is fatal; uvcffi converts addresses itself and must
    # raise the same, in this runtime's words.
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    exc_type, message = socket_refusal("sendto", b"x", addr, family=family,
                                       kind=socket.SOCK_DGRAM)
    expected = ("error" if issubclass(exc_type, OSError) else "fatal", exc_type, message)
    contexts = []
    anyloop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        t, p = await anyloop.create_datagram_endpoint(Proto, family=family)
        t.sendto(b"x", addr)
        assert await fatal_or_error_received(anyloop, t, p, contexts) == expected
        t.close()

    run(anyloop, main(), timeout=30)


class _Index:
    def __index__(self):
        return 1


# IPv6 sendto() addresses with the flowinfo and scope id in every form socket.sendto()
# takes or refuses ("P" is the receiver's port): CPython converts both as C unsigned ints
# that wrap (a scope id of -1 is sent), PyPy refuses negative and too-large ones; CPython
# resolves the host before it checks the flowinfo's range, PyPy after.
IPV6_EXTRAS = [
    ("::1", "P", 0, -1),
    ("::1", "P", 0, 2**32 + 1),
    ("::1", "P", 0, 2**64 + 1),
    ("::1", "P", 0, -(2**70)),
    ("::1", "P", 2**32 + 1, 0),
    ("::1", "P", 2**70, 0),
    ("::1", "P", -1, 0),
    ("::1", "P", -(2**32), 0),
    ("::1", "P", _Index(), 0),
    ("::1", "P", 0, _Index()),
    ("::1", "P", 0, 1.0),
    ("::1", "P", 2**20, -1),
    ("::1", 70000, 1.5, 0),
    ("no-such-host.invalid", "P", 2**20, 0),
    ("no-such-host.invalid", "P", 0, -1),
]


async def _how_socket_sendto_answers(family, addr, receiver):
    """What socket.sendto() makes of ``addr``: (exception type, message) when it refuses
    it, else None, once its probe has reached ``receiver``."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(b"probe", addr)
        except Exception as exc:  # noqa: BLE001 - the refusal is the expectation
            return (type(exc), str(exc))
    assert (await receiver.received.get())[0] == b"probe"
    return None


@needs_ipv6
@pytest.mark.parametrize("template", IPV6_EXTRAS, ids=repr)
def test_sendto_ipv6_flowinfo_and_scope_id_as_socket_sendto(anyloop, template):
    contexts = []
    anyloop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        rt, rp = await anyloop.create_datagram_endpoint(Proto, local_addr=("::1", 0))
        port = rt.get_extra_info("sockname")[1]
        addr = tuple(port if x == "P" else x for x in template)
        refused = await _how_socket_sendto_answers(socket.AF_INET6, addr, rp)
        t, p = await anyloop.create_datagram_endpoint(Proto, family=socket.AF_INET6)
        t.sendto(b"x", addr)
        if refused is None:
            assert (await rp.received.get())[0] == b"x"
            assert not t.is_closing() and p.errors.empty()
        else:
            kind = "error" if issubclass(refused[0], OSError) else "fatal"
            assert await fatal_or_error_received(anyloop, t, p, contexts) == (kind, *refused)
        await close_all(t, rt)

    run(anyloop, main(), timeout=30)


@pytest.mark.parametrize(
    "host",
    [bytearray(b"127.0.0.1"), "127.0.0.1\0", b"127.0.0.1\0", "no\0such.host"],
    ids=repr,
)
def test_sendto_host_forms_as_socket_sendto(anyloop, host):
    # socket.sendto() takes a bytearray host (unhashable: it cannot be cached) and refuses
    # one with a NUL in it (TypeError, fatal in asyncio) before it looks at anything else.
    contexts = []
    anyloop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        rt, rp = await anyloop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
        addr = (host, rt.get_extra_info("sockname")[1])
        refused = await _how_socket_sendto_answers(socket.AF_INET, addr, rp)
        t, p = await anyloop.create_datagram_endpoint(Proto, family=socket.AF_INET)
        for _ in range(2):  # (the second time from the cache, if it was cached)
            t.sendto(b"x", addr)
            if refused is not None:
                break
            assert (await rp.received.get())[0] == b"x"
            assert not t.is_closing() and p.errors.empty()
        if refused is not None:
            assert await fatal_or_error_received(anyloop, t, p, contexts) == ("fatal", *refused)
        await close_all(t, rt)

    run(anyloop, main())


@needs_ipv6
def test_sendto_cached_address_does_not_hide_a_bad_flowinfo(anyloop):
    # ("::1", port, 1.0, 0) == ("::1", port, 1, 0), and hashes alike: a conversion cached
    # for the latter must not send the former, which socket.sendto() refuses (TypeError).
    contexts = []
    anyloop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        rt, rp = await anyloop.create_datagram_endpoint(Proto, local_addr=("::1", 0))
        port = rt.get_extra_info("sockname")[1]
        t, p = await anyloop.create_datagram_endpoint(Proto, family=socket.AF_INET6)
        t.sendto(b"int", ("::1", port, 1, 0))
        assert (await rp.received.get())[0] == b"int"
        t.sendto(b"other", ("::1", port))  # (the last address is remembered apart)
        assert (await rp.received.get())[0] == b"other"
        t.sendto(b"float", ("::1", port, 1.0, 0))
        kind, exc_type, _ = await fatal_or_error_received(anyloop, t, p, contexts)
        assert (kind, exc_type) == ("fatal", TypeError)
        await close_all(rt)

    run(anyloop, main())


def test_c_sockaddr_refuses_port_out_of_range():
    # Python checks the port first; the C conversion must not wrap one either.
    out = dg_module.ffi.new("char[]", lib.UVC_SOCKADDR_SIZE)
    for family, host in ((socket.AF_INET, b"127.0.0.1"), (socket.AF_INET6, b"::1")):
        assert lib.uvc_sockaddr_make(family, host, 65535, 0, 0, out) == 0
        for port in (65536, 70000, -1):
            assert lib.uvc_sockaddr_make(family, host, port, 0, 0, out) == -errno.EINVAL


def test_sendto_after_close_warns_after_threshold(loop, caplog):
    async def main():
        st, sp = await endpoint(local_addr=("127.0.0.1", 0))
        ct, cp = await endpoint(remote_addr=st.get_extra_info("sockname"))
        ct.close()
        assert ct.is_closing()
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(LOG_THRESHOLD_FOR_CONNLOST_WRITES + 2):
                ct.sendto(b"late")
        assert "socket.send() raised exception." in caplog.text
        await cp.lost
        ct.sendto(b"later")  # still no exception
        await close_all(st)
        assert sp.received.empty()

    run(loop, main())


@pytest.fixture
def force_queue(monkeypatch):
    """Make every UDP send take the queued path (loopback never makes a UDP send block,
    so this is how the queue, its accounting and flow control are exercised)."""
    real = lib.uvc_udp_send

    def always_queue(uv, slot, data, n, addr, queued):
        return real(uv, slot, data, n, addr, 1)

    monkeypatch.setattr(dg_module, "_udp_send", always_queue)


def test_queued_sends_flow_control_and_exact_buffer_size(loop, force_queue):
    async def main():
        st, sp = await endpoint(local_addr=("127.0.0.1", 0))
        ct, cp = await endpoint(remote_addr=st.get_extra_info("sockname"))
        ct.set_write_buffer_limits(high=3000, low=1000)
        assert ct.get_write_buffer_limits() == (1000, 3000)
        for i in range(4):
            ct.sendto(b"%d" % i * 1000)
            assert ct.get_write_buffer_size() == 1000 * (i + 1)
        assert cp.events == ["made", "pause"]
        for i in range(4):
            data, _ = await sp.received.get()
            assert data == b"%d" % i * 1000
        while ct.get_write_buffer_size():
            await asyncio.sleep(0)
        assert cp.events == ["made", "pause", "resume"]
        with pytest.raises(ValueError):
            ct.set_write_buffer_limits(high=1, low=2)
        await close_all(st, ct)

    run(loop, main())


def test_close_flushes_queued_datagrams(loop, force_queue):
    async def main():
        st, sp = await endpoint(local_addr=("127.0.0.1", 0))
        addr = st.get_extra_info("sockname")
        ut, up = await endpoint(family=socket.AF_INET)
        for i in range(50):
            ut.sendto(b"d%d" % i, addr)
        assert ut.get_write_buffer_size() > 0
        ut.close()
        assert await up.lost is None
        assert ut.get_write_buffer_size() == 0
        got = [(await sp.received.get())[0] for _ in range(50)]
        assert got == [b"d%d" % i for i in range(50)]
        await close_all(st)

    run(loop, main())


def test_abort_drops_queue(loop, force_queue):
    async def main():
        st, sp = await endpoint(local_addr=("127.0.0.1", 0))
        ut, up = await endpoint(family=socket.AF_INET)
        for _ in range(3):
            ut.sendto(b"queued", st.get_extra_info("sockname"))
        assert ut.get_write_buffer_size() == 18
        ut.abort()
        # (libuv may already have sent them: loopback never blocks a UDP send)
        assert ut.is_closing() and ut.get_write_buffer_size() == 0
        ut.sendto(b"after abort")  # ignored, as asyncio does
        assert await up.lost is None
        assert up.events == ["made", "lost"]
        await close_all(st)

    run(loop, main())


def test_unix_datagram_by_path(loop):
    async def main():
        with tempfile.TemporaryDirectory() as d:
            spath, cpath = os.path.join(d, "s"), os.path.join(d, "c")
            st, sp = await endpoint(local_addr=spath, family=socket.AF_UNIX)
            ct, cp = await endpoint(local_addr=cpath, remote_addr=spath, family=socket.AF_UNIX)
            assert ct.get_extra_info("peername") == spath
            ct.sendto(b"ping1")
            assert await sp.received.get() == (b"ping1", cpath)
            assert await cp.received.get() == (b"pong1", spath)
            with pytest.raises(ValueError):
                ct.sendto(b"x", "/elsewhere")
            # a stale socket file at the path is replaced
            await close_all(st, ct)
            st, sp = await endpoint(local_addr=spath, family=socket.AF_UNIX)
            await close_all(st)

    run(loop, main())


def test_unix_flow_control_and_close_flush(loop):
    async def main():
        with tempfile.TemporaryDirectory() as d:
            spath = os.path.join(d, "s")
            receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            receiver.bind(spath)
            receiver.setblocking(False)
            ct, cp = await endpoint(remote_addr=spath, family=socket.AF_UNIX)
            ct.set_write_buffer_limits(high=1000, low=0)
            n = 0
            while ct.get_write_buffer_size() == 0:  # fill the receiver's queue
                ct.sendto(b"%06d" % n + b"x" * 994)
                n += 1
                assert n < 100000
            ct.sendto(b"%06d" % n + b"x" * 994)
            n += 1
            assert cp.events[-1] == "pause"
            ct.close()
            got = []
            while len(got) < n:
                try:
                    got.append(receiver.recv(2000))
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            assert [int(g[:6]) for g in got] == list(range(n))
            assert await cp.lost is None
            assert "resume" in cp.events
            receiver.close()

    run(loop, main())


def test_unix_socketpair_sends_to_its_unnamed_peer(loop):
    # sendto(data) with no address on a connected socket whose peer has no name (one end
    # of socketpair): sent to the peer, at once and from the buffer alike.  uvloop does
    # this; asyncio 3.11 calls sendto(data, None) and fails (a deliberate improvement,
    # so this runs on uvcffi only).
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def main():
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        b.setblocking(False)
        t, p = await asyncio.get_running_loop().create_datagram_endpoint(Proto, sock=a)
        t.sendto(b"first")
        assert b.recv(100) == b"first"
        t.sendto(b"second", None)
        assert b.recv(100) == b"second"
        # fill the peer's queue: the rest waits in the transport's buffer
        n = 0
        while t.get_write_buffer_size() == 0:
            t.sendto(b"%06d" % n + b"x" * 994)
            n += 1
            assert n < 100000
        t.sendto(b"%06d" % n + b"x" * 994)
        n += 1
        got = []
        while len(got) < n:
            try:
                got.append(b.recv(2000))
            except BlockingIOError:
                await asyncio.sleep(0.001)
        assert [int(g[:6]) for g in got] == list(range(n))
        assert t.get_write_buffer_size() == 0
        assert not t.is_closing() and not contexts and "error" not in p.events
        await close_all(t)
        b.close()

    run(loop, main())


def test_existing_sock(loop):
    async def main():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        t, p = await asyncio.get_running_loop().create_datagram_endpoint(Proto, sock=s)
        assert t.get_extra_info("sockname") == s.getsockname()
        # no SO_REUSEADDR behind the user's back (libuv sets it when adopting a socket)
        assert not s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        # the transport's fd is refused to add_reader, as in asyncio
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop().add_reader(s.fileno(), lambda: None)
        await close_all(t)
        assert s.fileno() == -1
        with pytest.raises(ValueError, match="socket modifier"):
            s2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                await asyncio.get_running_loop().create_datagram_endpoint(
                    Proto, sock=s2, local_addr=("127.0.0.1", 0)
                )
            finally:
                s2.close()

    run(loop, main())


@pytest.mark.parametrize(
    "family, host",
    [(socket.AF_INET, "127.0.0.1"), pytest.param(socket.AF_INET6, "::1", marks=needs_ipv6)],
    ids=["ipv4", "ipv6"],
)
def test_connected_sock_reports_each_senders_address(anyloop, family, host):
    # A datagram that reached a socket before it was connected stays in its queue and is
    # read with its own sender's address (recvfrom's), not the peer's: asyncio reports it
    # as such, and so must uvcffi (it used to report every datagram as the peer's).
    async def main():
        early = socket.socket(family, socket.SOCK_DGRAM)
        peer = socket.socket(family, socket.SOCK_DGRAM)
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            for sock in (early, peer, s):
                sock.bind((host, 0))
            early.sendto(b"early", s.getsockname())
            # (wait for it to be queued, then connect)
            assert select.select([s], [], [], 10)[0] == [s]
            s.connect(peer.getsockname())
            t, p = await asyncio.get_running_loop().create_datagram_endpoint(Proto, sock=s)
            assert await p.received.get() == (b"early", early.getsockname())
            peer.sendto(b"peer", s.getsockname())
            assert await p.received.get() == (b"peer", peer.getsockname())
            await close_all(t)
        finally:
            early.close()
            peer.close()
            s.close()

    run(anyloop, main())


def _skip_without_datagram_pause_reading(anyloop):
    from asyncio import selector_events
    if (anyloop.kind == "asyncio" and selector_events._SelectorDatagramTransport.pause_reading
            is asyncio.ReadTransport.pause_reading):
        pytest.skip("this asyncio's datagram transport has no pause_reading() (3.9's)")


def test_pause_and_resume_reading_as_asyncio(anyloop):
    _skip_without_datagram_pause_reading(anyloop)
    # asyncio's datagram transports take pause_reading()/resume_reading()/is_reading()
    # (its selector transport's): while paused nothing is delivered, and what arrived
    # meanwhile comes after resume_reading(), in order.
    async def main():
        rt, rp = await anyloop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
        addr = rt.get_extra_info("sockname")
        assert rt.is_reading()
        rt.pause_reading()
        rt.pause_reading()  # (again: nothing)
        assert not rt.is_reading()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"while paused", addr)
            # the sender's own reply proves a full loop round trip went by meanwhile
            st, sp = await anyloop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
            sock.sendto(b"ping", st.get_extra_info("sockname"))
            assert (await sp.received.get())[0] == b"ping"
            assert sock.recv(100) == b"pong"
        assert rp.received.empty()
        rt.resume_reading()
        rt.resume_reading()
        assert rt.is_reading()
        assert (await rp.received.get())[0] == b"while paused"
        rt.close()
        assert not rt.is_reading()
        rt.resume_reading()  # (closing: nothing)
        assert not rt.is_reading()
        await close_all(rt, st)

    run(anyloop, main())


def test_pause_reading_inside_datagram_received_loses_nothing(anyloop):
    _skip_without_datagram_pause_reading(anyloop)
    # libuv reads up to 32 datagrams at a time: those read after the protocol paused
    # must wait for resume_reading(), not be dropped nor delivered while paused.
    async def main():
        lp = asyncio.get_running_loop()
        got = []
        paused_at = {1: lp.create_future(), 5: lp.create_future(), 20: lp.create_future()}

        class Pausing(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                assert self.transport.is_reading()
                got.append(data)
                if len(got) in paused_at:
                    self.transport.pause_reading()
                    paused_at[len(got)].set_result(None)

        async def round_trip():
            # a full loop round trip: whatever was to be delivered meanwhile has been
            st, sp = await lp.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
            ct, cp = await lp.create_datagram_endpoint(
                Proto, remote_addr=st.get_extra_info("sockname"))
            ct.sendto(b"ping")
            assert (await cp.received.get())[0] == b"pong"
            await close_all(st, ct)

        rt, _ = await lp.create_datagram_endpoint(Pausing, local_addr=("127.0.0.1", 0))
        rt.pause_reading()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(20):
                sock.sendto(b"%d" % i, rt.get_extra_info("sockname"))
        rt.resume_reading()
        await paused_at[1]
        await round_trip()
        assert got == [b"0"]
        rt.resume_reading()
        await paused_at[5]
        await round_trip()
        assert len(got) == 5 and not rt.is_reading()
        rt.resume_reading()
        await paused_at[20]
        assert got == [b"%d" % i for i in range(20)]
        rt.close()

    run(anyloop, main())


def test_argument_errors(loop):
    async def main():
        lp = asyncio.get_running_loop()
        with pytest.raises(ValueError, match="unexpected address family"):
            await lp.create_datagram_endpoint(Proto)
        with pytest.raises(TypeError, match="2-tuple"):
            await lp.create_datagram_endpoint(Proto, local_addr="127.0.0.1")
        with pytest.raises(TypeError, match="string is expected"):
            await lp.create_datagram_endpoint(
                Proto, local_addr=("a", 1), family=socket.AF_UNIX
            )
        # refused as the running Python's asyncio refuses it
        expected = TypeError if sys.version_info >= (3, 11) else ValueError
        with pytest.raises(expected, match="reuse_address"):
            await lp.create_datagram_endpoint(
                Proto, local_addr=("127.0.0.1", 0), reuse_address=True
            )
        with pytest.raises(ValueError, match="A UDP Socket was expected"):
            with socket.socket() as s:
                await lp.create_datagram_endpoint(Proto, sock=s)
        if HAS_IPV6:
            with pytest.raises(ValueError, match="can not get address information"):
                await lp.create_datagram_endpoint(
                    Proto, local_addr=("::1", 0), remote_addr=("127.0.0.1", 1)
                )
        with pytest.raises(OSError):
            await lp.create_datagram_endpoint(Proto, local_addr=("192.0.2.1", 0))

    run(loop, main())


def test_host_name_is_resolved(loop):
    async def main():
        st, sp = await endpoint(local_addr=("localhost", 0), family=socket.AF_INET)
        assert st.get_extra_info("sockname")[0] == "127.0.0.1"
        await close_all(st)

    run(loop, main())


def test_protocol_runs_in_creation_context(loop):
    import contextvars

    var = contextvars.ContextVar("var", default="unset")
    seen = []

    class CtxProto(Proto):
        def datagram_received(self, data, addr):
            seen.append(var.get())
            super().datagram_received(data, addr)

    async def main():
        var.set("creator")
        st, sp = await asyncio.get_running_loop().create_datagram_endpoint(
            CtxProto, local_addr=("127.0.0.1", 0)
        )
        return st, sp

    async def send(addr):
        ut, up = await endpoint(family=socket.AF_INET)
        ut.sendto(b"ping", addr)
        await up.received.get()
        await close_all(ut)

    st, sp = run(loop, loop.create_task(main()))
    run(loop, send(st.get_extra_info("sockname")))
    assert seen == ["creator"]
    run(loop, close_all(st))


def test_callback_exception_goes_to_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    class Boom(Proto):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            raise ZeroDivisionError

    async def main():
        st, sp = await asyncio.get_running_loop().create_datagram_endpoint(
            Boom, local_addr=("127.0.0.1", 0)
        )
        ut, up = await endpoint(family=socket.AF_INET)
        ut.sendto(b"one", st.get_extra_info("sockname"))
        ut.sendto(b"two", st.get_extra_info("sockname"))
        await sp.received.get()
        await sp.received.get()
        assert len(contexts) == 2
        assert isinstance(contexts[0]["exception"], ZeroDivisionError)
        assert not st.is_closing()
        await close_all(st, ut)

    run(loop, main())


@pytest.mark.parametrize("kind", ["udp", "unix"])
def test_error_received_exception_inside_sendto_reaches_the_caller(anyloop, kind):
    # asyncio calls error_received() for sendto()'s own OSError inside sendto(): what it
    # raises comes out of sendto(), to its caller (not to the exception handler), and the
    # transport lives on.
    contexts = []
    anyloop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    class Raising(Proto):
        def error_received(self, exc):
            super().error_received(exc)
            raise ZeroDivisionError(type(exc).__name__)

    async def main():
        lp = asyncio.get_running_loop()
        if kind == "udp":
            t, p = await lp.create_datagram_endpoint(Raising, local_addr=("127.0.0.1", 0))
            data, addr = b"x" * 70000, t.get_extra_info("sockname")  # EMSGSIZE
        else:
            with tempfile.TemporaryDirectory() as d:
                t, p = await lp.create_datagram_endpoint(
                    Raising, local_addr=os.path.join(d, "s"), family=socket.AF_UNIX)
            data, addr = b"x", os.path.join(d, "gone")  # FileNotFoundError
        with pytest.raises(ZeroDivisionError):
            t.sendto(data, addr)
        assert isinstance(await p.errors.get(), OSError)
        assert not t.is_closing() and contexts == []
        await close_all(t)

    run(anyloop, main())


def test_unclosed_transport_warns(loop):
    import gc

    async def main():
        t, p = await endpoint(local_addr=("127.0.0.1", 0))
        return t

    t = run(loop, main())
    sock = t.get_extra_info("socket")
    # The loop holds a transport whose handle is open (as asyncio's selector does): it
    # can only be collected once the loop is closed.
    loop.close()
    with pytest.warns(ResourceWarning, match="unclosed transport"):
        t.get_protocol().transport = None
        del t
        for _ in range(3):  # PyPy finalizes over several collections
            gc.collect()
    assert sock.fileno() == -1


@pytest.mark.parametrize("family", ["udp", "unix"])
def test_reading_pauses_and_resumes_as_on_asyncio(anyloop, family, tmp_path):
    # asyncio's datagram transports pause and resume receiving (pause_reading,
    # resume_reading, is_reading); uvcffi's raised NotImplementedError.  Paused in the
    # callback of the first of three datagrams already in the socket, the transport
    # delivers no more until resume_reading(); then the rest, in order.  (uvcffi's UDP
    # transport has received the batch from libuv by then: it keeps the rest.)
    if anyloop.kind == "asyncio" and sys.version_info < (3, 11):
        pytest.skip("asyncio's datagram transports pause reading from 3.11 (not PyPy's 3.9)")
    loop = anyloop
    got = []
    seen_while_paused = []

    class Pausing(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            got.append(data)
            if data == b"1":
                transport.pause_reading()
                assert not transport.is_reading()
                loop.call_soon(check_then_resume)
            if len(got) == 3:
                done.set_result(None)

    def check_then_resume():
        seen_while_paused.append((list(got), transport.is_reading()))
        transport.resume_reading()
        transport.resume_reading()  # (not paused: nothing)

    async def main():
        nonlocal transport, done
        done = loop.create_future()
        if family == "udp":
            transport, _ = await loop.create_datagram_endpoint(
                Pausing, local_addr=("127.0.0.1", 0))
            peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        else:
            path = str(tmp_path / "dgram")
            transport, _ = await loop.create_datagram_endpoint(
                Pausing, local_addr=path, family=socket.AF_UNIX)
            peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with peer:
            for data in (b"1", b"2", b"3"):
                peer.sendto(data, transport.get_extra_info("sockname"))
            await done
        assert got == [b"1", b"2", b"3"]
        assert seen_while_paused == [([b"1"], False)]
        assert transport.is_reading()
        transport.close()
        assert not transport.is_reading()
        transport.pause_reading()  # closing: nothing
        transport.resume_reading()

    transport = done = None
    run(loop, main())
