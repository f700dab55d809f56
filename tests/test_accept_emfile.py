"""Accepting when the process has no fd left (EMFILE), as asyncio does it: the error goes to
the loop's exception handler, accepting pauses for asyncio.constants.ACCEPT_RETRY_DELAY and
the clients wait in the kernel's backlog until fds free up.  (libuv's uv_listen instead
accepts and closes them at once: its "emfile trick".)

Each scenario runs the server in a child process (this file, run as a script) so the lowered
RLIMIT_NOFILE stays out of the test runner; the test is the client side and talks to the
child over its stdin/stdout.  Nothing is timed: every wait has a watchdog that only a hang
reaches, and the child's accept attempts are ordered by what it reports, not by the clock.
"""
import errno
import json
import os
import select
import socket
import subprocess
import sys

import pytest

WATCHDOG = 60      # seconds; only a hang gets there
N_CLIENTS = 12
FREE_AT_LOG = 2    # the child frees its fds from the exception handler's 2nd call
CHILD_NOFILE = 128


def _line_of(i):
    # distinct, longer than one small read, one line each
    return b"%02d:" % i + bytes(range(33, 127)) * 20 + b"|%02d\n" % i


# ---------------------------------------------------------------------------- the client side


class Child:
    """The server process: lines it prints, with a watchdog on every wait."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)] + list(args),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.buf = b""
        self.lines = []

    def send(self, text):
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def pump(self):
        """Read what the child printed (called when its stdout is readable)."""
        data = os.read(self.proc.stdout.fileno(), 65536)
        if not data:
            self.fail("the server process ended early")
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        self.lines += [line.decode() for line in lines]

    def expect(self, prefix):
        """Wait for the next line; it must start with ``prefix``.  Returns the rest."""
        while not self.lines:
            if not select.select([self.proc.stdout], [], [], WATCHDOG)[0]:
                self.fail(f"no {prefix!r} from the server process within {WATCHDOG} s")
            self.pump()
        line = self.lines.pop(0)
        if not line.startswith(prefix):
            self.fail(f"expected {prefix!r}, got {line!r}")
        return line[len(prefix):].strip()

    def fail(self, why):
        if self.proc.poll() is None:
            self.proc.kill()
        err = self.proc.stderr.read().decode(errors="replace")
        self.kill()
        pytest.fail(f"{why}\n--- server stderr:\n{err}", pytrace=False)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            pipe.close()

    def finish(self):
        try:
            code = self.proc.wait(WATCHDOG)
        except subprocess.TimeoutExpired:
            self.fail("the server process did not exit")
        if code != 0:
            self.fail(f"the server process exited with {code}")


def _connect_clients(port, n):
    clients = []
    for i in range(n):
        c = socket.create_connection(("127.0.0.1", port), timeout=WATCHDOG)
        c.sendall(_line_of(i))
        clients.append(c)
    return clients


def _read_to_eof(sock):
    sock.settimeout(WATCHDOG)
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            pytest.fail(f"no echo (or EOF) within {WATCHDOG} s", pytrace=False)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _check_contexts(contexts, listening):
    """Each one exactly what asyncio's _accept_connection passes to the handler."""
    for ctx in contexts:
        assert ctx == {
            "keys": ["exception", "message", "socket"],
            "message": "socket.accept() out of system resource",
            "exception": ["OSError", errno.EMFILE, os.strerror(errno.EMFILE)],
            "socket": ["TransportSocket"] + listening,
        }


@pytest.mark.parametrize("kind", ["uvcffi", "asyncio"])
def test_exhausted_fds_keep_clients_waiting_then_served(kind):
    """asyncio's selector loop runs the same scenario as the reference."""
    child = Child(kind, "serve", str(N_CLIENTS))
    clients = []
    try:
        port = int(child.expect("PORT"))
        child.expect("EXHAUSTED")
        # The child's loop is blocked until CONNECTED: every client is in the kernel's
        # accept queue, its line sent, before the server tries its first accept.
        clients = _connect_clients(port, N_CLIENTS)
        child.send("CONNECTED")
        # Until the child frees its fds nothing can be served: a client that reads
        # anything now (EOF, a reset) was dropped.
        logs = 0
        while True:
            readable = select.select([child.proc.stdout] + clients, [], [], WATCHDOG)[0]
            if not readable:
                child.fail(f"nothing from the server within {WATCHDOG} s (after {logs} logs)")
            if child.proc.stdout in readable:
                child.pump()
                while child.lines and child.lines[0].startswith("LOG"):
                    logs += 1
                    assert int(child.expect("LOG")) == logs
                if child.lines and child.lines[0] == "FREED":
                    break
            for i, c in enumerate(clients):
                if c in readable:
                    try:
                        got = c.recv(65536, socket.MSG_PEEK)
                    except OSError as exc:
                        got = exc
                    child.fail(f"client {i} dropped while the server had no fd: {got!r}")
        child.expect("FREED")
        assert logs == FREE_AT_LOG
        # fds are free again: every client is served, byte for byte
        for i, c in enumerate(clients):
            assert _read_to_eof(c) == _line_of(i), f"client {i}"
        summary = json.loads(child.expect("SUMMARY"))
        child.finish()
    finally:
        for c in clients:
            c.close()
        child.kill()
    assert summary["served"] == N_CLIENTS
    if kind == "uvcffi":
        # Accepting paused for ACCEPT_RETRY_DELAY after the first failure.  (asyncio 3.11
        # does not: it tries `backlog` accepts per readiness event, failed or not, and logs
        # each; CPython gh-151615 later made it stop at the first, as uvcffi does.)
        assert summary["waited"] == [True] * (FREE_AT_LOG - 1)
    # one handler call per failed accept: the child freed the fds in the 2nd, and no
    # accept failed after that
    assert len(summary["contexts"]) == FREE_AT_LOG
    _check_contexts(summary["contexts"], summary["listening"])


