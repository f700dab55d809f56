"""Datagram transports: UDP on a libuv uv_udp_t, other families (AF_UNIX) on the socket.

Both are asyncio.DatagramTransport subclasses with asyncio's behaviour: connection_made,
then datagram_received/error_received, then connection_lost once; sendto() sends at once
and buffers only what would block; close() flushes the buffer first, abort() drops it.
"""
from __future__ import annotations

import asyncio
import collections
import contextvars
import errno
import logging
import operator
import socket
import sys
import warnings
from asyncio import trsock
from typing import TYPE_CHECKING, Any, Callable, SupportsIndex

from .. import _owners as owners
from .._errors import uv_error
from .._signals import leave_if_interrupted
from .._uv import ffi, lib
from . import _sockref
from ._base import TransportBase
from ._context import run_in_context
from ._flow import water_marks

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop, BaseProtocol

logger = logging.getLogger("asyncio")

EV_UDP_RECV = lib.UVC_EV_UDP_RECV
EV_UDP_SEND = lib.UVC_EV_UDP_SEND
EV_READ_ERROR = lib.UVC_EV_READ_ERROR
EV_FD_LOST = lib.UVC_EV_FD_LOST
SOCKADDR_SIZE = lib.UVC_SOCKADDR_SIZE
UDP_QUEUED = lib.UVC_UDP_QUEUED
_udp_send = lib.uvc_udp_send
_ECANCELED = -errno.ECANCELED

# Address conversions are cached per transport; a server talking to very many peers just
# starts its cache over.
_ADDR_CACHE_MAX = 4096

# socket.sendto()'s errors for a bad port differ by runtime, and so does when it checks
# the range: CPython names the call in the message and resolves the host first (so an
# unknown host is a gaierror whatever the port), PyPy checks the port first.
_PYPY = sys.implementation.name == "pypy"
_CALLER = "" if _PYPY else "sendto(): "
_PORT_RANGE = _CALLER + "port must be 0-65535."
# The ints the port conversion takes before the range check: a C int on CPython, whose
# message for the others is the range one; a machine word on PyPy.
_PORT_INT_MIN, _PORT_INT_MAX, _PORT_INT_MSG = (
    (-(2**63), 2**63 - 1, "int too large to convert to int") if _PYPY
    else (-(2**31), 2**31 - 1, _PORT_RANGE)
)


def _sendto_port(port: SupportsIndex) -> int:
    """The port of a sendto() address as an int, or the TypeError/OverflowError
    socket.sendto() raises for its type or size (its range is checked apart)."""
    try:
        port = operator.index(port)
    except TypeError:
        if not _PYPY:
            raise  # CPython's own words: "'str' object cannot be interpreted as an integer"
        raise TypeError(f"expected integer, got {type(port).__name__} object") from None
    if not _PORT_INT_MIN <= port <= _PORT_INT_MAX:
        raise OverflowError(_PORT_INT_MSG)
    return port


_FLOW_RANGE = _CALLER + "flowinfo must be 0-1048575."


def _sendto_ipv6_extras(flowinfo: Any, scope_id: Any) -> tuple[int, int]:
    """The flowinfo and scope id of an AF_INET6 sendto() address as socket.sendto()
    converts them, or its TypeError/ValueError/OverflowError (the flowinfo's range is
    checked apart).  CPython takes both as C unsigned ints without an overflow check, so
    they wrap (a scope id of -1 is sent as 0xFFFFFFFF); PyPy takes the flowinfo as a
    machine word and refuses a negative scope id or one of 2**64 or more."""
    if not _PYPY:
        return operator.index(flowinfo) & 0xFFFFFFFF, operator.index(scope_id) & 0xFFFFFFFF
    flowinfo = _sendto_port(flowinfo)
    if not isinstance(scope_id, int):
        raise TypeError(f"expected integer, got {type(scope_id).__name__} object")
    if scope_id < 0:
        # (PyPy's words differ for a number beyond a machine word)
        suffix = "" if scope_id >= -(2**63) else " int"
        raise ValueError("cannot convert negative integer to unsigned" + suffix)
    if scope_id >= 2**64:
        raise OverflowError("int too large to convert to unsigned int")
    return flowinfo, scope_id & 0xFFFFFFFF


