"""Loop methods: create_datagram_endpoint (issue 5)."""
from __future__ import annotations

import os
import socket
import stat
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable

from ._core import logger
from ._dns import address_addrinfo
from ._socketopts import set_reuseport
from .transports.datagram import SocketDatagramTransport, UDPTransport

if TYPE_CHECKING:
    import asyncio
    from asyncio.events import _ProtocolT

    from ._core import CoreLoop as _LoopBase  # the loop this is mixed into
else:
    _LoopBase = object

_unset = object()


class DatagramMethods(_LoopBase):
    """Mixed into uvcffi.Loop; relies on the core loop (uvcffi._core.CoreLoop)."""

    async def _datagram_resolve(self, address: tuple[Any, ...], family: int, proto: int,
                                flags: int) -> list[tuple[Any, Any, int, str, Any]]:
        host, port = address[:2]
        # An IP address with a numeric port, in any range, is used as it is, as asyncio
        # does: bind() or connect() then refuses a port outside 0-65535 (OverflowError),
        # which getaddrinfo would silently wrap (70000 -> 4464).
        infos = address_addrinfo(host, port, family, socket.SOCK_DGRAM, proto)
        if infos is not None:
            return infos
        return await self.getaddrinfo(
            host, port, family=family, type=socket.SOCK_DGRAM, proto=proto, flags=flags
        )

    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], _ProtocolT],
        local_addr: tuple[str, int] | str | None = None,
        remote_addr: tuple[str, int] | str | None = None,
        *,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        reuse_address: object = _unset,  # refused, as asyncio refuses it
        reuse_port: bool | None = None,
        allow_broadcast: bool | None = None,
        sock: socket.socket | None = None,
    ) -> tuple[asyncio.DatagramTransport, _ProtocolT]:
        """Create a datagram endpoint; return (transport, protocol).

        ``local_addr`` (host, port) is bound, ``remote_addr`` (host, port) connected to
        (with ``allow_broadcast`` it is only remembered as the default destination); host
        names are resolved with getaddrinfo(family, SOCK_DGRAM, proto, flags) and the first
        (family, proto) that works for both addresses is used.  With family=AF_UNIX the
        addresses are paths (a stale socket file at ``local_addr`` is removed).  ``sock``
        is an existing SOCK_DGRAM socket, used as is: no other socket argument may be given
        then (ValueError).  ``reuse_port`` sets SO_REUSEPORT, ``allow_broadcast``
        SO_BROADCAST.  ``reuse_address`` is refused as asyncio refuses it (SO_REUSEADDR
        would let other processes steal the port's datagrams).

        Raises ValueError for no address and no family, or no (family, proto) shared by
        both addresses; TypeError for a malformed address; OverflowError (bind()'s or
        connect()'s) for a port outside 0-65535 with an IP address; OSError when socket(),
        bind() or connect() fail.
        """
        if reuse_address is not _unset:
            if sys.version_info >= (3, 11):
                raise TypeError(
                    "create_datagram_endpoint() got an unexpected keyword argument "
                    "'reuse_address'"
                )
            if reuse_address:
                raise ValueError(
                    "Passing `reuse_address=True` is no longer supported, as the usage of "
                    "SO_REUSEPORT in UDP poses a significant security concern."
                )
            warnings.warn(
                "The *reuse_address* parameter has been deprecated as of 3.5.10 and is "
                "scheduled for removal in 3.11.",
                DeprecationWarning,
                stacklevel=2,
            )
        self._check_closed()
        if sock is not None:
            if sock.type != socket.SOCK_DGRAM:
                raise ValueError(f"A UDP Socket was expected, got {sock!r}")
            if (
                local_addr or remote_addr or family or proto or flags
                or reuse_port or allow_broadcast
            ):
                opts = dict(
                    local_addr=local_addr, remote_addr=remote_addr, family=family,
                    proto=proto, flags=flags, reuse_port=reuse_port,
                    allow_broadcast=allow_broadcast,
                )
                problems = ", ".join(f"{k}={v}" for k, v in opts.items() if v)
                raise ValueError(
                    "socket modifier keyword arguments can not be used "
                    f"when sock is specified. ({problems})"
                )
            sock.setblocking(False)
            r_addr = None
        else:
            sock, r_addr = await self._datagram_socket(
                local_addr, remote_addr, family, proto, flags, reuse_port, allow_broadcast
            )

        waiter = self.create_future()
        try:
            protocol = protocol_factory()
            # asyncio looks connection_made up as it makes the transport: a protocol without
            # one is refused here (AttributeError), before the socket is taken.
            protocol.connection_made  # noqa: B018
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                transport: UDPTransport | SocketDatagramTransport = UDPTransport(
                    self, sock, protocol, r_addr, waiter)
            else:
                transport = SocketDatagramTransport(self, sock, protocol, r_addr, waiter)
        except BaseException:
            sock.close()
            raise
        if self._debug:
            if local_addr:
                logger.info(
                    "Datagram endpoint local_addr=%r remote_addr=%r created: (%r, %r)",
                    local_addr, remote_addr, transport, protocol,
                )
            else:
                logger.debug(
                    "Datagram endpoint remote_addr=%r created: (%r, %r)",
                    remote_addr, transport, protocol,
                )
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol

    async def _datagram_socket(
        self, local_addr: tuple[str, int] | str | None, remote_addr: tuple[str, int] | str | None,
        family: int, proto: int, flags: int, reuse_port: bool | None, allow_broadcast: bool | None,
    ) -> tuple[socket.socket, Any]:
        """Make, set up, bind and connect the socket; return it and the remote address."""
        if not (local_addr or remote_addr):
            if family == 0:
                raise ValueError("unexpected address family")
            addr_pairs: Sequence[tuple[tuple[int, int], Sequence[Any]]] = (
                ((family, proto), (None, None)),)
        elif hasattr(socket, "AF_UNIX") and family == socket.AF_UNIX:
            for addr in (local_addr, remote_addr):
                if addr is not None and not isinstance(addr, str):
                    raise TypeError("string is expected")
            if local_addr and local_addr[0] not in (0, "\x00"):
                # A socket file left by an earlier run would make bind() fail.
                try:
                    # (a str: checked above)
                    if stat.S_ISSOCK(os.stat(local_addr).st_mode):  # type: ignore[arg-type]
                        os.remove(local_addr)  # type: ignore[arg-type]
                except FileNotFoundError:
                    pass
                except OSError as err:
                    logger.error(
                        "Unable to check or remove stale UNIX socket %r: %r", local_addr, err
                    )
            addr_pairs = (((family, proto), (local_addr, remote_addr)),)
        else:
            # (family, proto) -> [local address, remote address], in getaddrinfo's order
            infos_by_key: dict[tuple[int, int], list[Any]] = {}
            for idx, addr in ((0, local_addr), (1, remote_addr)):
                if addr is None:
                    continue
                if not (isinstance(addr, tuple) and len(addr) == 2):
                    raise TypeError("2-tuple is expected")
                infos = await self._datagram_resolve(addr, family, proto, flags)
                if not infos:
                    raise OSError("getaddrinfo() returned empty list")
                for fam, _, pro, _, address in infos:
                    infos_by_key.setdefault((fam, pro), [None, None])[idx] = address
            addr_pairs = [
                (key, pair)
                for key, pair in infos_by_key.items()
                if not ((local_addr and pair[0] is None) or (remote_addr and pair[1] is None))
            ]
            if not addr_pairs:
                raise ValueError("can not get address information")

        exceptions = []
        for (fam, pro), (local_address, remote_address) in addr_pairs:
            sock = None
            try:
                sock = socket.socket(family=fam, type=socket.SOCK_DGRAM, proto=pro)
                if reuse_port:
                    set_reuseport(sock)
                if allow_broadcast:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sock.setblocking(False)
                if local_addr:
                    sock.bind(local_address)
                if remote_addr and not allow_broadcast:
                    # A datagram connect() only sets the default peer: it never blocks.
                    sock.connect(remote_address)
            except OSError as exc:
                if sock is not None:
                    sock.close()
                exceptions.append(exc)
            except BaseException:
                if sock is not None:
                    sock.close()
                raise
            else:
                return sock, (remote_address if remote_addr else None)
        raise exceptions[0]
