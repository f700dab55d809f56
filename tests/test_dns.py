"""loop.getaddrinfo / loop.getnameinfo: the same answers and errors as the socket module."""
import asyncio
import gc
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import uvcffi
from uvcffi._dns import address_addrinfo, numeric_addrinfo

HAS_IPV6 = socket.has_ipv6
IS_CPYTHON = sys.implementation.name == "cpython"
# The same exceptions as the socket module, messages included (3.9 words some TypeErrors
# differently; only their type is compared there).
SAME_MESSAGES = IS_CPYTHON and sys.version_info >= (3, 10)


def run(loop, coro, timeout=30):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def outcome(fn, *args, **kwargs):
    """What a call gives: ("ok", result) or ("err", exception type, args)."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - the exception is the result compared
        return ("err", type(exc), exc.args)


async def aoutcome(coro):
    try:
        return ("ok", await coro)
    except Exception as exc:  # noqa: BLE001
        return ("err", type(exc), exc.args)


GETADDRINFO_CASES = [
    (("127.0.0.1", 80), {}),
    (("127.0.0.1", "80"), {}),
    (("127.0.0.1", b"80"), {}),
    ((b"127.0.0.1", 80), {}),
    (("127.0.0.1", None), {"type": socket.SOCK_STREAM}),
    (("127.0.0.1", 0), {"type": socket.SOCK_DGRAM}),
    (("127.0.0.1", 80), {"proto": socket.IPPROTO_TCP}),
    (("127.0.0.1", 80), {"proto": socket.IPPROTO_UDP}),
    (("127.0.0.1", 80), {"family": socket.AF_INET, "flags": socket.AI_PASSIVE}),
    (("127.0.0.1", 80), {"flags": socket.AI_CANONNAME}),
    (("127.0.0.1", 80), {"flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV}),
    (("127.0.0.1", 80), {"type": socket.SOCK_STREAM, "flags": socket.AI_ADDRCONFIG}),
    (("127.1", 80), {}),
    (("127.0.0.1", 70000), {}),
    (("127.0.0.1", "http"), {}),
    (("127.0.0.1", -1), {}),
    (("127.0.0.1", "no-such-service"), {}),
    (("127.0.0.1", 80), {"type": socket.SOCK_STREAM, "proto": socket.IPPROTO_UDP}),
    (("127.0.0.1", 80), {"type": socket.SOCK_RAW}),
    (("127.0.0.1", 80), {"family": socket.AF_UNIX}),
    (("localhost", 80), {"type": socket.SOCK_STREAM}),
    (("localhost", "http"), {"flags": socket.AI_CANONNAME}),
    ((None, 80), {}),
    ((None, 80), {"flags": socket.AI_PASSIVE}),
    (
        (None, 80),
        {"family": socket.AF_INET, "type": socket.SOCK_STREAM, "flags": socket.AI_PASSIVE},
    ),
    (("", 80), {}),
    ((None, None), {}),
    (("127.0.0.1", 80), {"family": socket.AF_INET, "type": socket.SOCK_STREAM}),
]
# Bad input: the exception CPython's socket.getaddrinfo raises (uvcffi raises the same on
# PyPy, whose socket module words some of these differently).
GETADDRINFO_BAD = [
    ((1, 80), {}, TypeError),
    ((bytearray(b"127.0.0.1"), 80), {}, TypeError),
    (("127.0.0.1", 1.5), {}, OSError),
    (("127.0.0.1", True), {}, OSError),
    # 3.12 passes any int port on as a string: gaierror then (OverflowError before)
    (("127.0.0.1", 2**70), {},
     OverflowError if sys.version_info < (3, 12) or not IS_CPYTHON else socket.gaierror),
    (("127.0.0.1", 80), {"family": "x"}, TypeError),
    (("127.0.0.1", 80), {"type": 2**40}, OverflowError),
    (("a" * 70, 80), {}, UnicodeError),
]
if HAS_IPV6:
    GETADDRINFO_CASES += [
        (("::1", 80), {}),
        (("0:0::1", 443), {"type": socket.SOCK_STREAM}),
        (("::ffff:127.0.0.1", 80), {"type": socket.SOCK_STREAM}),
        (("::1", 80), {"family": socket.AF_INET6, "type": socket.SOCK_DGRAM}),
        (("::1", 80), {"family": socket.AF_INET}),
        (("127.0.0.1", 80), {"family": socket.AF_INET6}),
    ]
    if IS_CPYTHON:  # PyPy's socket module answers 'fe80::1%lo' here, CPython 'fe80::1'
        GETADDRINFO_CASES.append((("fe80::1%lo", 80), {"type": socket.SOCK_STREAM}))


@pytest.mark.parametrize("args,kwargs", GETADDRINFO_CASES, ids=repr)
def test_getaddrinfo_matches_socket_module(loop, args, kwargs):
    expected = outcome(socket.getaddrinfo, *args, **kwargs)
    got = run(loop, aoutcome(loop.getaddrinfo(*args, **kwargs)))
    assert got == expected
    if got[0] == "ok":
        # The enum members, as socket.getaddrinfo gives them, not bare ints.
        assert [type(e[0]) for e in got[1]] == [type(e[0]) for e in expected[1]]
        assert [type(e[1]) for e in got[1]] == [type(e[1]) for e in expected[1]]


@pytest.mark.parametrize("args,kwargs,exc_type", GETADDRINFO_BAD, ids=repr)
def test_getaddrinfo_bad_input(loop, args, kwargs, exc_type):
    got = run(loop, aoutcome(loop.getaddrinfo(*args, **kwargs)))
    assert got[0] == "err" and issubclass(got[1], exc_type)  # 3.13: UnicodeEncodeError
    if SAME_MESSAGES:
        assert got == outcome(socket.getaddrinfo, *args, **kwargs)


def test_unknown_host_is_gaierror(loop):
    with pytest.raises(socket.gaierror) as info:
        run(loop, loop.getaddrinfo("no-such-host.invalid", 80))
    try:
        socket.getaddrinfo("no-such-host.invalid", 80)
    except socket.gaierror as exc:
        assert info.value.args == exc.args
    else:
        pytest.fail("the system resolved a .invalid name")


def test_numeric_hosts_do_not_wait(loop):
    # Answered without the thread pool: the coroutine finishes on its first step.
    for host in ("127.0.0.1", b"10.1.2.3") + (("::1", "fe80::1:2") if HAS_IPV6 else ()):
        coro = loop.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
        with pytest.raises(StopIteration) as stop:
            coro.send(None)
        assert stop.value.value == socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)


@pytest.mark.parametrize(
    "host,port,kw",
    [("localhost", 80, {}), ("127.0.0.1", "http", {}), ("fe80::1%lo", 1, {}),
     ("127.0.0.1", 80, {"flags": socket.AI_CANONNAME}), ("127.0.0.1", 80, {"type": 99})],
)
def test_numeric_addrinfo_leaves_the_rest_to_the_resolver(host, port, kw):
    assert numeric_addrinfo(host, port, **kw) is None


def test_many_concurrent_lookups(loop):
    async def main():
        return await asyncio.gather(
            *[loop.getaddrinfo("localhost", 1000 + i, type=socket.SOCK_STREAM) for i in range(50)]
        )

    results = run(loop, main())
    for i, got in enumerate(results):
        assert got == socket.getaddrinfo("localhost", 1000 + i, type=socket.SOCK_STREAM)


def test_cancelled_lookup_frees_its_request(loop):
    from uvcffi._uv import lib

    async def main():
        before = lib.uvc_active_slots(loop._uv)
        tasks = [asyncio.ensure_future(loop.getaddrinfo("localhost", i)) for i in range(20)]
        await asyncio.sleep(0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert all(t.cancelled() for t in tasks)
        # Every request's completion (or cancellation) event still comes and frees it.
        for _ in range(1000):
            if lib.uvc_active_slots(loop._uv) == before:
                break
            await asyncio.sleep(0.005)
        assert lib.uvc_active_slots(loop._uv) == before
        # and the loop still resolves
        return await loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)

    assert run(loop, main()) == socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)


def test_close_with_lookup_pending():
    lp = uvcffi.new_event_loop()
    fut = lp._getaddrinfo_lookup("localhost", 80, 0, 0, 0, 0)
    lp.close()  # must neither hang nor crash: the lookup is dropped
    assert lp.is_closed()
    del fut
    gc.collect()


def test_close_after_lookup_finished_in_pool():
    # The lookup is done in the thread pool, its completion not yet run: it runs inside
    # close(), where nobody takes the result.  tools/sanitize.sh's leak check is what
    # sees the result go unfreed; here it must only not hang or crash.
    lp = uvcffi.new_event_loop()
    fut = lp._getaddrinfo_lookup("localhost", 80, 0, 0, 0, 0)
    time.sleep(0.2)
    lp.close()
    assert lp.is_closed()
    del fut
    gc.collect()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1"])
def test_getaddrinfo_on_closed_loop(anyloop, host):
    # An IP address too (answered without a lookup): asyncio's goes to its executor.
    anyloop.close()
    coro = anyloop.getaddrinfo(host, 80)
    with pytest.raises(RuntimeError, match="closed"):
        coro.send(None)


GETNAMEINFO_CASES = [
    (("127.0.0.1", 80), 0),
    (("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
    (("localhost", 80), 0),
]
GETNAMEINFO_BAD = [
    (("127.0.0.1", 80, 0, 0), 0, OSError),
    (["127.0.0.1", 80], 0, TypeError),
    (("127.0.0.1",), 0, TypeError),
    ((1, 80), 0, TypeError),
    ((b"127.0.0.1", 80), 0, TypeError),
    (("127.0.0.1", "x"), 0, TypeError),
    (("127.0.0.1", 80), "x", TypeError),
    (("127.0.0.1", -1), 0, socket.gaierror),
]
if IS_CPYTHON:  # PyPy refuses a port above 65535, CPython wraps it
    GETNAMEINFO_CASES.append((("127.0.0.1", 1048576), 0))
if HAS_IPV6:
    GETNAMEINFO_CASES += [
        (("::1", 443, 0, 0), socket.NI_NUMERICSERV),
        (("::1", 80), 0),
        (("fe80::1%lo", 80, 0, 0), socket.NI_NUMERICHOST),
    ]
    GETNAMEINFO_BAD += [(("::1", 80, 2**21, 0), 0, OverflowError),
                        (("::1", 80, -1, 0), 0, OverflowError)]
    if IS_CPYTHON:  # PyPy 3.9's getnameinfo takes no 4-tuple (ValueError): asyncio's there
        # CPython wraps flowinfo and scope id as C unsigned ints, then checks flowinfo
        GETNAMEINFO_CASES += [
            (("::1", 80, 0, 2**32), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
            (("::1", 80, 0, 2**64 + 1), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
            (("::1", 80, 2**32 + 5, 0), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
        ]


@pytest.mark.parametrize("sockaddr,flags,exc_type", GETNAMEINFO_BAD, ids=repr)
def test_getnameinfo_bad_input(loop, sockaddr, flags, exc_type):
    got = run(loop, aoutcome(loop.getnameinfo(sockaddr, flags)))
    assert got[0] == "err" and issubclass(got[1], exc_type)
    if SAME_MESSAGES:
        assert got == outcome(socket.getnameinfo, sockaddr, flags)


@pytest.mark.parametrize("sockaddr,flags", GETNAMEINFO_CASES, ids=repr)
def test_getnameinfo_matches_socket_module(loop, sockaddr, flags):
    expected = outcome(socket.getnameinfo, sockaddr, flags)
    got = run(loop, aoutcome(loop.getnameinfo(sockaddr, flags)))
    assert got == expected


@pytest.mark.parametrize("port", [70000, -1, "70000", 65536])
def test_getaddrinfo_wraps_a_port_out_of_range_as_asyncio(anyloop, port):
    # getaddrinfo itself keeps the resolver's answer (glibc wraps 70000 to 4464, refuses
    # -1), as asyncio's does; only the methods that connect or bind refuse such a port.
    got = run(anyloop, aoutcome(anyloop.getaddrinfo("127.0.0.1", port)))
    assert got == outcome(socket.getaddrinfo, "127.0.0.1", port)


def test_address_addrinfo_keeps_the_port_as_asyncio_does():
    # What create_connection & co. use for an IP address: int(port), in any range.
    stream = socket.SOCK_STREAM
    assert address_addrinfo("127.0.0.1", 70000, 0, stream) == [
        (socket.AF_INET, stream, socket.IPPROTO_TCP, "", ("127.0.0.1", 70000))]
    assert address_addrinfo("127.0.0.1", "-1", 0, stream)[0][4] == ("127.0.0.1", -1)
    assert address_addrinfo(b"127.0.0.1", None, 0, stream)[0][4] == ("127.0.0.1", 0)
    assert address_addrinfo("127.0.0.1", "", 0, socket.SOCK_DGRAM)[0][4] == ("127.0.0.1", 0)
    assert address_addrinfo("127.0.0.1", 1.5, 0, stream)[0][4] == ("127.0.0.1", 1)
    # names, service names and host None are the resolver's
    assert address_addrinfo("localhost", 80, 0, stream) is None
    assert address_addrinfo("127.0.0.1", "http", 0, stream) is None
    assert address_addrinfo(None, 70000, 0, stream) is None
    # getaddrinfo's own fast path leaves such a port to the resolver, which wraps it
    assert numeric_addrinfo("127.0.0.1", 70000, 0, stream) is None


def test_address_addrinfo_keeps_the_ipv6_spelling_as_asyncio_does():
    # asyncio passes an IPv6 address on as the caller wrote it (so do the errors that quote
    # it); getaddrinfo, and numeric_addrinfo with it, give the canonical spelling.
    stream = socket.SOCK_STREAM
    for host in ("0:0:0:0:0:0:0:1", "0::1", "::FFFF:127.0.0.1"):
        assert address_addrinfo(host, 1, 0, stream)[0][4] == (host, 1, 0, 0)
        canonical = socket.getaddrinfo(host, 1, 0, stream)[0][4]
        assert numeric_addrinfo(host, 1, 0, stream)[0][4] == canonical



def test_address_addrinfo_takes_the_protocol_of_the_socket_type_as_asyncio_does():
    # asyncio's _ipaddr_info: proto 0, TCP or UDP all mean the type's own protocol.
    for proto in (0, socket.IPPROTO_TCP, socket.IPPROTO_UDP):
        assert address_addrinfo("127.0.0.1", 1, 0, socket.SOCK_STREAM, proto) == [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 1))]
        assert address_addrinfo("127.0.0.1", 1, 0, socket.SOCK_DGRAM, proto) == [
            (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "", ("127.0.0.1", 1))]
    assert address_addrinfo("127.0.0.1", 1, 0, socket.SOCK_STREAM, 132) is None  # SCTP
    assert address_addrinfo("127.0.0.1", 1, 0, socket.SOCK_RAW, 0) is None


def test_create_connection_udp_proto_with_an_ip_address(anyloop):
    async def main():
        server = await anyloop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await anyloop.create_connection(
            asyncio.Protocol, "127.0.0.1", port, proto=socket.IPPROTO_UDP)
        assert transport.get_extra_info("socket").type == socket.SOCK_STREAM
        transport.close()
        server.close()
        await server.wait_closed()
    run(anyloop, main())


def _resolver_reads_hostaliases():
    """glibc's DNS resolver (nsswitch 'dns' for hosts) opens $HOSTALIASES for names
    without a dot: what the test below holds a lookup with."""
    import platform
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        with open("/etc/nsswitch.conf") as conf:
            return any(line.split()[:1] == ["hosts:"] and "dns" in line.split() for line in conf)
    except OSError:
        return False


@pytest.mark.skipif(not _resolver_reads_hostaliases(), reason="needs glibc's DNS resolver")
def test_close_does_not_wait_for_a_lookup_in_the_thread_pool(tmp_path):
    """close() while a getaddrinfo() runs in libuv's thread pool (where it cannot be
    stopped, and may take the resolver's whole timeout) returns without waiting for it,
    as asyncio's close() does not wait for its executor's lookups; uvcffi's waited.  The
    resolver holds the lookup in the pool by opening $HOSTALIASES, a FIFO here: the open
    waits for a writer.  (A subprocess: the old close() never returned.)"""
    fifo = str(tmp_path / "aliases")
    plain = str(tmp_path / "plain")
    os.mkfifo(fifo)
    script = f"""
        import asyncio, os, uvcffi
        loop = uvcffi.new_event_loop()
        task = loop.create_task(loop.getaddrinfo("uvcffi-held-lookup", 80))
        loop.run_until_complete(asyncio.sleep(0))  # the lookup goes to the pool
        writer = os.open({fifo!r}, os.O_WRONLY)  # returns once the resolver has it open
        loop.close()
        print("closed", flush=True)
        # The lookup may finish now (a plain file from here on), and the process exit.
        open({plain!r}, "w").close()
        os.rename({plain!r}, {fifo!r})
        os.close(writer)
    """
    env = dict(os.environ, HOSTALIASES=fifo, RES_OPTIONS="timeout:1 attempts:1")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "closed\n"


# A program (or a test suite: asyncssh's patches socket.getaddrinfo and socket.getnameinfo
# to map test host names to 127.0.0.1) that replaces the socket module's resolver functions
# gets its replacement from asyncio's loop.getaddrinfo/getnameinfo, which call
# socket.getaddrinfo/socket.getnameinfo as they are when called, for every host, IP
# addresses included.  So must uvcffi's.
_FAKE_ANSWER = [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 9))]


def _replace_getaddrinfo(monkeypatch, names):
    """socket.getaddrinfo answers ``names`` (host -> address) itself, passes the rest on to
    the socket module's own, and records every call."""
    stock = socket.getaddrinfo
    calls = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        calls.append(host)
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                     (names[host], port))]
        return stock(host, port, family, type, proto, flags)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return calls


