"""Loop methods: getaddrinfo and getnameinfo on libuv's thread pool (issue 3).

A lookup that needs the resolver runs as a libuv request (uv_getaddrinfo/uv_getnameinfo);
its completion is a UVC_EV_DNS event, after which one C call copies the packed result out
and frees the request.  Hosts that are already IP addresses never leave the loop thread:
``numeric_addrinfo`` builds the answer socket.getaddrinfo would give.

asyncio's loop calls socket.getaddrinfo/socket.getnameinfo as the socket module names them
at the call, in the default executor: a program or test that replaces one of them (asyncssh's
suite maps test host names so) has its replacement asked.  So while one is replaced, the
loop asks it as asyncio does, for every argument, instead of libuv.
"""
from __future__ import annotations

import _socket
import operator
import socket
import struct
import sys
from typing import TYPE_CHECKING, Any, Callable, SupportsIndex

from . import _owners as owners
from ._errors import uv_error
from ._uv import ffi, lib

if TYPE_CHECKING:
    import asyncio
    from socket import _GetAddrInfoResult

    from ._core import CoreLoop
    from ._core import CoreLoop as _LoopBase  # the loop this is mixed into

    # getaddrinfo's answer, loosely: typeshed's _GetAddrInfoResult ties each address's shape
    # to its family, which the code building it from the C records cannot show.
    _AddrInfoList = list[tuple[Any, Any, int, str, Any]]
else:
    _LoopBase = object

_AF_INET = socket.AF_INET
_AF_INET6: Any = getattr(socket, "AF_INET6", None)
_AF_UNSPEC = socket.AF_UNSPEC
_STREAM = socket.SOCK_STREAM
_DGRAM = socket.SOCK_DGRAM
_TCP = socket.IPPROTO_TCP
_UDP = socket.IPPROTO_UDP
_inet_pton = socket.inet_pton
_inet_ntop = socket.inet_ntop

# socket.getaddrinfo hands out the enum members, not plain ints: so do we.
_FAMILIES: dict[int, Any] = {int(m): m for m in socket.AddressFamily}
_KINDS: dict[int, Any] = {int(m): m for m in socket.SocketKind}

# What socket.getaddrinfo answers for an IP address with each (type, proto) the numeric
# path handles: every other combination is left to the resolver and its errors.
_NUMERIC_KINDS: dict[tuple[int, int], tuple[tuple[Any, int], ...]] = {
    (0, 0): ((_KINDS[_STREAM], _TCP), (_KINDS[_DGRAM], _UDP), (_KINDS[socket.SOCK_RAW], 0)),
    (_STREAM, 0): ((_KINDS[_STREAM], _TCP),),
    (_STREAM, _TCP): ((_KINDS[_STREAM], _TCP),),
    (0, _TCP): ((_KINDS[_STREAM], _TCP),),
    (_DGRAM, 0): ((_KINDS[_DGRAM], _UDP),),
    (_DGRAM, _UDP): ((_KINDS[_DGRAM], _UDP),),
    (0, _UDP): ((_KINDS[_DGRAM], _UDP),),
}
# Flags that change nothing when the host is an address and the port a number.
_NUMERIC_FLAGS = socket.AI_PASSIVE | socket.AI_NUMERICHOST | getattr(socket, "AI_NUMERICSERV", 0)

_RECORD = struct.Struct("=iiiIII48s")
_RECORD_SIZE = lib.UVC_AI_RECORD_SIZE
assert _RECORD.size == _RECORD_SIZE
_INT_MAX = 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


def _numeric_port(port: object) -> int | None:
    """The port as an int when it is one (int, or str/bytes of ASCII digits), else None."""
    if port is None:
        return 0
    if type(port) is int:
        return port if 0 <= port <= 65535 else None
    if isinstance(port, (str, bytes)):
        if not port or not port.isdigit() or not port.isascii() or len(port) > 5:
            return None
        port = int(port)
        return port if port <= 65535 else None
    return None


def numeric_addrinfo(host: object, port: object, family: int = 0, type: int = 0, proto: int = 0,
                     flags: int = 0) -> _AddrInfoList | None:
    """socket.getaddrinfo's answer when ``host`` is an IPv4/IPv6 address and ``port`` a
    number, computed without the resolver; None when the resolver must be asked.

    Only inputs whose answer does not depend on the system's configuration are handled:
    the rest (names, service names, scoped IPv6, unusual type/proto/flags) return None.
    A port outside 0-65535 is the resolver's too: glibc wraps it (70000 gives 4464).
    """
    if not (isinstance(family, int) and isinstance(type, int) and isinstance(proto, int)
            and isinstance(flags, int)):
        return None
    kinds = _NUMERIC_KINDS.get((type, proto))
    if kinds is None or flags & ~_NUMERIC_FLAGS:
        return None
    port = _numeric_port(port)
    if port is None:
        return None
    return _literal_addrinfo(host, port, family, kinds)


