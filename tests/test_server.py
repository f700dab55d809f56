"""create_server / create_unix_server / create_connection / Server, uvcffi beside asyncio's
selector loop (the specification), plus the 10,000-connection check (accepting under EMFILE:
test_accept_emfile.py)."""
import asyncio
import errno
import functools
import gc
import os
import socket
import subprocess
import sys
import textwrap

import pytest
from _helpers import has_ipv6_loopback, run, socket_refusal, stream_echo

echo = stream_echo


async def roundtrip(connect, payload=b"ping"):
    reader, writer = await connect()
    writer.write(payload)
    writer.write_eof()
    got = await reader.read()
    writer.close()
    await writer.wait_closed()
    return got


def test_start_server_open_connection(anyloop):
    async def main():
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        assert isinstance(server, asyncio.AbstractServer)
        assert server.is_serving() and server.get_loop() is anyloop
        port = server.sockets[0].getsockname()[1]
        got = await roundtrip(lambda: asyncio.open_connection("127.0.0.1", port), b"x" * 300000)
        assert got == b"x" * 300000
        server.close()
        assert not server.is_serving() and server.sockets == ()
        await server.wait_closed()
    run(anyloop, main())


def test_host_forms_and_dual_stack(anyloop):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")

    async def main():
        server = await asyncio.start_server(echo, ["127.0.0.1", "::1"], 0)
        families = sorted(s.family for s in server.sockets)
        assert families == sorted([socket.AF_INET, socket.AF_INET6])
        for s in server.sockets:
            if s.family == socket.AF_INET6:
                assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        for s in server.sockets:
            host, port = s.getsockname()[:2]
            assert (
                await roundtrip(lambda host=host, port=port: asyncio.open_connection(host, port))
                == b"ping"
            )
        server.close()
        await server.wait_closed()
        # happy eyeballs over localhost's addresses
        server = await asyncio.start_server(echo, "localhost", 0)
        port = server.sockets[0].getsockname()[1]
        got = await roundtrip(lambda: asyncio.open_connection(
            "localhost", port, happy_eyeballs_delay=0.05))
        assert got == b"ping"
        server.close()
        await server.wait_closed()
    run(anyloop, main())


def test_create_server_errors(anyloop):
    async def main():
        with pytest.raises(ValueError, match="Neither host/port nor sock"):
            await anyloop.create_server(asyncio.Protocol)
        sock = socket.socket()
        with pytest.raises(ValueError, match="host/port and sock can not be specified"):
            await anyloop.create_server(asyncio.Protocol, "127.0.0.1", 0, sock=sock)
        sock.close()
        udp = socket.socket(type=socket.SOCK_DGRAM)
        with pytest.raises(ValueError, match="A Stream Socket was expected"):
            await anyloop.create_server(asyncio.Protocol, sock=udp)
        udp.close()
        with pytest.raises(TypeError, match="ssl argument must be an SSLContext"):
            await anyloop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=True)
        with pytest.raises(ValueError, match="ssl_handshake_timeout is only meaningful"):
            await anyloop.create_server(asyncio.Protocol, "127.0.0.1", 0,
                                        ssl_handshake_timeout=1)
        server = await anyloop.create_server(asyncio.Protocol, "127.0.0.1", 0,
                                             reuse_address=False)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(OSError) as info:
            await anyloop.create_server(asyncio.Protocol, "127.0.0.1", port,
                                        reuse_address=False)
        assert info.value.errno == errno.EADDRINUSE
        assert "error while attempting to bind on address" in str(info.value)
        server.close()
        await server.wait_closed()
    run(anyloop, main())


def test_reuse_port(anyloop):
    async def main():
        s1 = await anyloop.create_server(asyncio.Protocol, "127.0.0.1", 0, reuse_port=True)
        port = s1.sockets[0].getsockname()[1]
        assert s1.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        s2 = await anyloop.create_server(asyncio.Protocol, "127.0.0.1", port, reuse_port=True)
        for s in (s1, s2):
            s.close()
            await s.wait_closed()
    run(anyloop, main())


def test_create_connection_errors(anyloop):
    async def main():
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        port = lsock.getsockname()[1]
        lsock.close()  # nobody listens there
        with pytest.raises(ConnectionRefusedError):
            await anyloop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        with pytest.raises(ValueError, match="host and port was not specified"):
            await anyloop.create_connection(asyncio.Protocol)
        with pytest.raises(ValueError, match="server_hostname is only meaningful with ssl"):
            await anyloop.create_connection(asyncio.Protocol, "127.0.0.1", port,
                                            server_hostname="x")
        with pytest.raises(ValueError, match="You must set server_hostname"):
            await anyloop.create_connection(asyncio.Protocol, sock=socket.socket(), ssl=True)
        udp = socket.socket(type=socket.SOCK_DGRAM)
        with pytest.raises(ValueError, match="A Stream Socket was expected"):
            await anyloop.create_connection(asyncio.Protocol, sock=udp)
        udp.close()
    run(anyloop, main())



