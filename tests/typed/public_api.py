"""What a user's type checker sees of uvcffi: tools/typecheck.py runs mypy --strict on this
file with the package (it is never run; pytest does not collect it).  Each assert_type is
a claim about the public annotations (typeshed's asyncio signatures)."""
from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

import uvcffi
from uvcffi.transports.stream import SocketTransport

if TYPE_CHECKING:
    from typing_extensions import assert_type


class Echo(asyncio.Protocol):
    pass


async def main(loop: uvcffi.Loop) -> int:
    transport, protocol = await loop.create_connection(Echo, "127.0.0.1", 8888)
    assert_type(transport, asyncio.Transport)
    assert_type(protocol, Echo)
    sock = socket.socket()
    transport2, _ = await loop.create_connection(Echo, sock=sock)
    assert_type(transport2, asyncio.Transport)
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    assert_type(server.sockets, tuple[asyncio.trsock.TransportSocket, ...])
    infos = await loop.getaddrinfo("localhost", 80)  # typeshed's _GetAddrInfoResult
    assert_type(infos[0][2], int)
    assert_type(loop.call_later(1.0, print, "x"), asyncio.TimerHandle)
    assert_type(loop.time(), float)
    assert_type(loop.stats(), dict[str, Any])
    assert_type(await loop.sock_recv(sock, 10), bytes)
    udp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, ("127.0.0.1", 0))
    assert_type(udp, asyncio.DatagramTransport)
    assert isinstance(transport, SocketTransport)
    assert_type(transport.get_write_buffer_size(), int)
    return 1


def entry_points() -> None:
    loop = uvcffi.new_event_loop()
    assert_type(loop, uvcffi.Loop)
    assert_type(uvcffi.run(main(loop)), int)
    assert_type(uvcffi.libuv_version(), str)
    policy: asyncio.AbstractEventLoopPolicy = uvcffi.EventLoopPolicy()
    assert_type(policy.new_event_loop(), asyncio.AbstractEventLoop)
    assert_type(uvcffi.EventLoopPolicy().new_event_loop(), uvcffi.Loop)
    abstract: asyncio.AbstractEventLoop = loop  # a Loop is an AbstractEventLoop
    del abstract