class _DatagramTransportBase(TransportBase, asyncio.DatagramTransport, asyncio.Transport):
    """What both datagram transports share: state, flow control, protocol calls, closing.

    Also an asyncio.Transport, as asyncio's own datagram transports are (code and tests
    check isinstance(transport, asyncio.Transport)); its write methods are not supported,
    but receiving can be paused, as on asyncio's (pause_reading, resume_reading)."""

    _sock: socket.socket | None = None  # read by __del__ even when __init__ failed
    _read_paused = False  # pause_reading()
    _made = False  # connection_made() has run: receiving may start

    if TYPE_CHECKING:
        _extra: dict[str, Any]  # asyncio.BaseTransport's slot, which typeshed leaves out
        _protocol: Any  # (its methods are called by name)

        # each kind's (UDPTransport, SocketDatagramTransport)
        def _start_reading(self) -> None: ...
        def _stop_reading(self) -> None: ...
        def _drop_buffer(self) -> None: ...
        def _release(self) -> None: ...

    def __init__(
        self, loop: AbstractEventLoop, sock: socket.socket, protocol: BaseProtocol, address: Any,
        waiter: asyncio.Future[Any] | None,
    ) -> None:
        super().__init__(None)
        self._loop = loop
        self._sock = sock
        self._sock_fd = sock.fileno()
        # The caller may still close its socket object: for the Unix transport that would
        # pull the fd from under the loop (transports/_sockref.py).
        self._sock_held = _sockref.hold(sock)
        self._protocol = protocol
        # Protocol callbacks run in the context the transport was created in.
        self._context = contextvars.copy_context()
        self._address = address
        self._extra["socket"] = trsock.TransportSocket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        try:
            self._extra["peername"] = sock.getpeername()
        except OSError:
            self._extra["peername"] = None
        self._closing = False
        self._conn_lost = 0  # > 0 once connection_lost is scheduled; counts later sends
        self._pending = 0
        self._high_water, self._low_water = water_marks()
        self._protocol_paused = False
        owners.claim_fd(loop, self._sock_fd, self)
        loop.call_soon(self._connection_made, waiter, context=self._context)

    def _connection_made(self, waiter: asyncio.Future[Any] | None) -> None:
        try:
            self._protocol.connection_made(self)
        finally:
            # Receive only once connection_made() has run, even if it failed (as asyncio),
            # and unless it paused reading.
            self._made = True
            if not self._closing and not self._read_paused:
                self._start_reading()
            if waiter is not None and not waiter.cancelled():
                waiter.set_result(None)

    def __repr__(self) -> str:
        info = [self.__class__.__name__]
        if self._sock is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        info.append(f"bufsize={self._pending}")
        if self._protocol_paused:
            info.append("paused")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if self._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._release()

    # ---------------------------------------------------------------- BaseTransport

    def is_closing(self) -> bool:
        """True once close() or abort() was called (or the transport failed)."""
        return self._closing

    def set_protocol(self, protocol: BaseProtocol) -> None:
        """Make ``protocol`` receive the transport's callbacks from now on."""
        self._protocol = protocol

    def get_protocol(self) -> BaseProtocol:
        """The current protocol."""
        return self._protocol  # type: ignore[no-any-return]  # (Any inside)

    # ---------------------------------------------------------------- receiving

    def is_reading(self) -> bool:
        """True unless reading is paused or the transport is closing."""
        return not self._closing and not self._read_paused

    def pause_reading(self) -> None:
        """Receive no datagrams until resume_reading(): they wait in the socket's buffer
        (and, as for any datagram, are dropped by the kernel when it is full).  Does
        nothing when paused already or closing."""
        if self._closing or self._read_paused:
            return
        self._read_paused = True
        self._stop_reading()

    def resume_reading(self) -> None:
        """Receive again after pause_reading().  Does nothing unless paused."""
        if self._closing or not self._read_paused:
            return
        self._read_paused = False
        self._resume_receiving()

    def _resume_receiving(self) -> None:
        if self._made:
            self._start_reading()

    def close(self) -> None:
        """Stop receiving, send what is buffered, then call connection_lost(None) once.

        Does nothing if the transport is already closing.
        """
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if not self._pending:
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None, context=self._context)

    def abort(self) -> None:
        """Close at once: buffered datagrams are dropped; connection_lost(None) follows."""
        self._force_close(None)

    # ---------------------------------------------------------------- sending

    @staticmethod
    def _has_data(data: bytes | bytearray | memoryview) -> bool:
        """asyncio's first check: the data type; then whether there is anything to send
        (empty data is dropped before the address is looked at, as asyncio does)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        return bool(data)

    def _check_address(self, addr: Any) -> Any:
        """asyncio's check of the address given to a connected transport.  Returns the
        address to send to."""
        if self._address:
            if addr not in (None, self._address):
                raise ValueError(f"Invalid address: must be None or {self._address}")
            return self._address
        return addr


    # ---------------------------------------------------------------- errors and closing

    def _send_failed(self, exc: BaseException, in_sendto: bool = False) -> None:
        """A send (or its address) raised: an OSError goes to error_received() and the
        transport lives on; anything else (socket.sendto's TypeError or OverflowError for
        a bad address) is fatal for the transport, as in asyncio."""
        if isinstance(exc, OSError):
            self._protocol_error(exc, in_sendto)
        else:
            self._fatal_error(exc, "Fatal write error on datagram transport")

    def _protocol_error(self, exc: OSError, in_sendto: bool = False) -> None:
        """An OSError of one datagram: the protocol hears of it, the transport lives on.

        ``in_sendto``: the error is sendto()'s own, and error_received() is called inside
        it, as asyncio calls it: what error_received() raises then goes to sendto()'s
        caller, as in asyncio.  From the loop, it goes to the exception handler."""
        if in_sendto:
            # (the caller may be one of this transport's callbacks, already in its context)
            run_in_context(self._context, self._protocol.error_received, exc)
            return
        try:
            run_in_context(self._context, self._protocol.error_received, exc)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as cb_exc:
            self._protocol_exception(cb_exc, "error_received")

    def _protocol_exception(self, exc: BaseException, method: str) -> None:
        """A protocol callback raised: reported, as asyncio's loop reports it; the transport
        lives on.  A signal handler's exception then leaves the loop."""
        self._report(exc, f"Exception in callback {method}()")
        leave_if_interrupted(exc)

    def _stop_reading_for_close(self) -> None:
        self._stop_reading()

    def _drop_pending(self) -> None:
        self._drop_buffer()

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._release()
            owners.release_fd(self._loop, self._sock_fd, self)
            self._protocol = None
            self._loop = None  # type: ignore[assignment]  # (no cycles)


    def _close_sock(self, sock: socket.socket) -> None:
        sock.close()
        if self._sock_held:
            self._sock_held = False
            _sockref.release(sock)  # the real close, if close() above was deferred