@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_refused_ipv6_address_is_quoted_as_given(anyloop):
    async def main():
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
        with pytest.raises(ConnectionRefusedError) as info:
            await anyloop.create_connection(asyncio.Protocol, "0:0:0:0:0:0:0:1", port)
        assert str(info.value).endswith(f"('0:0:0:0:0:0:0:1', {port}, 0, 0)")
    run(anyloop, main())

# An IP address with a port outside 0-65535: asyncio uses the address as it is, so the
# socket's connect() or bind() refuses it with OverflowError; getaddrinfo, which uvcffi
# used to ask, wraps the port instead (70000 -> 4464, 71091 -> 5555; -1 is a gaierror).
BAD_PORTS = [
    ("127.0.0.1", 70000),
    ("127.0.0.1", 71091),
    ("127.0.0.1", -1),
    ("127.0.0.1", "70000"),
    ("127.0.0.1", 2**70),
    pytest.param("::1", 70000, marks=pytest.mark.skipif(
        not has_ipv6_loopback(), reason="no IPv6 loopback")),
]


@pytest.mark.parametrize("host,port", BAD_PORTS)
def test_port_out_of_range_is_refused_not_wrapped(anyloop, host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    async def main():
        exc_type, message = socket_refusal("connect", (host, int(port)), family=family)
        with pytest.raises(exc_type) as info:
            await anyloop.create_connection(asyncio.Protocol, host, port)
        assert str(info.value) == message
        # local_addr is bound before anything is connected
        exc_type, message = socket_refusal("bind", (host, int(port)), family=family)
        with pytest.raises(exc_type) as info:
            await anyloop.create_connection(asyncio.Protocol, host, 1, local_addr=(host, port))
        assert str(info.value) == message
        with pytest.raises(exc_type) as info:
            await anyloop.create_server(asyncio.Protocol, host, port)
        assert str(info.value) == message
    run(anyloop, main())


def test_create_connection_sock_and_local_addr(anyloop):
    async def main():
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        sock = socket.create_connection(("127.0.0.1", port))
        tr, pr = await anyloop.create_connection(asyncio.Protocol, sock=sock)
        assert tr.get_extra_info("socket").fileno() == sock.fileno()
        tr.close()
        await asyncio.sleep(0.01)
        assert sock.fileno() == -1  # the transport closed the socket it adopted
        # local_addr binds the client end
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        lport = probe.getsockname()[1]
        probe.close()
        tr, pr = await anyloop.create_connection(asyncio.Protocol, "127.0.0.1", port,
                                                 local_addr=("127.0.0.1", lport))
        assert tr.get_extra_info("sockname") == ("127.0.0.1", lport)
        tr.close()
        server.close()
        await server.wait_closed()
    run(anyloop, main())



def test_local_addr_of_another_family(loop):
    """A local_addr with no address of the remote one's family: asyncio 3.11's OSError,
    in its words, which name the family by its repr (uvcffi printed the bare number)."""
    async def main():
        with pytest.raises(OSError) as info:
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", 1,
                                         local_addr=("::1", 0))
        assert str(info.value) == (
            f"no matching local address with family={socket.AF_INET!r} found")
    run(loop, main())

def test_connect_accepted_socket(anyloop):
    async def main():
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        client = socket.create_connection(lsock.getsockname())
        conn, _ = lsock.accept()
        received = anyloop.create_future()

        class P(asyncio.Protocol):
            def data_received(self, data):
                received.set_result(data)

        tr, pr = await anyloop.connect_accepted_socket(P, conn)
        client.sendall(b"hello")
        assert await received == b"hello"
        tr.close()
        client.close()
        lsock.close()
    run(anyloop, main())


def test_unix_server_and_connection(anyloop, tmp_path):
    path = str(tmp_path / "sock")

    async def main():
        # a stale socket file from an earlier run is removed
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()
        server = await asyncio.start_unix_server(echo, path)
        assert await roundtrip(lambda: asyncio.open_unix_connection(path), b"u" * 100000) \
            == b"u" * 100000
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(path)
        assert await roundtrip(lambda: asyncio.open_unix_connection(sock=sock)) == b"ping"
        server.close()
        await server.wait_closed()
        # a regular file in the way is not removed: bind fails
        with pytest.raises(OSError) as info:
            open(path + "2", "w").close()
            await asyncio.start_unix_server(echo, path + "2")
        assert info.value.errno == errno.EADDRINUSE
        with pytest.raises(ValueError, match="path and sock can not be specified"):
            await anyloop.create_unix_server(
                asyncio.Protocol, path, sock=socket.socket(socket.AF_UNIX)
            )
        with pytest.raises(ValueError, match="A UNIX Domain Stream Socket was expected"):
            await anyloop.create_unix_connection(asyncio.Protocol, sock=socket.socket())
        with pytest.raises(FileNotFoundError):
            await asyncio.open_unix_connection(str(tmp_path / "missing"))
    run(anyloop, main())


