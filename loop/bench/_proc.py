"""Child processes of the benchmark: started pinned, spoken to by lines, always ended.

Every server, worker and load generator the suite starts goes through `Child`, so
that one registry knows every pid the suite owns: `close_all()` (run from a
`finally` and at exit) ends exactly those pids and nothing else.
"""
from __future__ import annotations

import atexit
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

_LIVE: set[Child] = set()


class ChildError(Exception):
    """A child said "ERROR ...", died, or did not answer in time."""


def pin(pid: int, cpu: int | None) -> None:
    """Pin `pid` to one CPU when the machine has it; silently a no-op otherwise.

    Pinning keeps the server and the load generator off each other's core, which
    is what makes CPU-per-operation comparable between runs on a 2-core box.
    """
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return
    try:
        os.sched_setaffinity(pid, {cpu})
    except OSError:
        pass


class Child:
    """A subprocess with line-oriented stdin/stdout and stderr kept in a temp file.

    stderr goes to a file, not a pipe, so a chatty child can never block on a
    full pipe while we wait for its stdout; its tail explains failures.
    """

    def __init__(
        self, argv: list[str], cpu: int | None = None, env: dict[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        self.name = name or os.path.basename(argv[0])
        self._err = tempfile.TemporaryFile()
        # (stdin and stdout are pipes: never None below)
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env=env,
            close_fds=True,
        )
        _LIVE.add(self)
        self.pid = self.proc.pid
        pin(self.pid, cpu)
        self._buf = b""
        self.notes: list[str] = []  # "ERR ..." lines the child printed between answers

    # -- talking ------------------------------------------------------------
    def send(self, line: str) -> None:
        try:
            self.proc.stdin.write((line + "\n").encode())  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError, ValueError):
            pass  # the child is gone; the next readline says so

    def readline(self, timeout: float) -> Any:
        """One line without its newline; ChildError on EOF or timeout."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildError("%s: no answer within %.0f s" % (self.name, timeout))
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self.proc.poll()
                raise ChildError(self.death())
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(errors="replace").rstrip("\r")

    def expect(self, prefixes: Any, timeout: float) -> Any:
        """Read lines until one starts with one of `prefixes`; return (prefix, rest).

        "ERROR ..." from the child always ends the wait with ChildError;
        "ERR ..." lines (errors the loop reported while serving) are collected
        in `notes` so that a failed measurement can say what went wrong.
        """
        if isinstance(prefixes, str):
            prefixes = (prefixes,)
        deadline = time.monotonic() + timeout
        while True:
            line = self.readline(max(0.01, deadline - time.monotonic()))
            if line.startswith("ERROR"):
                raise ChildError(line[5:].strip() or "error")
            if line.startswith("ERR "):
                if len(self.notes) < 20:
                    self.notes.append(line[4:])
                continue
            for p in prefixes:
                if line.startswith(p):
                    return p, line[len(p):].strip()

    # -- state --------------------------------------------------------------
    def alive(self) -> Any:
        return self.proc.poll() is None

    def stderr_tail(self, limit: int = 400) -> Any:
        try:
            self._err.seek(0)
            data = self._err.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""
        lines = [line for line in data.splitlines() if line.strip()]
        # The last line of a traceback names the exception: the useful part.
        return (lines[-1] if lines else "")[-limit:]

    def death(self) -> Any:
        """How the child ended, with its last stderr line."""
        rc = self.proc.returncode
        tail = self.stderr_tail()
        what = "exited with %s" % rc if rc is not None else "closed its output"
        if rc is not None and rc < 0:
            try:
                what = "killed by %s" % signal.Signals(-rc).name
            except ValueError:
                pass
        return "%s %s%s" % (self.name, what, (": " + tail) if tail else "")

    # -- ending -------------------------------------------------------------
    def close(self, grace: float = 2.0) -> None:
        """Ask the child to quit, then SIGKILL this pid if it has not gone."""
        if self not in _LIVE:
            return
        _LIVE.discard(self)
        p = self.proc
        if p.poll() is None:
            self.send("quit")
            try:
                p.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        for f in (p.stdin, p.stdout, self._err):
            try:
                f.close()  # type: ignore[union-attr]
            except (OSError, ValueError):
                pass

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def close_all() -> None:
    """End every child this process started and has not yet closed."""
    for c in list(_LIVE):
        c.close(grace=0.5)


atexit.register(close_all)


# Imports this directory as the package "_uvcffi_bench" and runs one of its
# modules' main().  `python -m uvcffi.bench.server` would run uvcffi's own
# __init__ first: an asyncio or uvloop server must not fail because uvcffi
# (built in parallel, maybe mid-rebuild) does not import.  Only the uvcffi
# loop's own cells should say so, and they do, from loops.new_loop().
_BOOT = """\
import importlib, importlib.util, os, sys
d, mod = sys.argv[1], sys.argv[2]
del sys.argv[1:3]
spec = importlib.util.spec_from_file_location(
    "_uvcffi_bench", os.path.join(d, "__init__.py"), submodule_search_locations=[d])
pkg = importlib.util.module_from_spec(spec)
sys.modules["_uvcffi_bench"] = pkg
spec.loader.exec_module(pkg)
importlib.import_module("_uvcffi_bench." + mod).main()
"""


def python_module_argv(module: str, *args: Any) -> Any:
    """argv that runs bench module `module` ("server", "micro") with this very
    interpreter (CPython or PyPy), independently of uvcffi's importability."""
    here = os.path.dirname(os.path.abspath(__file__))
    return [sys.executable, "-c", _BOOT, here, module] + [str(a) for a in args]