def test_getaddrinfo_calls_a_replaced_socket_getaddrinfo(anyloop, monkeypatch):
    calls = _replace_getaddrinfo(monkeypatch, {"testhost.test": "127.0.0.1",
                                               "10.9.8.7": "127.0.0.1"})
    got = run(anyloop, anyloop.getaddrinfo("testhost.test", 9))
    assert got == _FAKE_ANSWER
    # An IP address goes to the replacement too (asyncio asks it for every host).
    assert run(anyloop, anyloop.getaddrinfo("10.9.8.7", 9)) == _FAKE_ANSWER
    assert calls == ["testhost.test", "10.9.8.7"]


def test_create_connection_to_a_name_a_replaced_getaddrinfo_answers(anyloop, monkeypatch):
    _replace_getaddrinfo(monkeypatch, {"testhost.test": "127.0.0.1"})

    async def main():
        server = await anyloop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await anyloop.create_connection(asyncio.Protocol, "testhost.test", port)
        assert transport.get_extra_info("peername") == ("127.0.0.1", port)
        transport.close()
        server.close()
        await server.wait_closed()
    run(anyloop, main())


def test_getnameinfo_calls_a_replaced_socket_getnameinfo(anyloop, monkeypatch):
    calls = []

    def getnameinfo(sockaddr, flags):
        calls.append((sockaddr, flags))
        return ("testhost.test", str(sockaddr[1]))

    monkeypatch.setattr(socket, "getnameinfo", getnameinfo)
    assert run(anyloop, anyloop.getnameinfo(("127.0.0.1", 22))) == ("testhost.test", "22")
    assert calls == [(("127.0.0.1", 22), 0)]

    def failing(sockaddr, flags):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getnameinfo", failing)
    with pytest.raises(socket.gaierror):
        run(anyloop, anyloop.getnameinfo(("127.0.0.1", 22)))


def test_getnameinfo_does_not_call_a_replaced_socket_getaddrinfo(anyloop, monkeypatch):
    # socket.getnameinfo parses the address in C: a replaced socket.getaddrinfo is no part
    # of it, in asyncio's loop.getnameinfo or here.
    expected = socket.getnameinfo(("127.0.0.1", 22), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)

    def getaddrinfo(*args, **kwargs):
        raise AssertionError("getnameinfo called socket.getaddrinfo")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    got = run(anyloop, anyloop.getnameinfo(("127.0.0.1", 22),
                                           socket.NI_NUMERICHOST | socket.NI_NUMERICSERV))
    assert got == expected


def test_getaddrinfo_replaced_before_uvcffi_is_imported():
    # Told by the function's code, not by what socket.getaddrinfo was at uvcffi's import.
    script = textwrap.dedent("""
        import socket
        calls = []
        def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
            calls.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        socket.getaddrinfo = getaddrinfo
        import uvcffi
        async def main():
            import asyncio
            return await asyncio.get_running_loop().getaddrinfo("testhost.test", 9)
        print(uvcffi.run(main())[0][4], calls)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "('127.0.0.1', 9) ['testhost.test']"
