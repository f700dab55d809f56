"""The server under test: one process, one loop, one echo style.

    python -m uvcffi.bench.server --loop asyncio --kind tcp-protocol [--path P] [--cpu 0]

Control protocol (stdin/stdout lines, the same as echo_floor.c's):
    -> "READY <port|path>" once listening, or "ERROR <reason>" and exit;
    <- "start": snapshot this process's own getrusage(RUSAGE_SELF) and clock;
    <- "stop":  -> "RUSAGE <user s> <sys s> <wall s> <involuntary switches>"
                   since "start";
    <- "rss":   -> "RSS <bytes>" (resident set, for memory per connection);
    <- "quit" or EOF: exit at once.
    -> "ERR <reason>" whenever the loop reports an error while serving.

The control channel is a plain thread blocked in os.read(): it needs nothing
from the loop under test (no add_reader, no call_soon_threadsafe), so it works
even for a loop that implements little, and it costs nothing while idle.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import sys
import threading
import time
from typing import Any, Callable

from .loops import describe, new_loop

KINDS = ("tcp-protocol", "tcp-buffered", "tcp-streams", "tcp-sock", "unix-protocol", "udp",
         "tls-protocol")
READ_SIZE = 256 * 1024
BACKLOG = 4096  # the idle-connection workload opens 10,000 connections quickly


def emit(line: str) -> None:
    # os.write of one short line is atomic, so the control thread and the
    # main thread never interleave halves of lines.
    os.write(1, (line + "\n").encode())


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class EchoBufferedProtocol(asyncio.BufferedProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buf = bytearray(READ_SIZE)
        self.view = memoryview(self.buf)

    def get_buffer(self, sizehint: int) -> Any:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        # A bytearray slice is a copy: the transport may keep what it cannot
        # send right away while the next read overwrites self.buf.
        self.transport.write(self.buf[:nbytes])


class EchoDatagram(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


def _report(exc: Any) -> None:
    # Handler coroutines are tasks nobody awaits: without this their
    # exception (say NotImplementedError from a loop method that does not
    # exist yet) would surface only at garbage collection, and the cell would
    # read "server stalled" instead of naming the cause.
    emit("ERR " + describe(exc))


async def _stream_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    except Exception as e:
        _report(e)
    finally:
        writer.close()


async def _sock_echo(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    try:
        while True:
            data = await loop.sock_recv(sock, READ_SIZE)
            if not data:
                break
            await loop.sock_sendall(sock, data)
    except ConnectionError:
        pass
    except Exception as e:
        _report(e)
    finally:
        sock.close()


async def _sock_accept_loop(loop: asyncio.AbstractEventLoop, lsock: socket.socket) -> None:
    try:
        while True:
            conn, _ = await loop.sock_accept(lsock)
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            loop.create_task(_sock_echo(loop, conn))
    except Exception as e:
        _report(e)
        raise


async def start(
    loop: asyncio.AbstractEventLoop, kind: str, path: str, ssl_context: Any = None,
) -> Any:
    """Start serving; returns the port (TCP/UDP) or the path (Unix)."""
    host = "127.0.0.1"
    if kind == "tcp-protocol":
        srv = await loop.create_server(EchoProtocol, host, 0, backlog=BACKLOG)
    elif kind == "tls-protocol":
        srv = await loop.create_server(EchoProtocol, host, 0, backlog=BACKLOG, ssl=ssl_context)
    elif kind == "tcp-buffered":
        srv = await loop.create_server(EchoBufferedProtocol, host, 0, backlog=BACKLOG)
    elif kind == "tcp-streams":
        srv = await asyncio.start_server(_stream_echo, host, 0, backlog=BACKLOG, limit=READ_SIZE)
    elif kind == "unix-protocol":
        await loop.create_unix_server(EchoProtocol, path, backlog=BACKLOG)
        return path
    elif kind == "tcp-sock":
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((host, 0))
        lsock.listen(BACKLOG)
        lsock.setblocking(False)
        task = loop.create_task(_sock_accept_loop(loop, lsock))
        # Let the accept loop reach its first await: a loop without
        # sock_accept fails here, at start-up, with the real reason.
        await asyncio.sleep(0)
        if task.done() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]  # not None: checked
        start.keep = (task, lsock)  # type: ignore[attr-defined]  # kept alive
        return str(lsock.getsockname()[1])
    elif kind == "udp":
        transport, _ = await loop.create_datagram_endpoint(EchoDatagram, local_addr=(host, 0))
        return str(transport.get_extra_info("sockname")[1])
    else:
        raise ValueError("unknown kind %r" % kind)
    return str(srv.sockets[0].getsockname()[1])


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _control() -> None:
    ru0: Any = None
    t0: Any = None
    buf = b""
    while True:
        try:
            chunk = os.read(0, 4096)
        except OSError:
            chunk = b""
        if not chunk:
            os._exit(0)
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            cmd = line.strip().decode(errors="replace")
            if cmd == "start":
                ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
            elif cmd == "stop":
                ru1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
                if ru0 is None:
                    ru0, t0 = ru1, t1
                # nivcsw counts preemptions: other processes wanting CPU 0,
                # which is how a noisy neighbour shows up in the figures.
                emit("RUSAGE %.6f %.6f %.6f %d" % (ru1.ru_utime - ru0.ru_utime,
                                                   ru1.ru_stime - ru0.ru_stime, t1 - t0,
                                                   ru1.ru_nivcsw - ru0.ru_nivcsw))
            elif cmd == "rss":
                emit("RSS %d" % _rss_bytes())
            elif cmd == "quit":
                os._exit(0)


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def prepare_process(cpu: int | None) -> None:
    """A benchmark server's process: pinned to ``cpu`` (when given) and allowed as many
    fds as the hard limit."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass
    _raise_nofile()


def error_reporter() -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An exception handler that reports the first 5 errors as "ERR" lines.  Peers reset
    on purpose at the end of every run: resets and broken pipes are not worth a line."""
    errors = [0]

    def on_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            return
        errors[0] += 1
        if errors[0] <= 5:
            emit("ERR " + (describe(exc) if exc else str(context.get("message"))[:160]))

    return on_error


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m uvcffi.bench.server")
    ap.add_argument("--loop", required=True)
    ap.add_argument("--kind", required=True, choices=KINDS)
    ap.add_argument("--path", help="socket path for unix-protocol")
    ap.add_argument("--cert", help="certificate (PEM) for tls-protocol")
    ap.add_argument("--key", help="its private key (PEM)")
    ap.add_argument("--cpu", type=int, default=None)
    args = ap.parse_args(argv)
    prepare_process(args.cpu)
    try:
        loop = new_loop(args.loop)
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(error_reporter())
        ssl_context = None
        if args.kind.startswith("tls"):
            import ssl

            ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_context.load_cert_chain(args.cert, args.key)
        where = loop.run_until_complete(start(loop, args.kind, args.path, ssl_context))
    except BaseException as e:  # anything: the cell says n/a (reason)
        emit("ERROR " + describe(e))
        sys.stdout.flush()
        os._exit(3)
    threading.Thread(target=_control, daemon=True).start()
    emit("READY %s" % where)
    try:
        loop.run_forever()
    except BaseException as e:
        emit("ERROR run_forever: " + describe(e))
    os._exit(4)


if __name__ == "__main__":
    main()
