"""The subprocess transport: subprocess_exec() and subprocess_shell().

A child is started by libuv's uv_spawn when uv_spawn can express every option asked for
(the common case, and the fast one); otherwise by subprocess.Popen, which knows them all
(preexec_fn, umask, user/group, process_group, ...).  Either way its pipes are uvcffi pipe
transports and its exit is watched in C (uvc_process.c): no child watcher, no SIGCHLD
handler of Python's involved.  C reaps a uv_spawn'ed child itself (the SpawnedProcess reads
a status the loop has not handed out yet from the loop's events); a Popen's child is reaped
here, when its exit event is handled, since Popen's own wait() cannot be taught that.

The protocol sees what asyncio's base_subprocess arranges: connection_made, then
pipe_data_received / pipe_connection_lost / process_exited as they happen (held back until
connection_made has run), and connection_lost(None) once the process has exited and every
pipe is closed; _wait() (what Process.wait() awaits) completes after that.
"""
from __future__ import annotations

import asyncio
import collections
import contextvars
import errno
import logging
import operator
import os
import stat
import subprocess
import threading
import time
import warnings
from collections.abc import Container
from typing import TYPE_CHECKING, Any, Callable

from uvcffi import _owners as owners
from uvcffi._errors import uv_error
from uvcffi._uv import ffi, lib
from uvcffi.transports._context import run_in_context

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop

logger = logging.getLogger("asyncio")

PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT
DEVNULL = subprocess.DEVNULL
_UV_ESRCH = -errno.ESRCH  # libuv's errors are negated errnos on Unix

_popen_code = subprocess.Popen.__init__.__code__
# The keywords this Python's Popen takes (PyPy 3.9's has no process_group, no pipesize).
_POPEN_KEYWORDS = frozenset(
    _popen_code.co_varnames[:_popen_code.co_argcount + _popen_code.co_kwonlyargcount])
# Popen keywords uv_spawn can honour when they have these (Popen's default) values; any
# other keyword or value makes the spawn go through subprocess.Popen.  Only those this
# Popen takes: any other, even with that value, is Popen's TypeError, as in asyncio.
_POPEN_DEFAULTS = {key: value for key, value in {
    "preexec_fn": None,
    "restore_signals": True,
    "process_group": None,
    "user": None,
    "group": None,
    "extra_groups": None,
    "umask": -1,
    "pipesize": -1,
    "startupinfo": None,
    "creationflags": 0,
}.items() if key in _POPEN_KEYWORDS}
# Popen keywords uvc_spawn implements itself.
_NATIVE = frozenset(("executable", "cwd", "env", "close_fds", "pass_fds", "start_new_session"))


def _fsencode_arg(value: Any) -> bytes:
    data = os.fsencode(value)
    if b"\0" in data:
        raise ValueError("embedded null byte")
    return data