def address_addrinfo(host: object, port: Any, family: int = 0, type: int = 0,
                     proto: int = 0) -> _AddrInfoList | None:
    """What the loop methods that connect or bind to a (host, port) use when ``host`` is
    an IPv4/IPv6 address, without asking getaddrinfo (None when they must ask it).

    asyncio's create_connection, create_server, create_datagram_endpoint and sock_connect
    take such a host as it is and the port as int(port) (None and empty mean 0), whatever
    its range: the bind() or connect() that uses the address then raises the socket
    module's OverflowError ("connect(): port must be 0-65535." on CPython), where
    getaddrinfo, or numeric_addrinfo above, would give an address on the wrapped port
    (70000 -> 4464).  uvcffi does the same, so the port is checked once, by the socket
    call that uses it.  ``flags`` are ignored here, as asyncio ignores them.  An IPv6
    address keeps the caller's spelling ("0:0::1", "::FFFF:127.0.0.1"), as asyncio's
    does: the errors that quote the address quote it as given.
    """
    if not (isinstance(family, int) and isinstance(type, int) and isinstance(proto, int)):
        return None
    # asyncio takes any of the protocols 0, TCP and UDP as the socket type's own (a UDP
    # proto with a stream socket connects over TCP); any other is the resolver's.
    if type not in (_STREAM, _DGRAM) or proto not in (0, _TCP, _UDP) or host is None:
        return None
    kinds = _NUMERIC_KINDS[(type, 0)]
    if port is None or (isinstance(port, (str, bytes)) and not port):
        port = 0
    else:
        try:
            port = int(port)  # service names ("http") are for the resolver
        except (TypeError, ValueError):
            return None
    # asyncio decodes a bytes host ("idna": a non-ASCII one raises UnicodeError) and hands
    # it, unless it has a "%" zone, to inet_pton, which refuses a NUL.  getaddrinfo takes
    # the name up to the NUL instead: "127.0.0.1\0..." connected to (or bound) 127.0.0.1.
    if isinstance(host, bytes):
        host = host.decode("idna")
    if isinstance(host, str) and "\0" in host and "%" not in host:
        raise ValueError("embedded null character")
    return _literal_addrinfo(host, port, family, kinds, as_given=True)


def _literal_addrinfo(host: object, port: int, family: int,
                      kinds: tuple[tuple[Any, int], ...],
                      as_given: bool = False) -> _AddrInfoList | None:
    if isinstance(host, bytes):
        try:
            host = host.decode("ascii")
        except UnicodeDecodeError:
            return None
    elif not isinstance(host, str):
        return None
    if "%" in host or "\0" in host:
        return None
    if family == _AF_UNSPEC:
        if ":" in host:
            family = _AF_INET6
        elif host[-1:].isdigit():
            family = _AF_INET
        else:
            return None
    if family == _AF_INET:
        try:
            _inet_pton(_AF_INET, host)
        except (OSError, ValueError):
            return None
        # inet_pton takes only plain dotted quads, which is already inet_ntop's spelling.
        addr: tuple[str, int] | tuple[str, int, int, int] = (host, port)
    elif _AF_INET6 is not None and family == _AF_INET6:
        try:
            packed = _inet_pton(_AF_INET6, host)
        except (OSError, ValueError):
            return None
        if not as_given:
            host = _inet_ntop(_AF_INET6, packed)  # getaddrinfo's spelling
        addr = (host, port, 0, 0)
    else:
        return None
    family = _FAMILIES[family]
    return [(family, kind, p, "", addr) for kind, p in kinds]


# socket.getaddrinfo before 3.12 (and PyPy's) raises OverflowError for a port int beyond
# a C long; from 3.12 on it passes any int on as its decimal string (the lookup then fails).
_PORT_INT_IS_C_LONG = sys.version_info < (3, 12) or sys.implementation.name != "cpython"


def _getaddrinfo_replaced(fn: object) -> bool:
    """Whether ``fn``, what socket.getaddrinfo names now, is not the socket module's own
    (a Python function of socket.py around _socket.getaddrinfo).  Told by its code, not by
    the object seen at import, so that one replaced before uvcffi was imported is told too."""
    code = getattr(fn, "__code__", None)
    return not (code is not None and code.co_name == "getaddrinfo"
                and code.co_filename == _SOCKET_FILE)


_SOCKET_FILE = getattr(socket, "__file__", None)
_STOCK_GETADDRINFO: object = socket.getaddrinfo if not _getaddrinfo_replaced(
    socket.getaddrinfo) else None
_STOCK_GETNAMEINFO = _socket.getnameinfo  # socket.getnameinfo is the C function itself