class UDPTransport(_DatagramTransportBase):
    """An AF_INET/AF_INET6 datagram socket on a libuv uv_udp_t (the loop's slot)."""

    def __init__(
        self, loop: AbstractEventLoop, sock: socket.socket, protocol: BaseProtocol,
        address: Any = None, waiter: asyncio.Future[Any] | None = None,
    ) -> None:
        fd = sock.fileno()
        slot = lib.uvc_udp_open(owners.uv(loop), fd)
        if slot < 0:
            raise uv_error(slot)
        self._slot: int = slot
        self._uv = owners.uv(loop)
        self._arena = owners.arena(loop)
        self._family = sock.family
        self._reading = False
        self._held: collections.deque[tuple[bytes, Any]] | None = None  # see _hold
        owners.register_slot(loop, slot, self)
        super().__init__(loop, sock, protocol, address, waiter)
        self._connected = self._extra["peername"] is not None
        self._recv_addrs: dict[bytes, Any] = {}  # sender sockaddr bytes -> address tuple
        self._send_addrs: dict[Any, bytes] = {}  # address tuple -> sockaddr bytes
        self._last_addr: Any = None
        self._last_sockaddr: bytes | None = None

    def _start_reading(self) -> None:
        if not self._reading and self._slot is not None:
            err = lib.uvc_udp_recv(self._uv, self._slot, 1)
            if err < 0:
                self._fatal_error(uv_error(err), "Fatal read error on datagram transport")
                return
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            lib.uvc_udp_recv(self._uv, self._slot, 0)

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        """Send ``data`` (bytes-like) to ``addr``, or to the remote address given at
        creation when ``addr`` is None.  Sends at once; only what would block is buffered
        (see get_write_buffer_size).  An OSError of the send (unreachable, too big, ...)
        goes to protocol.error_received().  Empty data is not sent.

        Raises TypeError for data that is not bytes-like and ValueError for an address
        other than the remote address of a connected transport.
        """
        if not self._has_data(data):
            return
        addr = self._check_address(addr)
        if self._conn_lost:
            self._count_lost_write()
            return
        if self._connected:
            sockaddr = ffi.NULL
        elif addr is self._last_addr and addr is not None:
            sockaddr = self._last_sockaddr
        else:
            try:
                sockaddr = self._sockaddr_of(addr)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._send_failed(exc, in_sendto=True)
                return
        if type(data) is not bytes:
            data = bytes(data)
        r = _udp_send(self._uv, self._slot, data, len(data), sockaddr, self._pending > 0)
        if r == 0:
            return
        if r == UDP_QUEUED:
            self._pending += len(data)
            self._maybe_pause_protocol()
        else:
            self._protocol_error(uv_error(r), in_sendto=True)

    def _sockaddr_of(self, addr: Any) -> bytes:
        """The sockaddr (bytes for C) of an address as socket.sendto() would take it."""
        try:
            sockaddr = self._send_addrs[addr]
            # 5000.0 == 5000 hashes alike; socket refuses a non-int port, flowinfo or
            # scope id.
            if type(addr[1]) is not int or (
                len(addr) > 2 and not all(type(x) is int for x in addr[2:])
            ):
                raise KeyError(addr)
        except (KeyError, TypeError):
            sockaddr = self._convert_address(addr)
        self._last_addr = addr
        self._last_sockaddr = sockaddr
        return sockaddr

    def _convert_address(self, addr: Any) -> bytes:
        family = self._family
        name = "AF_INET" if family == socket.AF_INET else "AF_INET6"
        if not isinstance(addr, tuple):
            raise TypeError(f"{_CALLER}{name} address must be tuple, not {type(addr).__name__}")
        if family == socket.AF_INET:
            if len(addr) != 2:
                raise TypeError("AF_INET address must be a pair (host, port)")
            host, port = addr
            flowinfo = scope_id = 0
        else:
            if not 2 <= len(addr) <= 4:
                raise TypeError(
                    "AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])"
                )
            host, port, flowinfo, scope_id = (addr + (0, 0))[:4]
        if isinstance(host, (bytes, bytearray)):
            host = bytes(host).decode("idna")
        if not isinstance(host, str):
            raise TypeError(f"str, bytes or bytearray expected, not {type(host).__name__}")
        if "\0" in host:
            # socket.sendto()'s first check of the host, in both runtimes' words.
            raise TypeError("host name must not contain null character")
        port = _sendto_port(port)
        port_ok = 0 <= port <= 0xFFFF
        if not port_ok and _PYPY:
            raise OverflowError(_PORT_RANGE)
        # socket.sendto()'s order: the conversions, then (PyPy) the ranges, the host's
        # resolution, then (CPython) the ranges.
        flow_ok = True
        if family == socket.AF_INET6:
            flowinfo, scope_id = _sendto_ipv6_extras(flowinfo, scope_id)
            flow_ok = 0 <= flowinfo <= 0xFFFFF
            if not flow_ok and _PYPY:
                raise OverflowError(_FLOW_RANGE)
        cacheable = True
        if host == "":
            host = "0.0.0.0" if family == socket.AF_INET else "::"
        elif host == "<broadcast>" and family == socket.AF_INET:
            host = "255.255.255.255"
        try:
            if "%" in host:
                raise OSError  # a scoped IPv6 host: let getaddrinfo find the scope id
            socket.inet_pton(family, host)
        except OSError:
            # A host name: resolve it here, blocking, exactly as socket.sendto() does.
            # Names are not cached (they may change), numeric hosts are.  The port plays
            # no part (it may be out of range yet).
            info = socket.getaddrinfo(host, None, family, socket.SOCK_DGRAM)[0][4]
            host = info[0]
            if family == socket.AF_INET6 and not scope_id:
                scope_id = info[3]  # type: ignore[misc]  # an AF_INET6 address
            cacheable = False
        if not port_ok:
            raise OverflowError(_PORT_RANGE)
        if not flow_ok:
            raise OverflowError(_FLOW_RANGE)
        out = ffi.new("char[]", SOCKADDR_SIZE)
        err = lib.uvc_sockaddr_make(family, host.encode("ascii"), port, flowinfo, scope_id, out)
        if err < 0:
            raise uv_error(err)
        sockaddr = ffi.buffer(out)[:]
        # (a bytearray host makes the address unhashable: nothing to cache it by)
        if cacheable and type(addr[0]) is not bytearray:
            if len(self._send_addrs) >= _ADDR_CACHE_MAX:
                self._send_addrs.clear()
            self._send_addrs[addr] = sockaddr
        return sockaddr

    def _sender(self, offset: int) -> Any:
        """The sender of a received datagram, from its sockaddr at ``offset`` in the arena.
        Each datagram's own, also on a connected socket: what reached it before connect()
        stays queued and is read with its sender's address."""
        sockaddr = self._arena[offset:offset + SOCKADDR_SIZE]
        addr = self._recv_addrs.get(sockaddr)
        if addr is None:
            addr = self._address_of(sockaddr)
        return addr

    def _address_of(self, sockaddr: bytes) -> Any:
        """The address tuple socket.recvfrom() gives for a sender's sockaddr bytes."""
        host = ffi.new("char[]", 64)
        info = ffi.new("unsigned int[]", 3)
        family = lib.uvc_sockaddr_read(sockaddr, host, 64, info)
        if family == socket.AF_INET:
            addr: tuple[Any, ...] = (ffi.string(host).decode(), info[0])
        elif family == socket.AF_INET6:
            addr = (ffi.string(host).decode(), info[0], info[1], info[2])
        else:
            return None
        recv = self._recv_addrs
        if len(recv) >= _ADDR_CACHE_MAX:
            recv.clear()
            self._send_addrs.clear()
        recv[sockaddr] = addr
        # A reply to this sender needs no conversion.
        self._send_addrs[addr] = sockaddr
        return addr

    # ---------------------------------------------------------------- libuv events

    def _uv_event(self, kind: int, a: int, b: int, c: int) -> None:
        if kind == EV_UDP_RECV:
            if not self._reading:
                if self._read_paused and not self._closing:
                    self._hold(a, b, c)
                return  # (else closed earlier in this batch of events)
            data = self._arena[a:a + b]
            addr = self._sender(c)
            try:
                self._context.run(self._protocol.datagram_received, data, addr)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._protocol_exception(exc, "datagram_received")
        elif kind == EV_UDP_SEND:
            if self._sock is None:
                return  # aborted: the buffer was dropped
            self._pending -= b
            if a < 0 and a != _ECANCELED:
                self._protocol_error(uv_error(a))
            self._maybe_resume_protocol()
            if self._closing and not self._pending and not self._conn_lost:
                self._conn_lost += 1
                self._loop.call_soon(self._call_connection_lost, None, context=self._context)
        elif kind == EV_READ_ERROR:
            if self._reading:
                # ICMP errors of a connected socket (ConnectionRefusedError, ...) come as
                # recv errors: asyncio reports them and keeps the transport.
                self._protocol_error(uv_error(a))
        elif kind == EV_FD_LOST:
            # libuv's duplicate of the socket was closed under the loop (a stray close:
            # csrc/uvc_fdguard.h): libuv let go of the handle, which can receive and send
            # nothing any more.  The socket object is still ours to close.
            self._reading = False
            self._fatal_error(
                uv_error(a), "Fatal error on datagram transport: its fd was closed under the loop"
            )

    def _hold(self, offset: int, length: int, addr_offset: int) -> None:
        """A datagram libuv received in the batch whose callback paused reading: kept for
        resume_reading(), as asyncio, which would not have read it yet, keeps it in the
        socket."""
        addr = self._sender(addr_offset)
        if self._held is None:
            self._held = collections.deque()
        self._held.append((self._arena[offset:offset + length], addr))

    def _resume_receiving(self) -> None:
        if self._held:
            # The held datagrams first, each in a callback of its own, before libuv
            # receives the next ones.
            self._loop.call_soon(self._deliver_held, context=self._context)
        else:
            _DatagramTransportBase._resume_receiving(self)

    def _deliver_held(self) -> None:
        held = self._held
        while held and not self._read_paused and not self._closing:
            data, addr = held.popleft()
            try:
                self._protocol.datagram_received(data, addr)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._protocol_exception(exc, "datagram_received")
        if not held and not self._read_paused and not self._closing:
            _DatagramTransportBase._resume_receiving(self)

    def _uv_closed(self) -> None:
        self._slot = None  # type: ignore[assignment]  # (no slot any more)

    def _drop_buffer(self) -> None:
        # libuv still holds the queued requests: closing the handle cancels them, so
        # close it now rather than at connection_lost.
        self._pending = 0
        self._release()

    def _release(self) -> None:
        sock = self._sock
        if sock is None:
            return
        self._sock = None
        self._reading = False
        loop = self._loop
        if self._slot is not None and loop is not None and not loop.is_closed():
            if _sockref.replaced(sock, lib.uvc_fileno(self._uv, self._slot)):
                sock.detach()  # its number is another file's now: not ours to close
            owners.close_slot(loop, self._slot)  # libuv closes its own duplicate of the fd
        self._close_sock(sock)


