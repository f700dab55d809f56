"""Socket options the stream and datagram methods set as asyncio sets them."""
from __future__ import annotations

import socket


def set_reuseport(sock: socket.socket) -> None:
    """SO_REUSEPORT for reuse_port=True; ValueError, as asyncio's, where it cannot be set."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError("reuse_port not supported by socket module, "
                         "SO_REUSEPORT defined but not implemented.") from None
