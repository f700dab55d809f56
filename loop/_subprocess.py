"""Loop methods: subprocess_exec and subprocess_shell (issue 4)."""
from __future__ import annotations

import subprocess
from typing import IO, TYPE_CHECKING, Any, Callable, Literal

from uvcffi.transports.subprocess import SubprocessTransport

if TYPE_CHECKING:
    import asyncio
    from asyncio.events import _ProtocolT

    from ._core import CoreLoop as _LoopBase  # the loop this is mixed into
else:
    _LoopBase = object


def _check_popen_args(universal_newlines: object, bufsize: object, text: object, encoding: object,
                      errors: object) -> None:
    # The pipes carry bytes: asyncio refuses every text-mode and buffering option.
    if universal_newlines:
        raise ValueError("universal_newlines must be False")
    if bufsize != 0:
        raise ValueError("bufsize must be 0")
    if text:
        raise ValueError("text must be False")
    if encoding is not None:
        raise ValueError("encoding must be None")
    if errors is not None:
        raise ValueError("errors must be None")


class SubprocessMethods(_LoopBase):
    """Mixed into uvcffi.Loop; relies on the core loop (uvcffi._core.CoreLoop)."""

    async def subprocess_exec(self, protocol_factory: Callable[[], _ProtocolT], program: Any,
                              *args: Any, stdin: int | IO[Any] | None = subprocess.PIPE,
                              stdout: int | IO[Any] | None = subprocess.PIPE,
                              stderr: int | IO[Any] | None = subprocess.PIPE,
                              universal_newlines: Literal[False] = False,
                              shell: Literal[False] = False, bufsize: Literal[0] = 0,
                              encoding: None = None, errors: None = None,
                              text: Literal[False] | None = None,
                              **kwargs: Any) -> tuple[asyncio.SubprocessTransport, _ProtocolT]:
        """Run ``program`` with ``args`` (str, bytes or path-like) as a child process and
        return (transport, protocol): an asyncio.SubprocessTransport and the
        asyncio.SubprocessProtocol ``protocol_factory()`` made.

        stdin/stdout/stderr take PIPE (a pipe transport), DEVNULL, STDOUT (stderr only),
        an fd, a file object or None (inherit); every other keyword is one of
        subprocess.Popen's (cwd, env, executable, start_new_session, pass_fds, close_fds,
        preexec_fn, user, group, umask, process_group, restore_signals, ...).  Text mode
        and buffering are refused with ValueError; a missing program raises
        FileNotFoundError.
        """
        if shell:
            raise ValueError("shell must be False")
        _check_popen_args(universal_newlines, bufsize, text, encoding, errors)
        self._check_closed()
        protocol = protocol_factory()
        transport = await self._subprocess_transport(
            protocol, (program,) + args, False, stdin, stdout, stderr, bufsize, kwargs
        )
        return transport, protocol

    async def subprocess_shell(self, protocol_factory: Callable[[], _ProtocolT], cmd: bytes | str,
                               *, stdin: int | IO[Any] | None = subprocess.PIPE,
                               stdout: int | IO[Any] | None = subprocess.PIPE,
                               stderr: int | IO[Any] | None = subprocess.PIPE,
                               universal_newlines: Literal[False] = False,
                               shell: Literal[True] = True, bufsize: Literal[0] = 0,
                               encoding: None = None, errors: None = None,
                               text: Literal[False] | None = None,
                               **kwargs: Any) -> tuple[asyncio.SubprocessTransport, _ProtocolT]:
        """Run ``cmd`` (str or bytes) with /bin/sh -c and return (transport, protocol),
        as subprocess_exec() does.  ValueError when cmd is not a string."""
        if not isinstance(cmd, (bytes, str)):
            raise ValueError("cmd must be a string")
        if universal_newlines:
            raise ValueError("universal_newlines must be False")
        if not shell:
            raise ValueError("shell must be True")
        _check_popen_args(universal_newlines, bufsize, text, encoding, errors)
        self._check_closed()
        protocol = protocol_factory()
        transport = await self._subprocess_transport(
            protocol, cmd, True, stdin, stdout, stderr, bufsize, kwargs
        )
        return transport, protocol

    async def _subprocess_transport(self, protocol: asyncio.BaseProtocol, args: Any, shell: bool,
                                    stdin: int | IO[Any] | None, stdout: int | IO[Any] | None,
                                    stderr: int | IO[Any] | None, bufsize: int,
                                    kwargs: dict[str, Any]) -> SubprocessTransport:
        waiter = self.create_future()
        transport = SubprocessTransport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize, waiter, kwargs
        )
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            # Cancelled (or failed) while connecting: do not leave the child behind.
            transport.close()
            await transport._wait()
            raise
        return transport