def test_server_closed_while_paused_does_not_resume():
    """Closed while accepting is paused: the retry never runs (asyncio's does, and logs the
    ValueError its add_reader(-1) raises), and the server leaves no fd and no handle."""
    child = Child("uvcffi", "close", "2")
    clients = []
    try:
        port = int(child.expect("PORT"))
        child.expect("EXHAUSTED")
        clients = _connect_clients(port, 2)
        child.send("CONNECTED")
        summary = json.loads(child.expect("SUMMARY"))
        child.finish()
    finally:
        for c in clients:
            c.close()
        child.kill()
    assert len(summary["contexts"]) == 1  # the failed accept; nothing after the close
    _check_contexts(summary["contexts"], summary["listening"])
    assert summary["serving"] is False
    assert summary["fds_after"] == summary["fds_before"]
    assert summary["slots_after"] == summary["slots_before"]


# ---------------------------------------------------------------------------- the server side


def _say(*words):
    print(*words, flush=True)


def _open_fds():
    return sorted(int(fd) for fd in os.listdir("/proc/self/fd"))


def _exhaust_fds():
    """Open /dev/null until the process has no fd left; returns them."""
    hog = []
    while True:
        try:
            hog.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        except OSError as exc:
            assert exc.errno == errno.EMFILE, exc
            return hog


def _describe(ctx):
    """The context as JSON.  Never raises: an exception handler that fails is only logged,
    and the context it was given would go uncounted."""
    exc = ctx.get("exception")
    sock = ctx.get("socket")
    if sock is not None:
        try:
            name = list(sock.getsockname())
        except OSError as e:  # closed
            name = repr(e)
        sock = [type(sock).__name__, sock.fileno(), name]
    return {
        "keys": sorted(ctx),
        "message": ctx.get("message"),
        "exception": [type(exc).__name__, getattr(exc, "errno", None),
                      getattr(exc, "strerror", None)],
        "socket": sock,
    }


def _child(kind, mode, n):
    import asyncio
    import resource

    if kind == "uvcffi":
        import uvcffi
        from uvcffi._uv import lib
        loop = uvcffi.new_event_loop()

        def active_slots():  # handles the C core holds
            return lib.uvc_active_slots(loop._uv)
    else:
        loop = asyncio.SelectorEventLoop()

        def active_slots():
            return None
    asyncio.set_event_loop(loop)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(CHILD_NOFILE, soft), hard))

    contexts = []
    hog = []
    served = 0
    all_served = asyncio.Event()
    paused = asyncio.Event()

    def free_fds():
        while hog:
            os.close(hog.pop())

    # For each failed accept after the first: had a timer of ACCEPT_RETRY_DELAY, started
    # when the previous one was reported, run before it?  A loop that retries after that
    # delay (its timer starts after this one, with the same delay) says True; one that
    # retries at once (a busy loop on the readable listener) says False.
    waited = []
    delay_passed = []  # one flag per failed accept, set by its timer

    def handler(loop, ctx):
        contexts.append(_describe(ctx))
        paused.set()
        if delay_passed:
            waited.append(delay_passed[-1])
        delay_passed.append(False)
        loop.call_later(asyncio.constants.ACCEPT_RETRY_DELAY,
                        delay_passed.__setitem__, len(delay_passed) - 1, True)
        if mode == "serve":
            _say("LOG", len(contexts))
            if len(contexts) == FREE_AT_LOG:
                free_fds()
                _say("FREED")

    async def echo_line(reader, writer):
        nonlocal served
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()
        served += 1
        if served == n:
            all_served.set()

    async def watchdog(aw, what):
        # ends before the test's own, so that a hang shows what the child was waiting for
        try:
            await asyncio.wait_for(aw, WATCHDOG / 2)
        except asyncio.TimeoutError:
            raise AssertionError(f"server: {what()} after {WATCHDOG / 2} s") from None

    async def main():
        loop.set_exception_handler(handler)
        fds_before = _open_fds()
        slots_before = active_slots()
        server = await asyncio.start_server(echo_line, "127.0.0.1", 0)
        listening = [server.sockets[0].fileno(), list(server.sockets[0].getsockname())]
        _say("PORT", listening[1][1])
        hog.extend(_exhaust_fds())
        _say("EXHAUSTED")
        # Block the loop (no accept can happen) until the clients are all queued.
        assert sys.stdin.readline().strip() == "CONNECTED"
        summary = {"listening": listening, "contexts": contexts, "waited": waited}
        if mode == "serve":
            await watchdog(all_served.wait(), lambda: f"{served} of {n} clients served")
            server.close()
            await server.wait_closed()
            summary["served"] = served
        else:
            await watchdog(paused.wait(), lambda: "no failed accept reported")
            server.close()
            free_fds()
            await server.wait_closed()
            # Run past the moment a retry scheduled at the pause would run: a timer
            # started after it with the same delay (and a margin) fires after it.
            await asyncio.sleep(asyncio.constants.ACCEPT_RETRY_DELAY + 0.5)
            for _ in range(3):
                await asyncio.sleep(0)
            summary.update(serving=server.is_serving(), fds_before=fds_before,
                           fds_after=_open_fds(), slots_before=slots_before,
                           slots_after=active_slots())
        _say("SUMMARY", json.dumps(summary))

    try:
        loop.run_until_complete(main())
    finally:
        free_fds()
        loop.close()


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], int(sys.argv[3]))