class SocketDatagramTransport(_DatagramTransportBase):
    """A datagram socket of a family libuv's UDP handle cannot carry (AF_UNIX), driven by
    the loop's fd watcher with recvfrom()/sendto() as asyncio's selector transport is."""

    max_size = 256 * 1024  # the recvfrom() size asyncio uses

    def __init__(
        self, loop: AbstractEventLoop, sock: socket.socket, protocol: BaseProtocol,
        address: Any = None, waiter: asyncio.Future[Any] | None = None,
    ) -> None:
        self._buffer: collections.deque[tuple[bytes, Any]] = collections.deque()
        self._reading = False
        self._writing = False
        super().__init__(loop, sock, protocol, address, waiter)
        # Connected when getpeername() answers at all: the peer of a socketpair() is
        # unnamed, its name '' (false), yet the socket is connected.
        self._connected = self._extra["peername"] is not None

    def _start_reading(self) -> None:
        if not self._reading and self._sock is not None:
            owners.watch_fd(self._loop, self._sock_fd, "reader", self._read_ready, ())
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            owners.unwatch_fd(self._loop, self._sock_fd, "reader")

    def _read_ready(self) -> None:
        if self._conn_lost or self._read_paused:
            return  # (a readiness seen before the pause: the datagram stays in the socket)
        try:
            data, addr = self._sock.recvfrom(self.max_size)  # type: ignore[union-attr]  # open
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._protocol_error(exc)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on datagram transport")
        else:
            # The fd watcher's handle runs in a copy of the context it was registered
            # in, not in this transport's: the protocol's callbacks run in the latter.
            self._context.run(self._protocol.datagram_received, data, addr)

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        """Send ``data`` (bytes-like) to ``addr``, or to the remote address given at
        creation when ``addr`` is None.  Sends at once; only what would block is buffered
        (see get_write_buffer_size).  An OSError of the send goes to
        protocol.error_received().  Empty data is not sent.

        Raises TypeError for data that is not bytes-like and ValueError for an address
        other than the remote address of a connected transport.
        """
        if not self._has_data(data):
            return
        addr = self._check_address(addr)
        if self._conn_lost:
            self._count_lost_write()
            return
        if not self._buffer:
            try:
                self._send_now(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                owners.watch_fd(self._loop, self._sock_fd, "writer", self._write_ready, ())
                self._writing = True
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._send_failed(exc, in_sendto=True)
                return
        self._buffer.append((bytes(data), addr))
        self._pending += len(data)
        self._maybe_pause_protocol()

    def _write_ready(self) -> None:
        buffer = self._buffer
        while buffer:
            data, addr = buffer.popleft()
            self._pending -= len(data)
            try:
                self._send_now(data, addr)
            except (BlockingIOError, InterruptedError):
                buffer.appendleft((data, addr))
                self._pending += len(data)
                break
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._send_failed(exc)
                return
        self._maybe_resume_protocol()
        if not buffer:
            self._stop_writing()
            if self._closing and not self._conn_lost:
                self._conn_lost += 1
                self._call_connection_lost(None)

    def _send_now(self, data: bytes | bytearray | memoryview, addr: Any) -> None:
        # A connected socket sends to its peer, also when that peer has no name (one end
        # of socketpair(AF_UNIX, SOCK_DGRAM)): asyncio 3.11 tests the name's truth there
        # and calls sendto(data, None), a fatal TypeError; uvloop sends, and so does
        # uvcffi, deliberately.  Both the immediate and the buffered sends come here.
        if self._connected:
            self._sock.send(data)  # type: ignore[union-attr]  # open while sending
        else:
            self._sock.sendto(data, addr)  # type: ignore[union-attr]

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            owners.unwatch_fd(self._loop, self._sock_fd, "writer")

    def _drop_buffer(self) -> None:
        self._buffer.clear()
        self._pending = 0
        self._stop_writing()

    def _release(self) -> None:
        sock = self._sock
        if sock is None:
            return
        self._sock = None
        loop = self._loop
        if loop is not None and not loop.is_closed():
            self._stop_reading()
            self._stop_writing()
        self._close_sock(sock)