def _as_c_int(value: SupportsIndex) -> int:
    value = operator.index(value)
    if value > _INT_MAX:
        raise OverflowError("signed integer is greater than maximum")
    if value < -_INT_MAX - 1:
        raise OverflowError("signed integer is less than minimum")
    return value


def _gaierror(status: int) -> OSError:
    """The exception socket.getaddrinfo raises for a libuv resolver status."""
    eai = lib.uvc_gai_errno(status)
    if eai == 0:
        return uv_error(status)  # a system error (EAI_SYSTEM), an OSError as socket gives
    return socket.gaierror(eai, ffi.string(lib.uvc_gai_strerror(eai)).decode(errors="replace"))


def _unpack_addrinfo(data: bytes) -> _AddrInfoList:
    count = len(data) // _RECORD_SIZE
    canonname = data[count * _RECORD_SIZE:].decode(errors="surrogateescape")
    families, kinds = _FAMILIES, _KINDS
    result: _AddrInfoList = []
    for fam, kind, proto, port, flowinfo, scope_id, host in _RECORD.iter_unpack(
        data[: count * _RECORD_SIZE]
    ):
        name = host[: host.index(b"\0")].decode()
        if fam == _AF_INET:
            addr: tuple[str, int] | tuple[str, int, int, int] = (name, port)
        else:
            addr = (name, port, flowinfo, scope_id)
        result.append((families.get(fam, fam), kinds.get(kind, kind), proto, canonname, addr))
        canonname = ""  # as glibc, the name comes with the first entry only
    return result


