"""What the recipe tests share: a server started in its own process group (and always ended),
a free port, a small HTTP client, and the check that a reply came from a uvcffi loop.

Every wait is bounded and fails the test when it runs out; nothing is timed."""
import hashlib
import http.client
import importlib.util
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

APPS = Path(__file__).resolve().parent / "apps"
RUNTIME = f"{sys.implementation.name} {sys.version.split()[0]}"

# Bounds (seconds).  Generous: PyPy starts slowly and the machine is shared.  Running out of
# one fails the test; the per-test pytest-timeout is the watchdog behind them.
START = 60
REQUEST = 30
STOP = 30


def require(module, dist=None):
    """Skip unless ``module`` imports here, naming what is missing on which runtime."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(
            f"{dist or module} is not installed on {RUNTIME} "
            f"(tools/setup.sh installs it where pip can; it did not install here)"
        )


def dist_version(dist):
    from importlib.metadata import version

    return version(dist)


def major_minor(version):
    """(major, minor) of a version string such as "4.12.1" or "1.5.0rc1"."""
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def free_port():
    """A port free on 127.0.0.1 for a server about to start.  Picked below the kernel's
    ephemeral range (ip_local_port_range), so that no connection anywhere on the machine
    is given it as its local port before the server binds it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    candidates = random.sample(range(20000, low), min(50, low - 20000)) if low > 21000 else []
    for port in candidates + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]


def child_env(**extra):
    """The environment of a server process: the apps importable, output unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(APPS)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _group_members(pgid):
    """Live (not zombie) processes in process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            members.append(int(entry))
    return members


class Server:
    """A server process started by a recipe test, in a new session (so its workers are in
    its process group), output to a log file.  Used as a context manager: on the way out,
    whatever is left of the group is killed (SIGKILL to the group whose id is the pid this
    test started), also when the test failed."""

    def __init__(self, argv, log_path, *, cwd=None, env=None):
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.cwd = cwd
        self.env = env or child_env()
        self.proc = None

    def __enter__(self):
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.cwd, env=self.env, start_new_session=True)
        return self

    def __exit__(self, *exc):
        self.kill()
        return False

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def fail(self, why):
        pytest.fail(f"{why}\n--- server log ({' '.join(self.argv)}) ---\n{self.log()}",
                    pytrace=False)

    def wait_listening(self, port, timeout=START):
        """Wait until 127.0.0.1:port accepts a connection; fail if the server exits first
        or the bound runs out."""
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.fail(f"server exited with {rc} before listening on port {port}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.fail(f"server not listening on port {port} after {timeout} s")
            time.sleep(0.05)

    def wait_log(self, predicate, what, timeout=START):
        """Wait until ``predicate(log text)`` is true; fail if the bound runs out."""
        deadline = time.monotonic() + timeout
        while not predicate(self.log()):
            if time.monotonic() > deadline:
                self.fail(f"no {what} in the server log after {timeout} s")
            if self.proc.poll() is not None and not predicate(self.log()):
                self.fail(f"server exited with {self.proc.returncode} before {what}")
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM, timeout=STOP):
        """Send ``sig`` to the server (its main process only, as a service manager does) and
        wait for it to exit and for every process of its group to be gone.  Returns the
        exit status; fails if either takes longer than ``timeout``."""
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.fail(f"server still running {timeout} s after {signal.Signals(sig).name}")
        deadline = time.monotonic() + timeout
        while _group_members(self.pid):
            if time.monotonic() > deadline:
                self.fail(f"processes of the server's group still running {timeout} s after "
                          f"it exited: {_group_members(self.pid)}")
            time.sleep(0.05)
        return rc

    def kill(self):
        if self.proc is None:
            return
        # Only while the group still has a process: its id cannot name anyone else then.
        if self.proc.poll() is None or _group_members(self.pid):
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(STOP)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + STOP  # killed processes take a moment to be gone
        while _group_members(self.pid) and time.monotonic() < deadline:
            time.sleep(0.02)