def test_unix_abstract_namespace(anyloop):
    name = f"\0uvcffi-test-{os.getpid()}-{anyloop.kind}"

    async def main():
        server = await asyncio.start_unix_server(echo, name)
        assert await roundtrip(lambda: asyncio.open_unix_connection(name)) == b"ping"
        server.close()
        await server.wait_closed()
    run(anyloop, main())


def test_server_lifecycle(anyloop):
    async def main():
        server = await anyloop.create_server(asyncio.Protocol, "127.0.0.1", 0,
                                             start_serving=False)
        assert not server.is_serving()
        port = server.sockets[0].getsockname()[1]
        async with server:
            await server.start_serving()
            assert server.is_serving()
            task = asyncio.ensure_future(server.serve_forever())
            await asyncio.sleep(0)
            with pytest.raises(RuntimeError, match="already being awaited"):
                await server.serve_forever()
            r, w = await asyncio.open_connection("127.0.0.1", port)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not server.is_serving()
            w.close()
        with pytest.raises(RuntimeError, match="is closed"):
            await server.serve_forever()
        server.close()  # twice is fine
    run(anyloop, main())


def test_server_close_keeps_and_then_closes_clients(anyloop):
    async def main():
        transports = []

        class P(asyncio.Protocol):
            def connection_made(self, tr):
                transports.append(tr)

        server = await anyloop.create_server(P, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        while not transports:
            await asyncio.sleep(0.001)
        server.close()
        # an accepted connection outlives the server
        assert not transports[0].is_closing()
        if hasattr(server, "close_clients"):
            server.close_clients()
        else:
            transports[0].close()
        assert await r.read() == b""
        w.close()
        await server.wait_closed()
    run(anyloop, main())


def test_accept_error_handler_and_protocol_factory_error(anyloop):
    async def main():
        contexts = []
        anyloop.set_exception_handler(lambda loop, ctx: contexts.append(ctx))

        def factory():
            raise ZeroDivisionError("no protocol")

        server = await anyloop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        if anyloop.kind == "uvcffi":
            # uvcffi closes the connection at once (asyncio leaves the socket to the GC,
            # which PyPy may never run) and reports the error (asyncio: in debug mode)
            assert await r.read() == b""
            assert contexts[0]["message"] == "Error on transport creation for incoming connection"
            assert isinstance(contexts[0]["exception"], ZeroDivisionError)
        w.close()
        server.close()
        await server.wait_closed()
    run(anyloop, main())



@pytest.mark.parametrize("debug", [False, True], ids=["normal", "debug"])
def test_protocol_factory_error_for_a_burst_of_connections(loop, debug):
    """A burst of connections accepted in one iteration for a server whose protocol
    factory fails: each is reported once and closed, and nothing else is reported.
    Their slots were never registered and lie past the loop's slot table (64 entries to
    start with): the pure-Python dispatch (PyPy's) reported an IndexError for each one's
    CLOSED event, and debug mode's dispatch let it out of run_until_complete."""
    loop.set_debug(debug)
    n = 100

    async def main():
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

        def factory():
            raise ZeroDivisionError("no protocol")

        server = await loop.create_server(factory, "127.0.0.1", 0, backlog=n * 2)
        address = server.sockets[0].getsockname()
        # Connected by the kernel before the loop runs again: accepted in one go.
        clients = [socket.create_connection(address) for _ in range(n)]
        try:
            for client in clients:
                client.setblocking(False)
                assert await loop.sock_recv(client, 1) == b""
        finally:
            for client in clients:
                client.close()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0)  # the last CLOSED events
        messages = [ctx["message"] for ctx in contexts]
        assert messages == ["Error on transport creation for incoming connection"] * n
    run(loop, main())


def test_sock_that_cannot_listen_stays_the_callers(anyloop):
    """create_server(sock=) with a socket listen() refuses (a connected one): OSError, and
    the socket is the caller's again, open; closing it closes its fd (the peer sees EOF).
    uvcffi's listener for it used to stay, holding a duplicate of the fd and deferring the
    socket's close() until the loop closed."""
    async def main():
        a, b = socket.socketpair()
        with b:
            with pytest.raises(OSError) as info:
                await anyloop.create_server(asyncio.Protocol, sock=a)
            assert info.value.errno == errno.EINVAL
            assert a.fileno() >= 0
            a.close()
            b.setblocking(False)
            assert b.recv(1) == b""
    run(anyloop, main())