class _Lookup:
    """A lookup in flight: the owner of its request slot until the UVC_EV_DNS event."""

    __slots__ = ("loop", "slot", "future", "unpack")

    def __init__(self, loop: CoreLoop, slot: int, future: asyncio.Future[Any],
                 unpack: Callable[[bytes], Any]) -> None:
        self.loop = loop
        self.slot = slot
        self.future = future
        self.unpack = unpack

    def _uv_event(self, kind: int, status: int, nbytes: int, c: int) -> None:
        loop = self.loop
        slot = self.slot
        # The request is freed below (no CLOSED event for requests): forget its slot now.
        owners.forget_slot(loop, slot)
        # A thread-pool lookup costs far more than this allocation.
        out = ffi.new("char[]", nbytes) if status == 0 and nbytes else ffi.NULL
        n = lib.uvc_dns_take(loop._uv, slot, out, nbytes)
        fut = self.future
        if fut.done():
            return  # cancelled meanwhile: the result (or UV_EAI_CANCELED) goes nowhere
        if status < 0:
            fut.set_exception(_gaierror(status))
        elif n < 0:
            fut.set_exception(uv_error(n))
        else:
            fut.set_result(self.unpack(ffi.buffer(out, n)[:] if n else b""))

    def _uv_closed(self) -> None:
        pass

    def __repr__(self) -> str:
        state = "done" if self.future.done() else "pending"
        return f"<_Lookup slot={self.slot} {state} {getattr(self.unpack, '__name__', '')}>"

    def cancel_request(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() and owners.owns_slot(self.loop, self.slot, self):
            lib.uvc_dns_cancel(self.loop._uv, self.slot)


class DnsMethods(_LoopBase):
    """Mixed into uvcffi.Loop; relies on the core loop (uvcffi._core.CoreLoop)."""

    async def getaddrinfo(self, host: bytes | str | None, port: bytes | str | int | None, *,
                          family: int = 0, type: int = 0, proto: int = 0,
                          flags: int = 0) -> _GetAddrInfoResult:
        """Resolve ``host``/``port`` as socket.getaddrinfo() does, without blocking the loop.

        Returns a list of (family, type, proto, canonname, sockaddr) tuples; raises
        socket.gaierror (or the same TypeError/OSError/UnicodeError socket.getaddrinfo
        raises for bad arguments).  IP addresses are answered at once; names are resolved
        on libuv's thread pool.
        """
        self._check_closed()  # asyncio's goes through run_in_executor, closed or not
        fn = socket.getaddrinfo
        if fn is not _STOCK_GETADDRINFO and _getaddrinfo_replaced(fn):
            # Replaced: asked as asyncio asks it, IP addresses and bad arguments included.
            return await self.run_in_executor(
                None, fn, host, port, family, type, proto, flags)
        info = numeric_addrinfo(host, port, family, type, proto, flags)
        if info is not None:
            return info
        return await self._getaddrinfo_lookup(  # type: ignore[no-any-return]
            host, port, family, type, proto, flags)

    def _getaddrinfo_lookup(self, host: object, port: object, family: int, type: int, proto: int,
                            flags: int) -> asyncio.Future[Any]:
        self._check_closed()
        # The arguments are checked as socket.getaddrinfo checks them, with its messages.
        if host is None:
            c_host = ffi.NULL
        elif isinstance(host, str):
            c_host = host.encode("idna")
        elif isinstance(host, bytes):
            c_host = host
        else:
            raise TypeError("getaddrinfo() argument 1 must be string or None")
        if port.__class__ is int:
            if _PORT_INT_IS_C_LONG and not _LONG_MIN <= port <= _LONG_MAX:
                raise OverflowError("Python int too large to convert to C long")
            c_port = b"%d" % port
        elif isinstance(port, str):
            c_port = port.encode("utf-8")
        elif isinstance(port, bytes):
            c_port = port
        elif port is None:
            c_port = ffi.NULL
        else:
            raise OSError("Int or String expected")
        family, type_, proto, flags = (
            _as_c_int(family), _as_c_int(type), _as_c_int(proto), _as_c_int(flags)
        )
        slot = lib.uvc_getaddrinfo(self._uv, c_host, c_port, family, type_, proto, flags)
        return self._dns_wait(slot, _unpack_addrinfo)

    def _dns_wait(self, slot: int, unpack: Callable[[bytes], Any]) -> asyncio.Future[Any]:
        fut = self.create_future()
        if slot < 0:
            fut.set_exception(_gaierror(slot))
            return fut
        lookup = _Lookup(self, slot, fut, unpack)
        self._slot_register(slot, lookup)
        fut.add_done_callback(lookup.cancel_request)
        return fut

    async def getnameinfo(self, sockaddr: tuple[str, int] | tuple[str, int, int, int],
                          flags: int = 0) -> tuple[str, str]:
        """Look ``sockaddr`` (host, port[, flowinfo, scope_id]) up as socket.getnameinfo()
        does, without blocking the loop: returns (host, service); raises socket.gaierror,
        or socket.getnameinfo's TypeError/OSError/OverflowError for bad arguments."""
        self._check_closed()
        fn = socket.getnameinfo
        if fn is not _STOCK_GETNAMEINFO:
            # Replaced: asked as asyncio asks it, whatever the arguments.
            return await self.run_in_executor(None, fn, sockaddr, flags)
        if not isinstance(sockaddr, tuple):
            raise TypeError("getnameinfo() argument 1 must be a tuple")
        flags = _as_c_int(flags)
        if not 2 <= len(sockaddr) <= 4 or not isinstance(sockaddr[0], str):
            raise TypeError("getnameinfo(): illegal sockaddr argument")
        host, port = sockaddr[0], _as_c_int(sockaddr[1])
        # CPython parses both as C unsigned ints that wrap (2**32 is 0, -1 is 2**32 - 1), as
        # its sendto() does, and then checks flowinfo's range: the same values here.
        flowinfo = operator.index(sockaddr[2]) & 0xFFFFFFFF if len(sockaddr) > 2 else 0
        scope_id = operator.index(sockaddr[3]) & 0xFFFFFFFF if len(sockaddr) > 3 else 0
        if flowinfo > 0xFFFFF:
            raise OverflowError("getnameinfo(): flowinfo must be 0-1048575.")
        # As socket.getnameinfo: the host must be numeric, resolved with AI_NUMERICHOST
        # (which never leaves the process, so it runs here), and must be one address.  The
        # C function, as socket.getnameinfo's own: a replaced socket.getaddrinfo is no part
        # of it.
        infos = _socket.getaddrinfo(host, str(port), _AF_UNSPEC, _DGRAM, 0,
                                    socket.AI_NUMERICHOST)
        if len(infos) != 1:
            raise OSError("sockaddr resolved to multiple addresses")
        family, _, _, _, addr = infos[0]
        if family == _AF_INET:
            if len(sockaddr) != 2:
                raise OSError("IPv4 sockaddr must be 2 tuple")
        elif family != _AF_INET6:
            raise OSError("getnameinfo(): unsupported family")
        # (an AF_INET or AF_INET6 address: typeshed's union has AF_UNIX's too)
        packed = _inet_pton(family, addr[0].partition("%")[0])  # type: ignore[union-attr]  # PyPy keeps the %scope
        slot = lib.uvc_getnameinfo(self._uv, family, packed, addr[1],  # type: ignore[arg-type]
                                   flowinfo, scope_id, flags)
        return await self._dns_wait(slot, _unpack_nameinfo)  # type: ignore[no-any-return]

    def _teardown_dns(self) -> None:
        """close(), before libuv goes: lookups still queued in the thread pool are dropped
        (those already running finish on their own: the C core does not wait for them)."""
        for owner in list(self._slots):
            if isinstance(owner, _Lookup):
                lib.uvc_dns_cancel(self._uv, owner.slot)


def _unpack_nameinfo(data: bytes) -> tuple[str, str]:
    host, _, service = data.partition(b"\0")
    return host.decode(errors="surrogateescape"), service.decode(errors="surrogateescape")