class Reply:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def request(port, path="/", *, method="GET", body=None, timeout=REQUEST):
    """One HTTP/1.1 request on a new connection to 127.0.0.1:port (closed afterwards)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Connection": "close"}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return Reply(resp.status, dict(resp.getheaders()), resp.read())
    finally:
        conn.close()


def assert_uvcffi(info):
    """``info`` is the server side's loop_info() (apps/loopinfo.py): it ran on uvcffi."""
    assert info["uvcffi"] is True and info["loop"].startswith("uvcffi."), info
    assert info["runtime"] == sys.implementation.name, info


def said(log, event):
    """The loop infos of the ``recipe-app: EVENT {...}`` lines of a server log."""
    prefix = f"recipe-app: {event} "
    return [json.loads(line[len(prefix):]) for line in log.splitlines()
            if line.startswith(prefix)]


def python(*args):
    """argv running this test's interpreter (the runtime's venv)."""
    return [sys.executable, *args]


def exercise(port, pid=None):
    """The requests every recipe's server answers (the apps' common routes): GET / (its
    loop), POST /echo with 300 KiB (size and SHA-256 of what it read), GET /big (2 MiB),
    then three GET / on one connection.
    Checks each reply and that each came from a uvcffi loop (in process ``pid`` if given);
    returns the loop info of GET /."""
    reply = request(port, "/")
    assert reply.status == 200, reply.body
    info = reply.json()
    assert_uvcffi(info)
    if pid is not None:
        assert info["pid"] == pid, info

    body = os.urandom(300 * 1024)
    reply = request(port, "/echo", method="POST", body=body)
    assert reply.status == 200, reply.body
    echo = reply.json()
    assert (echo["size"], echo["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    assert_uvcffi(echo)

    n = 2 << 20
    reply = request(port, "/big?n=%d" % n)
    assert reply.status == 200 and reply.body == b"x" * n

    # requests one after another on a kept-alive connection (where the server keeps it)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST)
    try:
        for _ in range(3):
            conn.request("GET", "/")
            resp = conn.getresponse()
            assert resp.status == 200
            assert_uvcffi(json.loads(resp.read()))
    finally:
        conn.close()
    return info


def check_two_workers(server, port, tmp_path):
    """A server with two worker processes (each printing a startup line from its loop):
    both workers are on uvcffi loops, and both take connections from the shared listening
    socket: while one worker's loop is held (a request to /hold blocks it on purpose), the
    other must accept and answer.  Returns the workers' pids."""
    server.wait_log(lambda log: len(said(log, "startup")) == 2, "startup of both workers")
    server.wait_listening(port)
    started = said(server.log(), "startup")
    for info in started:
        assert_uvcffi(info)
    workers = {info["pid"] for info in started}
    assert len(workers) == 2 and server.pid not in workers, started

    marker, release = tmp_path / "held", tmp_path / "release"
    held = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST)
    try:
        held.request("GET", f"/hold?marker={marker}&release={release}",
                     headers={"Connection": "close"})
        server.wait_log(lambda log: marker.exists(), "held request (its marker file)")
        holder = json.loads(marker.read_text())
        other = request(port, "/").json()
        release.touch()
        reply = held.getresponse()
        assert reply.status == 200
        answered = json.loads(reply.read())
    finally:
        release.touch()
        held.close()
    for info in (holder, other, answered):
        assert_uvcffi(info)
    assert holder == answered
    assert {holder["pid"], other["pid"]} == workers
    exercise(port)
    return workers


def check_said_on_uvcffi(log, event, pids):
    """Each process of ``pids`` printed one ``event`` line from a uvcffi loop."""
    infos = said(log, event)
    assert sorted(i["pid"] for i in infos) == sorted(pids), log
    for info in infos:
        assert_uvcffi(info)