def test_server_that_cannot_start_leaves_nothing_listening(loop):
    """One create_server() on the wildcard and on 127.0.0.1 with the same port: with
    SO_REUSEADDR both bind, but only the first to listen() can.  The OSError leaves nothing
    listening and no protocol made.  (asyncio 3.11 leaves the socket that did listen
    accepting connections for a server its caller never got; so did uvcffi.)"""
    async def main():
        made = []

        def factory():
            made.append(1)
            return asyncio.Protocol()

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with pytest.raises(OSError) as info:
            await loop.create_server(factory, ["0.0.0.0", "127.0.0.1"], port)
        assert info.value.errno == errno.EADDRINUSE
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        assert made == []
    run(loop, main())


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_failing_protocol_factory_closes_the_connections_socket(loop, tmp_path, kind):
    """create_connection() / create_unix_connection() whose protocol factory raises: the
    socket made for the connection is closed at once.  (asyncio leaves it to the garbage
    collector, the exception's traceback holding it open meanwhile; so did uvcffi.)  The
    listener never accepts: the kernel completes the connection, no fd of this process is
    added for it."""
    def factory():
        raise ZeroDivisionError("no protocol")

    def open_fds():
        return len(os.listdir("/proc/self/fd"))

    async def main():
        if kind == "tcp":
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            connect = functools.partial(loop.create_connection, port=listener.getsockname()[1],
                                        host="127.0.0.1")
        else:
            listener = socket.socket(socket.AF_UNIX)
            path = str(tmp_path / "sock")
            listener.bind(path)
            connect = functools.partial(loop.create_unix_connection, path=path)
        lost = loop.create_future()

        class Warm(asyncio.Protocol):
            def connection_lost(self, exc):
                lost.set_result(None)

        with listener:
            listener.listen()
            # What the loop opens once, on first use (its fd watcher's epoll), opens now.
            transport, _ = await connect(Warm)
            transport.abort()
            await lost
            before = open_fds()
            with pytest.raises(ZeroDivisionError) as info:
                await connect(factory)
            assert open_fds() == before
            del info
    run(loop, main())

def _run_script(script, timeout=120):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_ten_thousand_connections():
    """10,000 connections open at once on one uvcffi server loop (the clients run in a
    second process so each process needs ~10,000 fds)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 10200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < 10200: 10,000 connections need "
                    "that many fds in one process")
    limits = ("resource.setrlimit(resource.RLIMIT_NOFILE, "
              "(min(hard, 12000) if hard > 0 else 12000, hard))")
    server = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import asyncio, resource, sys, uvcffi
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        %s
        N = 10000
        active = 0
        peak = 0

        async def echo(reader, writer):
            global active, peak
            active += 1
            peak = max(peak, active)
            writer.write(await reader.readexactly(4))
            await writer.drain()
            await reader.read()  # hold the connection until the client closes it
            writer.close()
            active -= 1
            if active == 0:
                done.set()

        async def main():
            global done
            done = asyncio.Event()
            server = await asyncio.start_server(echo, "127.0.0.1", 0, backlog=4096)
            print(server.sockets[0].getsockname()[1], flush=True)
            await asyncio.wait_for(done.wait(), 240)
            server.close()
            print(peak, flush=True)
        uvcffi.run(main())
    """ % limits)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        out = _run_script("""
            import asyncio, resource, uvcffi
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            %s
            N = 10000

            async def main():
                conns = []
                for i in range(0, N, 500):
                    conns += await asyncio.gather(*[
                        asyncio.open_connection("127.0.0.1", %d) for _ in range(500)])
                for i, (r, w) in enumerate(conns):
                    w.write(b"%%04d" %% i)
                got = await asyncio.gather(*[r.readexactly(4) for r, w in conns])
                assert got == [b"%%04d" %% i for i in range(N)]
                # every connection is still open here: the server holds N at once
                for r, w in conns:
                    w.close()
                print(len(got))
            uvcffi.run(main())
        """ % (limits, port), timeout=280)
        assert out.strip() == "10000"
        assert int(server.stdout.readline()) == 10000  # the server's peak of open connections
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stdout.close()


def test_unix_server_empty_path_makes_no_socket(loop):
    """create_unix_server(P, "") raises asyncio's IndexError before any socket is made
    (asyncio leaves one open, held by the traceback until collected)."""
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(IndexError) as info:
        run(loop, loop.create_unix_server(asyncio.Protocol, ""))
    assert sorted(os.listdir("/proc/self/fd")) == before, info


def test_unix_server_bind_error_leaks_no_fd(anyloop):
    """A bind that fails (no such directory) raises OSError and closes its socket."""
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError):
        run(anyloop, anyloop.create_unix_server(asyncio.Protocol, "/nonexistent-dir/x/sock"))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    with pytest.raises(OSError):
        run(anyloop, anyloop.create_server(asyncio.Protocol, "127.0.0.1", taken.getsockname()[1]))
    taken.close()
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before
