"""The subprocess transport: subprocess_exec() and subprocess_shell().

A child is started by subprocess.Popen, as asyncio starts it (see SubprocessTransport._start
for why not libuv's uv_spawn); its pipes are uvcffi pipe transports, and its exit is watched
in C through a pidfd (uvc_process.c), which is a libuv poll handle: no child watcher, no
SIGCHLD handler involved.  C only sees the exit: the child is reaped here, when the exit
event is handled, so that code holding the Popen never finds its child gone with the status
unknown to it.

The protocol sees what asyncio's base_subprocess arranges: connection_made, then
pipe_data_received / pipe_connection_lost / process_exited as they happen (held back until
connection_made has run), and connection_lost(None) once the process has exited and every
pipe is closed; _wait() (what Process.wait() awaits) completes after that.
"""
from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import os
import subprocess
import threading
import warnings
from typing import TYPE_CHECKING, Any, Callable

from uvcffi import _owners as owners
from uvcffi._uv import lib
from uvcffi.transports._context import run_in_context

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop

logger = logging.getLogger("asyncio")


def _pidfd_watch(loop: AbstractEventLoop, pid: int) -> int:
    """Watch ``pid`` (a child started by Popen) in C: its slot, or UV_ENOSYS without
    pidfds (a module function so that tests can take the fallback path)."""
    return lib.uvc_process_watch(owners.uv(loop), pid)


def _reap(proc: Any) -> None:
    """Wait for a child (its Popen) the closed loop no longer watches."""
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
        self._proc: Any = None  # the subprocess.Popen, None once the transport finished
        self._pid: int | None = None
        self._slot: int | None = None  # the exit watch (a pidfd), None once the exit is seen
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
        """Start the child; return {fd: parent's pipe object} for the PIPE streams.

        With subprocess.Popen, as asyncio does: every Popen keyword, Popen's errors, and
        the signal dispositions, mask and exec rules (no /bin/sh fallback for a file
        without #!) of Popen's children.  And it is the faster way here: CPython's Popen
        starts the child with vfork, where libuv's uv_spawn forks (measured on CPython
        3.11: 1.5 ms and 260 us of CPU a spawn of /bin/true, against 2.5 ms and 750 us)."""
        loop = self._loop
        proc = subprocess.Popen(
            args, shell=shell, stdin=stdin, stdout=stdout, stderr=stderr,
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
        returncode: int | None = self._proc.returncode if self._proc is not None else None
        if how == lib.UVC_EXIT_UNREAPED:
            # C only saw the exit: the child is reaped here, in a callback of the loop, as
            # asyncio's pidfd watcher does, so that code holding the Popen either reaps it
            # first (with its status) or finds the returncode set.
            try:
                pid, wstatus = os.waitpid(self._proc.pid, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid:  # (else not ours, or no longer a zombie: reaped by that code, or not)
                returncode = os.waitstatus_to_exitcode(wstatus)
        self._exit_seen(returncode)

    def _uv_closed(self) -> None:
        self._slot = None

    def _detach_from_loop(self) -> None:
        """The loop closes while the child may still run: libuv stops watching it, so
        nothing would reap it and it would stay a zombie as long as this process lives.
        asyncio's child watcher reaps such a child whenever it exits: so does a thread."""
        proc = self._proc
        if proc is None or self._returncode is not None or self._slot is None:
            return  # reaped already, or by the thread of a child watched without pidfd
        self._slot = None  # (it goes with the loop)
        threading.Thread(target=_reap, args=(proc,), name=f"uvcffi-reap-{proc.pid}",
                         daemon=True).start()

    def _exit_seen(self, returncode: int | None) -> None:
        self._slot = None
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
        """Send ``signal`` to the child, through Popen.send_signal(): nothing once it has
        exited; ProcessLookupError once the transport has finished (connection_lost)."""
        if self._proc is None:
            raise ProcessLookupError()
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