def _inheritable_fds_above_stdio(keep: Container[int]) -> bool:
    """Fds >= 3 a child would inherit (not close-on-exec), except those in ``keep``."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return True  # cannot tell: let Popen close them
    for name in names:
        fd = int(name)
        if fd < 3 or fd in keep:
            continue
        try:
            if os.get_inheritable(fd):
                return True
        except OSError:
            pass  # the fd listdir itself used, closed by now
    return False


# What _may_need_a_shell() found, by (program, cwd, the child's PATH): the file execvp would
# run, its identity, and the answer.  The PATH search costs a stat for each directory before
# the program's: 150 us a spawn measured (a spawn of /bin/true costs 700 us of CPU).  A hit
# costs one stat, which also sees the file replaced, rewritten or its mode changed; only a
# file of that name appearing in an earlier PATH directory goes unseen (the new file then
# runs as uv_spawn runs it: through /bin/sh if it has neither ELF header nor #!).
_shell_answers: dict[tuple[bytes, bytes, Any], tuple[bytes, tuple[int, ...], bool]] = {}


def _file_identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _may_need_a_shell(program: Any, cwd: Any, env: Any) -> bool:
    """Whether the file the child would execute may be one execve() refuses with ENOEXEC (no
    ELF header, no #!), or cannot be told.  libuv's child runs it with glibc's execvp(), which
    then hands it to /bin/sh; Popen raises OSError(ENOEXEC) instead (or tries the next PATH
    entry), so such a program is left to Popen.  Looks the program up as execvp does: as a
    path when it has a slash, else along the child's PATH (relative to its cwd)."""
    try:
        name = os.fsencode(program)
        base = os.fsencode(cwd) if cwd is not None else b""
        if not name:
            return True  # Popen tries the PATH directories themselves (EACCES), execvp ENOENT
        if b"/" in name:
            search: Any = None
        elif env is None:
            # (the PATH string itself: os.get_exec_path() costs more than the rest of a
            # cache hit, with the warnings filters it sets and resets)
            search = os.environ.get("PATH")
        else:
            search = tuple(os.get_exec_path(env))
        key = (name, base, search)
        known = _shell_answers.get(key)
        if known is not None:
            try:
                if _file_identity(os.stat(known[0])) == known[1]:
                    return known[2]
            except OSError:
                pass  # gone: search again
        if search is None:
            candidates = [os.path.join(base, name)]
        else:
            candidates = [os.path.join(base, os.fsencode(d), name)
                          for d in os.get_exec_path(env)]
        for path in candidates:
            try:
                st = os.stat(path)
            except OSError:
                continue  # ENOENT, ENOTDIR...: execvp goes on to the next one
            if not stat.S_ISREG(st.st_mode) or not os.access(path, os.X_OK):
                continue  # EACCES: execvp goes on too
            with open(path, "rb") as f:
                head = f.read(4)
            answer = not (head == b"\x7fELF" or head[:2] == b"#!")
            if len(_shell_answers) >= 256:
                _shell_answers.clear()
            _shell_answers[key] = (path, _file_identity(st), answer)
            return answer
    except Exception:
        return True  # unreadable, or no path at all (bad types): Popen says what it says
    return False  # nothing to run: the spawn fails with execvp's error, as Popen's


def _uv_spawn(*args: Any) -> int:
    """lib.uvc_spawn (a module function so that tests can make the spawn itself fail)."""
    return lib.uvc_spawn(*args)


def _pidfd_watch(loop: AbstractEventLoop, pid: int) -> int:
    """Watch ``pid`` (a child started by Popen) in C: its slot, or UV_ENOSYS without
    pidfds (a module function so that tests can take the fallback path)."""
    return lib.uvc_process_watch(owners.uv(loop), pid)


class SpawnedProcess:
    """The 'subprocess' extra of a uv_spawn'ed child: the parts of subprocess.Popen's
    interface that make sense for it (pid, returncode, poll, wait, send_signal, terminate,
    kill, args, stdin/stdout/stderr)."""

    def __init__(self, args: Any, pid: int, stdin: Any, stdout: Any, stderr: Any) -> None:
        self.args = args
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        # (loop, process slot) until the transport has seen the exit: where an exit the
        # loop reaped, but has not handed out yet, can be read (see _reaped_elsewhere).
        self._exit_watch: tuple[Any, int] | None = None

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__}: returncode: {self.returncode} args: {self.args!r}>"

    def _status(self, status: int) -> None:
        self.returncode = os.waitstatus_to_exitcode(status)

    def _reaped_elsewhere(self) -> None:
        """waitpid found no child.  Normally the loop reaped it, in its poll, and the
        callbacks that were ready before that poll run before its events are handed out:
        the status is then read from the loop's pending exit event.  Reaped by anyone
        else, the status is gone: 0, as Popen says."""
        if self.returncode is not None:
            return
        watch = self._exit_watch
        record = watch[0]._undispatched_event(lib.UVC_EV_EXIT, watch[1]) if watch else None
        if record is not None and record[2] == lib.UVC_EXIT_REAPED:
            self.returncode = _returncode(record[0], record[1])
        else:
            self.returncode = 0

    def poll(self) -> int | None:
        """Return the returncode, or None while the child runs (reaps it if it exited)."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self._reaped_elsewhere()
            else:
                if pid == self.pid:
                    self._status(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the child exits (at most ``timeout`` seconds: TimeoutExpired) and
        return its returncode."""
        if timeout is None:
            while self.returncode is None:
                try:
                    pid, status = os.waitpid(self.pid, 0)
                except ChildProcessError:
                    self._reaped_elsewhere()
                else:
                    if pid == self.pid:
                        self._status(status)
            return self.returncode
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while self.poll() is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(min(delay, remaining, 0.05))
            delay *= 2
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the child unless it has exited (then nothing, as Popen)."""
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass  # exited and reaped (by a reaper thread) since the poll: as Popen

    def terminate(self) -> None:
        """send_signal(SIGTERM)."""
        self.send_signal(15)

    def kill(self) -> None:
        """send_signal(SIGKILL)."""
        self.send_signal(9)


def _returncode(status: int, term_signal: int) -> int:
    """Popen's returncode for an exit status and terminating signal (libuv's pair)."""
    return -term_signal if term_signal else status


def _reap(proc: Any) -> None:
    """Wait for a child the closed loop no longer watches (a SpawnedProcess or a Popen)."""
    try:
        proc.wait()
    except ChildProcessError:
        pass  # reaped elsewhere meanwhile


class _PipeProtocol(asyncio.Protocol):
    """Protocol of one of the child's pipes: forwards to the subprocess transport."""

    def __init__(self, proc: SubprocessTransport, fd: int) -> None:
        self.proc: Any = proc  # the SubprocessTransport, None once lost
        self.fd = fd
        self.pipe: asyncio.BaseTransport | None = None
        self.disconnected = False

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} fd={self.fd} pipe={self.pipe!r}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.pipe = transport

    def data_received(self, data: bytes) -> None:
        self.proc._pipe_data_received(self.fd, data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.disconnected = True
        self.proc._pipe_connection_lost(self.fd, exc)
        self.proc = None

    # Flow control of the child's stdin: the subprocess protocol hears it in the
    # subprocess transport's context (the pipe transport calls these in its own).
    def pause_writing(self) -> None:
        run_in_context(self.proc._context, self.proc._protocol.pause_writing)

    def resume_writing(self) -> None:
        run_in_context(self.proc._context, self.proc._protocol.resume_writing)


class SubprocessTransport(asyncio.SubprocessTransport):
    """A child process and its pipes as an asyncio.SubprocessTransport."""

    if TYPE_CHECKING:
        _extra: dict[str, Any]  # asyncio.BaseTransport's slot, which typeshed leaves out

    def __init__(
        self, loop: AbstractEventLoop, protocol: asyncio.BaseProtocol, args: Any, shell: bool,
        stdin: Any, stdout: Any, stderr: Any, bufsize: int, waiter: asyncio.Future[Any] | None,
        kwargs: dict[str, Any], extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(extra)
        self._loop = loop
        self._protocol: Any = protocol  # a SubprocessProtocol's methods are called
        self._closed = False
        self._proc: Any = None  # a SpawnedProcess or a subprocess.Popen
        self._pid: int | None = None
        self._slot: int | None = None  # the exit watch (process slot), None once the exit is seen
        self._returncode: int | None = None
        self._exit_waiters: list[asyncio.Future[int]] = []
        # Calls for the protocol made before connection_made has run, in order.
        self._pending_calls: collections.deque[tuple[Callable[..., object], tuple[Any, ...]]] = (
            collections.deque())
        self._pipes: dict[int, _PipeProtocol | None] = {}
        self._finished = False
        self._context = contextvars.copy_context()
        try:
            parent_ends = self._start(args, shell, stdin, stdout, stderr, bufsize, kwargs)
        except BaseException:
            self._closed = True
            raise
        self._pid = self._proc.pid  # type: ignore[attr-defined]  # set by _start()
        self._extra["subprocess"] = self._proc
        if loop.get_debug():
            program = args if isinstance(args, (bytes, str)) else args[0]
            logger.debug("process %r created: pid %s", program, self._pid)
        for fd in parent_ends:
            self._pipes[fd] = None  # connected by _connect_pipes
        loop.create_task(self._connect_pipes(parent_ends, waiter))

    # ---------------------------------------------------------------- starting

    def _start(
        self, args: Any, shell: bool, stdin: Any, stdout: Any, stderr: Any, bufsize: int,
        kwargs: dict[str, Any],
    ) -> dict[int, Any]:
        """Start the child; return {fd: parent's pipe object} for the PIPE streams."""
        given = args
        if shell:
            args = ["/bin/sh", "-c", args]
            if kwargs.get("executable") is not None:
                args[0] = kwargs["executable"]
        else:
            args = list(args)
        program = kwargs.get("executable")
        if program is None:
            program = args[0] if args else None
        if self._can_spawn(stdin, stdout, stderr, kwargs) and not _may_need_a_shell(
            program, kwargs.get("cwd"), kwargs.get("env")
        ):
            parent_ends = self._spawn(args, stdin, stdout, stderr, kwargs)
        else:
            parent_ends = self._popen(args, stdin, stdout, stderr, bufsize, kwargs)
        # The 'subprocess' extra shows the command as asyncio's Popen(shell=...) has it:
        # the shell command string, or the tuple of program and arguments.
        self._proc.args = given
        return parent_ends

    def _can_spawn(self, stdin: Any, stdout: Any, stderr: Any, kwargs: dict[str, Any]) -> bool:
        for key, value in kwargs.items():
            if key == "start_new_session" and not isinstance(value, int):
                return False  # Popen's TypeError (None, "yes", ...), not taken for a bool
            if key in _NATIVE:
                continue
            default = _POPEN_DEFAULTS.get(key, _NATIVE)  # (_NATIVE: no default at all)
            # The default itself, or equal and of its type: umask=-1.0 is Popen's TypeError.
            if value is not default and (type(value) is not type(default) or value != default):
                return False
        if lib.uvc_spawn_would_reset_signals():
            # An ignored or blocked signal a Popen child inherits and a uv_spawn child
            # would not (under nohup, in a background job, SIGCHLD set to SIG_IGN, ...).
            return False
        sources = []
        for i, spec in enumerate((stdin, stdout, stderr)):
            if spec is None or spec == PIPE or spec == DEVNULL:
                continue
            if spec == STDOUT and i == 2:
                continue
            if isinstance(spec, int) and spec >= 0:
                sources.append(spec)
                continue
            if not isinstance(spec, int) and hasattr(spec, "fileno"):
                try:
                    sources.append(spec.fileno())
                except Exception:
                    return False  # Popen raises what it raises for it
                continue
            return False  # STDOUT for stdin/stdout, a negative fd, ...: Popen's errors
        pass_fds = kwargs.get("pass_fds") or ()
        try:
            keep = {int(fd) for fd in pass_fds}
        except (TypeError, ValueError):
            return False
        if any(fd < 3 for fd in keep) or keep.intersection(sources):
            return False
        if kwargs.get("close_fds", True) and _inheritable_fds_above_stdio(keep):
            return False  # only Popen closes the fds the child would otherwise inherit
        return True

    def _spawn(
        self, args: Any, stdin: Any, stdout: Any, stderr: Any, kwargs: dict[str, Any],
    ) -> dict[int, Any]:
        loop = self._loop
        executable = kwargs.get("executable")
        program = executable if executable is not None else args[0]
        argv_bytes = [_fsencode_arg(a) for a in args]
        file_bytes = _fsencode_arg(program)
        cwd = kwargs.get("cwd")
        cwd_bytes = _fsencode_arg(cwd) if cwd is not None else None
        env = kwargs.get("env")
        env_bytes = None
        if env is not None:
            env_bytes = []
            for key, value in env.items():
                k = _fsencode_arg(key)
                if b"=" in k:
                    raise ValueError("illegal environment variable name")
                env_bytes.append(k + b"=" + _fsencode_arg(value))
        pass_fds = sorted({int(fd) for fd in (kwargs.get("pass_fds") or ())})

        created: list[int] = []  # every fd this call opened, closed on failure
        child_ends = []  # closed in the parent after the spawn
        parent_ends = {}
        fds = [0, 1, 2]
        try:
            for i, spec in enumerate((stdin, stdout, stderr)):
                if spec is None:
                    continue  # inherit the parent's fd i
                if spec == PIPE:
                    r, w = os.pipe()
                    created += (r, w)
                    child, parent = (r, w) if i == 0 else (w, r)
                    fds[i] = child
                    child_ends.append(child)
                    parent_ends[i] = parent
                elif spec == DEVNULL:
                    fds[i] = -1  # libuv opens /dev/null
                elif spec == STDOUT:
                    fds[2] = fds[1]
                elif isinstance(spec, int):
                    fds[i] = spec
                else:
                    fds[i] = spec.fileno()
            if pass_fds:
                fds.extend([-1] * (pass_fds[-1] + 1 - len(fds)))
                for fd in pass_fds:
                    fds[fd] = fd

            keep = []  # cdata must outlive the call
            c_args = [ffi.new("char[]", a) for a in argv_bytes]
            keep.extend(c_args)
            argv = ffi.new("char *[]", c_args + [ffi.NULL])
            envp = ffi.NULL
            if env_bytes is not None:
                c_env = [ffi.new("char[]", e) for e in env_bytes]
                keep.extend(c_env)
                envp = ffi.new("char *[]", c_env + [ffi.NULL])
            c_fds = ffi.new("int[]", fds)
            pid = ffi.new("int *")
            flags = lib.UVC_SPAWN_SETSID if kwargs.get("start_new_session") else 0
            slot = _uv_spawn(
                owners.uv(loop), file_bytes, argv, envp,
                cwd_bytes if cwd_bytes is not None else ffi.NULL,
                c_fds, len(fds), flags, pid,
            )
            if slot < 0:
                raise self._spawn_error(slot, program, cwd)
        except BaseException:
            for fd in created:
                os.close(fd)
            raise
        for fd in child_ends:
            os.close(fd)
        self._slot = slot
        owners.register_slot(loop, slot, self)
        files = {
            fd: open(end, "wb" if fd == 0 else "rb", buffering=0)
            for fd, end in parent_ends.items()
        }
        self._proc = SpawnedProcess(args, pid[0], files.get(0), files.get(1), files.get(2))
        self._proc._exit_watch = (loop, slot)
        return files

    @staticmethod
    def _spawn_error(code: int, program: Any, cwd: Any) -> OSError:
        err = -code
        # As Popen: an error before the exec names cwd (None without one), else the program,
        # either as given (bytes, a path object).  Before the exec are chdir errors (when
        # cwd is no directory to enter) and EBADF (the child's fds; never execve's).
        filename = program
        if err == errno.EBADF or (
            cwd is not None and err in (2, 13, 20) and not os.path.isdir(cwd)
        ):
            filename = cwd
        exc = uv_error(code)
        return type(exc)(err, os.strerror(err), filename) if err > 0 else exc

    def _popen(
        self, args: Any, stdin: Any, stdout: Any, stderr: Any, bufsize: int,
        kwargs: dict[str, Any],
    ) -> dict[int, Any]:
        loop = self._loop
        proc = subprocess.Popen(
            args, shell=False, stdin=stdin, stdout=stdout, stderr=stderr,
            universal_newlines=False, bufsize=bufsize, **kwargs
        )
        self._proc = proc
        slot = _pidfd_watch(loop, proc.pid)
        if slot >= 0:
            self._slot = slot
            owners.register_slot(loop, slot, self)
        else:
            # No pidfd on this kernel: wait for the exit in a thread of our own.
            threading.Thread(
                target=self._wait_in_thread, name=f"uvcffi-waitpid-{proc.pid}", daemon=True
            ).start()
        files = {}
        for fd, f in ((0, proc.stdin), (1, proc.stdout), (2, proc.stderr)):
            if f is not None:
                files[fd] = f
        return files

    def _wait_in_thread(self) -> None:
        proc, loop = self._proc, self._loop
        try:
            _, status = os.waitpid(proc.pid, 0)
            returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            returncode = None
        try:
            loop.call_soon_threadsafe(self._exit_seen, returncode)
        except RuntimeError:
            pass  # the loop is closed

    async def _connect_pipes(
        self, files: dict[int, Any], waiter: asyncio.Future[Any] | None,
    ) -> None:
        # Through the loop's public connect_*_pipe methods, as asyncio does: code that
        # wraps those methods sees the child's pipes too.
        try:
            loop = self._loop
            for fd, pipe in sorted(files.items()):
                connect: Callable[..., Any] = (
                    loop.connect_write_pipe if fd == 0 else loop.connect_read_pipe
                )
                _, proto = await connect(lambda fd=fd: _PipeProtocol(self, fd), pipe)
                self._pipes[fd] = proto
            loop.call_soon(self._protocol.connection_made, self, context=self._context)
            for callback, args in self._pending_calls:
                loop.call_soon(callback, *args, context=self._context)
            self._pending_calls = None  # type: ignore[assignment]  # calls go straight on
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            # A pipe left unconnected (connecting one failed: EMFILE, ...) would never be
            # disconnected, so the transport could never finish, and the close() and
            # _wait() subprocess_exec() does on this failure would hang (asyncio 3.11's
            # does): close those pipes and forget them; the transport finishes once the
            # child is gone and the connected pipes are closed.
            for fd, pipe in files.items():
                if self._pipes.get(fd) is None:
                    del self._pipes[fd]
                    pipe.close()
            # The protocol, never connected, hears nothing (its calls waited for
            # connection_made, as asyncio's do); the rest only has to end _wait().
            # (It cannot have finished: the pipe that failed was not disconnected.)
            self._protocol = asyncio.SubprocessProtocol()
            self._pending_calls = None  # type: ignore[assignment]  # calls go straight on
            self._try_finish()
            if waiter is not None and not waiter.cancelled():
                waiter.set_exception(exc)
        else:
            if waiter is not None and not waiter.cancelled():
                waiter.set_result(None)

    # ---------------------------------------------------------------- events

    def _uv_read(self, data: bytes) -> None:
        pass

    def _uv_event(self, kind: int, status: int, term_signal: int, how: int) -> None:
        if kind != lib.UVC_EV_EXIT:
            return
        if how == lib.UVC_EXIT_REAPED:
            returncode: int | None = _returncode(status, term_signal)
        elif how == lib.UVC_EXIT_UNREAPED:
            # A Popen's child, which C only saw exit: reaped here, in a callback of the loop,
            # as asyncio's pidfd watcher does, so that code holding the Popen either reaps
            # it first (with its status) or finds the returncode set.
            try:
                pid, wstatus = os.waitpid(self._proc.pid, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            # (not ours, or no longer a zombie: reaped by that code, or by a stranger)
            returncode = os.waitstatus_to_exitcode(wstatus) if pid else self._proc.returncode
        else:
            returncode = self._proc.returncode if self._proc is not None else None
        self._exit_seen(returncode)

    def _uv_closed(self) -> None:
        self._forget_slot()

    def _forget_slot(self) -> None:
        self._slot = None
        if isinstance(self._proc, SpawnedProcess):
            self._proc._exit_watch = None  # its exit is seen, or no longer comes

    def _detach_from_loop(self) -> None:
        """The loop closes while the child may still run: libuv stops watching it, so
        nothing would reap it and it would stay a zombie as long as this process lives.
        asyncio's child watcher reaps such a child whenever it exits: so does a thread."""
        proc = self._proc
        if proc is None or self._returncode is not None or self._slot is None:
            return  # reaped already, or by the thread of a child watched without pidfd
        # The slot goes with the loop: kill() and send_signal() go by pid from now on
        # (the reaper sets the returncode that makes them refuse once the pid is free).
        self._forget_slot()
        threading.Thread(target=_reap, args=(proc,), name=f"uvcffi-reap-{proc.pid}",
                         daemon=True).start()

    def _exit_seen(self, returncode: int | None) -> None:
        self._forget_slot()
        if self._returncode is not None:
            return
        if returncode is None:
            # Reaped by someone else, status lost: asyncio's child watchers report 255.
            logger.warning("Unknown child process pid %d, will report returncode 255", self._pid)
            returncode = 255
        if self._loop is not None and self._loop.get_debug():
            logger.info("%r exited with return code %r", self, returncode)
        self._returncode = returncode
        if self._proc.returncode is None:
            self._proc.returncode = returncode
        self._call(self._protocol.process_exited)
        self._try_finish()

    def _call(self, callback: Callable[..., object], *args: Any) -> None:
        if self._pending_calls is not None:
            self._pending_calls.append((callback, args))
        else:
            self._loop.call_soon(callback, *args, context=self._context)

    def _pipe_data_received(self, fd: int, data: bytes) -> None:
        self._call(self._protocol.pipe_data_received, fd, data)

    def _pipe_connection_lost(self, fd: int, exc: BaseException | None) -> None:
        self._call(self._protocol.pipe_connection_lost, fd, exc)
        self._try_finish()

    def _try_finish(self) -> None:
        if self._returncode is None or self._finished:
            return
        if all(p is not None and p.disconnected for p in self._pipes.values()):
            self._finished = True
            self._call(self._call_connection_lost, None)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            # Process.wait() returns only now: after process_exited and every pipe's
            # connection_lost, as asyncio does it.
            for waiter in self._exit_waiters:
                if not waiter.cancelled():
                    waiter.set_result(self._returncode)  # type: ignore[arg-type]  # the exit was seen
            # (nothing of the loop or the protocol stays referenced)
            self._exit_waiters = None  # type: ignore[assignment]
            self._loop = None  # type: ignore[assignment]
            self._proc = None
            self._protocol = None

    async def _wait(self) -> int:
        """Wait for the child's exit and return its returncode (what Process.wait()
        awaits through the protocol)."""
        if self._returncode is not None:
            return self._returncode
        waiter: asyncio.Future[int] = self._loop.create_future()
        self._exit_waiters.append(waiter)
        return await waiter

    # ---------------------------------------------------------------- public API

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._closed:
            info.append("closed")
        if self._pid is not None:
            info.append(f"pid={self._pid}")
        if self._returncode is not None:
            info.append(f"returncode={self._returncode}")
        elif self._pid is not None:
            info.append("running")
        else:
            info.append("not started")
        for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
            proto = self._pipes.get(fd)
            if proto is not None and proto.pipe is not None:
                info.append(f"{name}={proto.pipe}")
        return "<{}>".format(" ".join(info))

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Use ``protocol`` for the callbacks from now on."""
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        """Return the current protocol."""
        return self._protocol  # type: ignore[no-any-return]  # (Any inside)

    def is_closing(self) -> bool:
        """True once close() has been called."""
        return self._closed

    def get_pid(self) -> int:
        """The child's process id."""
        return self._pid  # type: ignore[return-value]  # set once started

    def get_returncode(self) -> int | None:
        """The child's returncode (negative: killed by that signal), None while it runs."""
        return self._returncode

    def get_pipe_transport(self, fd: int) -> asyncio.BaseTransport | None:
        """The transport of the child's pipe ``fd`` (0 stdin, 1 stdout, 2 stderr), or None
        when that stream is not a pipe."""
        proto = self._pipes.get(fd)
        return None if proto is None else proto.pipe

    def send_signal(self, signal: int) -> None:
        """Send ``signal`` to the child; nothing once it has exited (as Popen.send_signal);
        ProcessLookupError once the transport has finished (connection_lost), as asyncio."""
        if self._proc is None:
            raise ProcessLookupError()  # asyncio's _check_proc()
        if self._returncode is not None or self._proc.returncode is not None:
            # Exited, but the transport is not finished (a pipe still open, e.g. held by a
            # grandchild): asyncio's Popen.send_signal() sends nothing and raises nothing
            # (the pid may name another process by now).  So `except TimeoutError:
            # proc.kill()` does not fail because the child happened to exit.
            return
        if self._slot is not None:
            # operator.index, not int(): os.kill's TypeError for "15" or 9.5, not a ValueError
            # or a float's signal silently truncated
            err = lib.uvc_process_kill(owners.uv(self._loop), self._slot,
                                       operator.index(signal))
            if err == _UV_ESRCH:
                # C saw the exit during this iteration's poll; its event is not handled yet
                # (callbacks ready before the poll run first): exited, as above.
                return
            if err < 0:
                raise uv_error(err)
        else:
            # The loop closed (a reaper thread waits for the child) or no pidfd: by pid, as
            # Popen does it (polls first; a child gone meanwhile is no error).
            self._proc.send_signal(signal)

    def terminate(self) -> None:
        """send_signal(SIGTERM)."""
        self.send_signal(15)

    def kill(self) -> None:
        """send_signal(SIGKILL)."""
        self.send_signal(9)

    def close(self) -> None:
        """Close the pipes, and kill the child if it is still running."""
        if self._closed:
            return
        self._closed = True
        self._close_pipes()
        if self._proc is not None and self._returncode is None and self._proc.poll() is None:
            if self._loop is not None and self._loop.get_debug():
                logger.warning("Close running child process: kill %r", self)
            try:
                self._proc.kill()
            except ProcessLookupError:
                pass

    def _close_pipes(self) -> None:
        for proto in self._pipes.values():
            if proto is not None and proto.pipe is not None:
                proto.pipe.close()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if not self._closed:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            if self._loop is not None and self._loop.is_closed():
                # Collected after its loop closed, the child still running: asyncio's child
                # watcher holds the transport until the child exits, so the child runs on
                # there (a program may start a daemon and return).  Only the pipes close.
                self._closed = True
                self._close_pipes()
            else:
                self.close()
