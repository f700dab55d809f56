"""Loop methods: connect_read_pipe and connect_write_pipe (issue 4)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, TypeVar

from uvcffi.transports.pipe import ReadPipeTransport, WritePipeTransport

if TYPE_CHECKING:
    import asyncio
    from asyncio.events import _ProtocolT

    from uvcffi.transports.pipe import _PipeTransport

    from ._core import CoreLoop as _LoopBase  # the loop this is mixed into
    _PipeT = TypeVar("_PipeT", bound=_PipeTransport)
else:
    _LoopBase = object


class PipeMethods(_LoopBase):
    """Mixed into uvcffi.Loop; relies on the core loop (uvcffi._core.CoreLoop)."""

    async def connect_read_pipe(self, protocol_factory: Callable[[], _ProtocolT],
                                pipe: Any) -> tuple[asyncio.ReadTransport, _ProtocolT]:
        """Register the read end of ``pipe`` (a file-like object with fileno(): a pipe,
        FIFO, socket or character device) and return (transport, protocol): an
        asyncio.ReadTransport and the protocol ``protocol_factory()`` made.  The pipe is
        put in non-blocking mode; the transport closes it in connection_lost.  Raises
        ValueError for a regular file."""
        return await self._connect_pipe(ReadPipeTransport, protocol_factory, pipe)

    async def connect_write_pipe(self, protocol_factory: Callable[[], _ProtocolT],
                                 pipe: Any) -> tuple[asyncio.WriteTransport, _ProtocolT]:
        """Register the write end of ``pipe`` (a pipe, FIFO, socket or character device)
        and return (transport, protocol): an asyncio.WriteTransport with flow control
        (pause_writing()/resume_writing() on the protocol) and the protocol
        ``protocol_factory()`` made.  Raises ValueError for a regular file."""
        return await self._connect_pipe(WritePipeTransport, protocol_factory, pipe)

    async def _connect_pipe(self, transport_class: Callable[..., _PipeT],
                            protocol_factory: Callable[[], _ProtocolT],
                            pipe: Any) -> tuple[_PipeT, _ProtocolT]:
        self._check_closed()
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = transport_class(self, pipe, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol
