"""Loop methods: the sock_* methods and sock_sendfile (issue 3).

Each operation first tries the system call; only when it would block does it wait on the
loop's fd watcher (the fd set, see CoreLoop.add_reader) and retry from there.
Waiting goes through the same per-fd watcher as add_reader/add_writer, so a second wait of
the same kind on one socket replaces the first (as asyncio 3.11 does: the first one then
never completes until it is cancelled).
"""
from __future__ import annotations

import errno
import io
import os
import socket
import sys
from asyncio import SendfileNotAvailableError
from typing import IO, TYPE_CHECKING, Any, Callable, TypeVar

from ._accelerated import sock_recv as _recv_now
from ._dns import address_addrinfo
from ._uv import lib
from .transports import _sockref

if TYPE_CHECKING:
    import asyncio
    from socket import _Address, _RetAddress

    from _typeshed import ReadableBuffer, WriteableBuffer

    from ._core import CoreLoop as _LoopBase  # the loop this is mixed into
else:
    _LoopBase = object

_T = TypeVar("_T")

try:
    import ssl
except ImportError:  # a Python built without ssl
    ssl = None  # type: ignore[assignment]

_SSLSocket: Any = ssl.SSLSocket if ssl is not None else ()
_INET_FAMILIES = (socket.AF_INET, getattr(socket, "AF_INET6", socket.AF_INET))
# asyncio's constants.SENDFILE_FALLBACK_READBUFFER_SIZE
_SENDFILE_FALLBACK_BUFSIZE = 256 * 1024
_WOULD_BLOCK = (BlockingIOError, InterruptedError)
_RECV_MAX = lib.UVC_RECV_MAX  # the size of the loop's receive buffer (uvc_recv_buffer)
# A size sock.recv() refuses (OverflowError, as on asyncio) goes to sock.recv().
_SSIZE_MAX = sys.maxsize
_SOCK_STREAM = socket.SOCK_STREAM


def _check_socket(sock: socket.socket, debug: bool) -> socket.socket:
    """Refuse what asyncio refuses; return the socket the operation is to use."""
    if isinstance(sock, _SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")
    # In debug mode only, as asyncio and uvloop: programs pass a blocking socket to
    # sock_connect() (asyncssh's `sock = socket.socket(); await loop.sock_connect(sock,
    # addr)`), and a call that blocks on it blocks the loop there too.  The loop's own
    # receive (sock_recv, sock_recvfrom into its buffer) never blocks (MSG_DONTWAIT).
    if debug and sock.gettimeout() != 0:
        raise ValueError("the socket must be non-blocking")
    # (``is True``: a stand-in socket, as a Mock, answers any attribute with a true object.)
    if getattr(sock, "_closed", False) is True and sock.fileno() >= 0:
        # Closed while another sock_* wait holds its fd (transports/_sockref.py): the fd
        # stays open for that wait only.  A new operation must not use it (it sent data
        # and files through a socket its owner had closed): it runs on a closed socket of
        # the same kind instead, so it fails (or not: CPython's recv(0) returns b"" even
        # then) exactly as it would once the fd is gone, which is what asyncio gives.
        twin = _closed_twins.get((sock.family, sock.type, sock.proto))
        if twin is None:
            try:
                twin = socket.socket(sock.family, sock.type, sock.proto)
            except OSError:
                raise OSError(errno.EBADF, os.strerror(errno.EBADF)) from None
            twin.setblocking(False)
            twin.close()
            _closed_twins[(sock.family, sock.type, sock.proto)] = twin
        return twin
    return sock


# (family, type, proto) -> a closed socket of that kind (see _check_socket).
_closed_twins: dict[tuple[int, int, int], socket.socket] = {}


def _send_now(sock: socket.socket, data: ReadableBuffer) -> int:
    """What sock.send() takes of ``data`` now: 0 when the socket would block."""
    try:
        return sock.send(data)
    except _WOULD_BLOCK:
        return 0


# What the fd watcher runs when the socket is ready: one attempt of the operation.  The
# future may already be done (cancelled during the iteration that reported the fd ready):
# then nothing is attempted.

def _attempt_when_ready(fut: asyncio.Future[Any], attempt: Callable[..., object],
                        *args: Any) -> None:
    """Complete ``fut`` with attempt(*args), unless that would block again (it raises
    BlockingIOError or returns None: an operation whose outcome is "nothing" returns True,
    which its caller drops): then the watcher stays for the next readiness."""
    if fut.done():
        return
    try:
        result = attempt(*args)
    except _WOULD_BLOCK:
        return
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        fut.set_exception(exc)
        # The exception's traceback holds this frame, whose ``fut`` holds the exception:
        # a cycle that keeps both (and the frames and sockets they reach) alive until the
        # cyclic GC runs.  asyncio's _sock_connect_cb breaks it the same way ("Needed to
        # break cycles when an exception occurs"; see also CPython gh-124859).
        del fut
    else:
        if result is not None:
            fut.set_result(result)


def _wake(waiting: list[asyncio.Future[None]]) -> None:
    """A reader of _sock_wait(..., in_task=True): wake the task waiting for the fd."""
    fut = waiting[0]
    if not fut.done():
        fut.set_result(None)


def _call_method(sock: socket.socket, method: str, *args: Any) -> Any:
    """sock.<method>(*args) (recv and friends), looked up each time as asyncio does (a
    wrapped or patched socket may change it meanwhile)."""
    return getattr(sock, method)(*args)


def _recvfrom_reused(loop: SocketMethods, sock: socket.socket,
                     bufsize: int) -> tuple[bytes, _RetAddress]:
    """sock.recvfrom(bufsize), received into the loop's reused buffer (grown as asked, up
    to _RECV_MAX bytes)."""
    view = loop._recvfrom_buffer
    if view is None or len(view) < bufsize:
        view = loop._recvfrom_buffer = memoryview(bytearray(max(bufsize, 65536)))
    n, address = sock.recvfrom_into(view, bufsize)
    return bytes(view[:n]), address


def _sendall_attempt(sock: socket.socket, view: memoryview, pos: list[int]) -> bool | None:
    """Send what is left of ``view`` (from pos[0]); True once all of it is sent."""
    start = pos[0] + sock.send(view[pos[0]:])
    if start == len(view):
        return True
    pos[0] = start
    return None


def _connect_result(sock: socket.socket, address: _Address) -> bool:
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err != 0:
        raise OSError(err, f"Connect call failed {address}")
    return True


def _accept_attempt(sock: socket.socket) -> tuple[socket.socket, _RetAddress]:
    conn, address = sock.accept()
    conn.setblocking(False)
    return conn, address


def _writable() -> bool:
    """The attempt of a wait for writability alone (sendfile's): it is there."""
    return True


def check_sendfile_args(file: IO[bytes], offset: int, count: int | None) -> None:
    """asyncio's checks of sendfile()'s file, offset and count (sock_sendfile and
    loop.sendfile alike)."""
    if "b" not in getattr(file, "mode", "b"):
        raise ValueError("file should be opened in binary mode")
    if count is not None:
        if not isinstance(count, int):
            raise TypeError(f"count must be a positive integer (got {count!r})")
        if count <= 0:
            raise ValueError(f"count must be a positive integer (got {count!r})")
    if not isinstance(offset, int):
        raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
    if offset < 0:
        raise ValueError(f"offset must be a non-negative integer (got {offset!r})")


class SocketMethods(_LoopBase):
    """Mixed into uvcffi.Loop; relies on the core loop (uvcffi._core.CoreLoop)."""

    _recvfrom_buffer: memoryview | None = None  # sock_recvfrom's reused receive buffer

    async def _sock_wait(self, sock: socket.socket, which: str,
                         attempt: Callable[..., _T | None], args: tuple[Any, ...],
                         in_task: bool = False) -> _T:
        """Try attempt(*args) whenever ``sock`` is ready (``which``: "reader" or "writer")
        until it no longer would block (see _attempt_when_ready); return its result.  The
        watcher goes away when this returns, also when the wait is cancelled.

        ``in_task``: the attempt runs here, in the task, once the fd is ready, instead of
        in the fd's callback.  Every receive and sock_accept waits so: nothing is read
        (or accepted) for a task cancelled meanwhile, where a read done in the callback went
        down with the cancelled future (the bytes of a recv_into, a whole datagram, an
        accepted connection; asyncio 3.11 loses them so).  And on PyPy, data handed on as
        a Future's result survives the next minor collection (a 10 KiB sock_recv echo
        promoted every message to the old generation, and its major collections took half
        the time).
        """
        fut = self.create_future()
        fd = self._ensure_fd_no_transport(sock.fileno())
        if in_task:
            waiting = [fut]
            handle = self._fd_watch(fd, which, _wake, (waiting,))
        else:
            handle = self._fd_watch(fd, which, _attempt_when_ready, (fut, attempt) + args)
        # Closing the socket meanwhile (another task) marks it closed; the fd closes when
        # this wait ends, so the operation finishes (see transports/_sockref.py).  The loop
        # counts what it holds, to give it back if it closes first.
        held = self._hold_socket(sock)
        try:
            if not in_task:
                return await fut  # type: ignore[no-any-return]  # attempt()'s result
            while True:
                await fut
                if sock.fileno() != fd:
                    # Detached or closed for real meanwhile (a close() from another task
                    # is deferred while we hold the socket): the number is not its fd any
                    # more, and may be another file's.  asyncio's sock.recv() fails so.
                    raise OSError(errno.EBADF, os.strerror(errno.EBADF))
                try:
                    result = attempt(*args)
                except _WOULD_BLOCK:
                    result = None
                if result is not None:
                    return result
                # Woken for data that another reader of the socket took: wait again.
                fut = waiting[0] = self.create_future()
        finally:
            # A cancelled handle was replaced by a later wait on the same fd: leave that one.
            if not handle.cancelled():
                self._fd_unwatch(fd, which)
            if held:
                self._release_socket(sock)
            fut = None  # type: ignore[assignment]  # break the frame <-> exception cycle
            # The result leaves by the return value only.  On PyPy the frame of a coroutine
            # that waited is old by the time it returns (minor collections ran meanwhile),
            # and an old object, dead or not, keeps what it points to through the next minor
            # collection: each connection's last message outlived the caller's use of it
            # (a sock_recv echo of 100 KiB messages over 10 connections carried 1 MB more
            # into every minor collection, and the old generation's collections ran half
            # again as often).
            result = None

    def _hold_socket(self, sock: socket.socket) -> bool:
        """Defer sock.close() until _release_socket (see transports/_sockref.py); True if
        held.  The loop counts what it holds, to give it back if it closes first."""
        held = _sockref.hold(sock)
        if held:
            holds = self._held_sockets
            holds[sock] = holds.get(sock, 0) + 1
        return held

    def _release_socket(self, sock: socket.socket) -> None:
        holds = self._held_sockets
        n = holds.pop(sock, 0)
        if n:  # else the loop closed and gave it back
            if n > 1:
                holds[sock] = n - 1
            _sockref.release(sock)

    async def sock_recv(self, sock: socket.socket, n: int) -> bytes:
        """Receive up to ``n`` bytes from the non-blocking socket ``sock``; return them
        (b"" at end of stream)."""
        sock = _check_socket(sock, self._debug)
        if (sock.__class__ is socket.socket and n.__class__ is int and n > 0
                and (n <= _RECV_MAX or (sock.type == _SOCK_STREAM and n <= _SSIZE_MAX))
                and not self._closed):
            # The loop's own receive for a plain socket: into a buffer it reuses (recv(n)
            # allocates n bytes per call: 256 KiB for a 1 KiB message), and "nothing yet"
            # without an exception.  A subclass keeps its own recv().  That buffer holds
            # _RECV_MAX bytes: a stream may return less than asked, but a datagram or a
            # SEQPACKET message would be cut, so a bigger one goes through sock.recv.  A
            # closed loop has no buffer: sock.recv still works there, as on asyncio.
            # n == 0 is sock.recv's too: CPython's returns b"" at once, data or not, where
            # recv(2) of 0 bytes says EAGAIN (the task would wait for data it never reads).
            uv = self._uv
            fd = sock.fileno()
            data = _recv_now(uv, fd, n)
            if data is not None:
                return data
            return await self._sock_wait(sock, "reader", _recv_now, (uv, fd, n), True)
        try:
            return sock.recv(n)
        except _WOULD_BLOCK:
            pass
        return await self._sock_wait(sock, "reader", _call_method, (sock, "recv", n), True)

    async def sock_recv_into(self, sock: socket.socket, buf: WriteableBuffer) -> int:
        """Receive data from ``sock`` into the writable buffer ``buf``; return the number
        of bytes written."""
        sock = _check_socket(sock, self._debug)
        try:
            return sock.recv_into(buf)
        except _WOULD_BLOCK:
            pass
        return await self._sock_wait(sock, "reader", _call_method, (sock, "recv_into", buf),
                                     True)

    async def sock_recvfrom(self, sock: socket.socket, bufsize: int) -> tuple[bytes, _RetAddress]:
        """Receive a datagram of up to ``bufsize`` bytes from ``sock``; return
        (data, address)."""
        sock = _check_socket(sock, self._debug)
        if (sock.__class__ is socket.socket and bufsize.__class__ is int
                and 0 < bufsize <= _RECV_MAX):
            # recvfrom(bufsize) allocates bufsize bytes per call (40 us for 256 KiB on
            # CPython, against 5 us into a buffer the loop reuses): receive into that
            # buffer and return bytes of the datagram's size.  A subclass keeps its own.
            # A bigger bufsize goes through recvfrom(): the loop keeps its buffer for good
            # (and fills it with zeros first), where recvfrom() gives back what the
            # datagram does not use: one sock_recvfrom(sock, 1 << 29) left 512 MiB resident.
            try:
                return _recvfrom_reused(self, sock, bufsize)
            except _WOULD_BLOCK:
                pass
            return await self._sock_wait(sock, "reader", _recvfrom_reused,
                                         (self, sock, bufsize), True)
        try:
            return sock.recvfrom(bufsize)
        except _WOULD_BLOCK:
            pass
        return await self._sock_wait(sock, "reader", _call_method, (sock, "recvfrom", bufsize),
                                     True)

    async def sock_recvfrom_into(self, sock: socket.socket, buf: WriteableBuffer,
                                 nbytes: int = 0) -> tuple[int, _RetAddress]:
        """Receive a datagram from ``sock`` into ``buf`` (at most ``nbytes`` bytes, all of
        ``buf`` when 0); return (number of bytes, address)."""
        sock = _check_socket(sock, self._debug)
        if not nbytes:  # 0 or None, as asyncio takes it
            nbytes = len(buf)  # type: ignore[arg-type]  # buffers asyncio takes have len()
        elif isinstance(nbytes, int) and nbytes < 0:
            # CPython's socket refuses it so; PyPy's takes it as "no limit" and writes the
            # whole datagram, past the end of ``buf``.  (Other types: the socket's error.)
            raise ValueError("negative buffersize in recvfrom_into")
        try:
            return sock.recvfrom_into(buf, nbytes)
        except _WOULD_BLOCK:
            pass
        return await self._sock_wait(
            sock, "reader", _call_method, (sock, "recvfrom_into", buf, nbytes), True)

    async def sock_sendall(self, sock: socket.socket, data: ReadableBuffer) -> None:
        """Send all of ``data`` (a bytes-like object) on the connected socket ``sock``.

        Returns None once everything is handed to the kernel; on error the exception is
        raised and there is no telling how much was sent.
        """
        sock = _check_socket(sock, self._debug)
        n = _send_now(sock, data)
        cls = data.__class__
        if (cls is bytes or cls is bytearray) and n == len(data):  # type: ignore[arg-type]
            return  # all sent: no second coroutine (this is the echo's every reply)
        await self._sock_send_rest(sock, data, n)

    async def _sock_send_rest(self, sock: socket.socket, data: ReadableBuffer, n: int) -> None:
        """Send ``data`` after its first ``n`` bytes, which are sent; ``sock`` is checked."""
        cls = data.__class__
        if cls is bytes or cls is bytearray:
            if n == len(data):  # type: ignore[arg-type]  # bytes or bytearray here
                return
            view = memoryview(data)
        else:
            # Count bytes, not items, for memoryviews and arrays of wider items.
            try:
                view = memoryview(data).cast("B")
            except TypeError:
                # Not C-contiguous: PyPy's send() took it (CPython's raises BufferError
                # above), so the rest must go too, from a contiguous copy.
                view = memoryview(memoryview(data).tobytes())
            if n == len(view):
                return
        await self._sock_wait(sock, "writer", _sendall_attempt, (sock, view, [n]))

    async def sock_sendto(self, sock: socket.socket, data: ReadableBuffer,
                          address: _Address) -> int:
        """Send the datagram ``data`` to ``address`` through ``sock``; return the number
        of bytes sent."""
        sock = _check_socket(sock, self._debug)
        try:
            return sock.sendto(data, address)
        except _WOULD_BLOCK:
            pass
        return await self._sock_wait(
            sock, "writer", _call_method, (sock, "sendto", data, 0, address))

    async def sock_connect(self, sock: socket.socket, address: _Address) -> None:
        """Connect ``sock`` to ``address``; a host name is resolved with getaddrinfo()
        first (for AF_INET/AF_INET6 sockets).  An address the socket module refuses raises
        what socket.connect() raises for it: TypeError for one that is not a (host, port[,
        flowinfo[, scope_id]]) sequence, OverflowError for a port outside 0-65535."""
        sock = _check_socket(sock, self._debug)
        if sock.family in _INET_FAMILIES:
            if isinstance(address, (str, bytes, bytearray)):
                # Never an AF_INET/AF_INET6 address.  asyncio slices it into host and
                # port like a tuple, which gives a TypeError for any name longer than
                # four characters ("localhost") but gaierror or ValueError for shorter
                # ones; uvcffi gives socket.connect()'s TypeError for all.
                name = "AF_INET" if sock.family == socket.AF_INET else "AF_INET6"
                raise TypeError(f"{name} address must be tuple, not {type(address).__name__}")
            host, port = address[:2]  # type: ignore[index]  # a tuple here (str and bytes-likes refused above)
            if len(address) > 4:  # type: ignore[arg-type]
                # socket.connect()'s TypeError, in its words (asyncio's is a TypeError too).
                if sock.family == socket.AF_INET:
                    raise TypeError("AF_INET address must be a pair (host, port)")
                raise TypeError(
                    "AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])"
                )
            # An IP address is taken as it is, the port as int(port) in any range, as
            # asyncio takes them: connect() below then refuses a port outside 0-65535 with
            # the socket module's OverflowError, where getaddrinfo would wrap it.
            infos = address_addrinfo(host, port, sock.family, sock.type, sock.proto)
            if infos is not None:
                resolved = infos[0][4]
                if len(resolved) == 4 and len(address) > 2:  # type: ignore[arg-type]
                    # An IPv6 address keeps the flowinfo and scope id the caller gave.
                    flowinfo = address[2]  # type: ignore[index]
                    scope_id = address[3] if len(address) > 3 else 0  # type: ignore[index, arg-type]
                    resolved = (resolved[0], resolved[1], flowinfo, scope_id)
                address = resolved
            else:
                infos = await self.getaddrinfo(
                    host, port, family=sock.family, type=sock.type, proto=sock.proto
                )
                if not infos:
                    raise OSError(f"getaddrinfo({host!r}) returned empty list")
                address = infos[0][4]
        try:
            sock.connect(address)
        except _WOULD_BLOCK:
            pass
        else:
            return
        await self._sock_wait(sock, "writer", _connect_result, (sock, address))

    async def sock_accept(self, sock: socket.socket) -> tuple[socket.socket, _RetAddress]:
        """Accept a connection on the listening socket ``sock``; return (conn, address),
        ``conn`` being a new non-blocking socket."""
        sock = _check_socket(sock, self._debug)
        try:
            conn, address = sock.accept()
        except _WOULD_BLOCK:
            return await self._sock_wait(sock, "reader", _accept_attempt, (sock,), True)
        conn.setblocking(False)
        return conn, address

    async def sock_sendfile(self, sock: socket.socket, file: IO[bytes], offset: int = 0,
                            count: int | None = None, *, fallback: bool | None = True) -> int:
        """Send ``file`` (opened in binary mode) from ``offset`` (``count`` bytes, or to
        its end) on the SOCK_STREAM socket ``sock``; return the number of bytes sent.

        Uses os.sendfile() (zero-copy) when the file supports it; otherwise, when
        ``fallback`` is true, reads the file and sends it; else raises
        asyncio.SendfileNotAvailableError.  The file position ends after the last byte sent.
        """
        sock = _check_socket(sock, self._debug)
        self._check_sendfile_params(sock, file, offset, count)
        self._check_closed()  # as asyncio: nothing is sent through a closed loop
        # The socket is held for the whole operation, as a sock_sendall is: closed by
        # another task meanwhile, it stays open until the file is sent.  Held only while
        # each wait for writability lasted, it closed between two of them: the next
        # os.sendfile() used a number that might be another file's by then, and the
        # fallback's next block failed with EBADF (asyncio's never completes).
        held = self._hold_socket(sock)
        try:
            try:
                return await self._sock_sendfile_native(sock, file, offset, count)
            except SendfileNotAvailableError:
                if not fallback:
                    raise
            return await self._sock_sendfile_fallback(sock, file, offset, count)
        finally:
            if held:
                self._release_socket(sock)

    @staticmethod
    def _check_sendfile_params(sock: socket.socket, file: IO[bytes], offset: int,
                               count: int | None) -> None:
        if not sock.type == socket.SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        check_sendfile_args(file, offset, count)

    async def _sock_sendfile_native(self, sock: socket.socket, file: IO[bytes], offset: int,
                                    count: int | None) -> int:
        if not hasattr(os, "sendfile"):
            raise SendfileNotAvailableError("os.sendfile() is not available")
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            raise SendfileNotAvailableError("not a regular file") from None
        try:
            fsize = os.fstat(fileno).st_size
        except OSError:
            raise SendfileNotAvailableError("not a regular file") from None
        blocksize = count if count else fsize
        if not blocksize:
            return 0  # an empty file
        fd = sock.fileno()
        sent_total = 0
        try:
            while True:
                if count:
                    blocksize = count - sent_total
                    if blocksize <= 0:
                        return sent_total
                try:
                    sent = os.sendfile(fd, fileno, offset + sent_total, blocksize)
                except _WOULD_BLOCK:
                    await self._sock_wait(sock, "writer", _writable, ())
                    continue
                except OSError as exc:
                    if sent_total == 0:
                        # Not a file sendfile() takes (a pipe, a socket ...): fall back.
                        raise SendfileNotAvailableError("os.sendfile call failed") from exc
                    if exc.errno == errno.ENOTCONN and type(exc) is not ConnectionError:
                        # The peer went away midway: the same error on every platform.
                        raise ConnectionError("socket is not connected", errno.ENOTCONN) from exc
                    raise
                if sent == 0:
                    return sent_total  # end of file
                sent_total += sent
        finally:
            if sent_total > 0:
                os.lseek(fileno, offset + sent_total, os.SEEK_SET)

    async def _sock_sendfile_fallback(self, sock: socket.socket, file: IO[bytes], offset: int,
                                      count: int | None) -> int:
        if offset:
            file.seek(offset)
        blocksize = (
            min(count, _SENDFILE_FALLBACK_BUFSIZE) if count else _SENDFILE_FALLBACK_BUFSIZE
        )
        buf = bytearray(blocksize)
        sent_total = 0
        try:
            while True:
                if count:
                    blocksize = min(count - sent_total, blocksize)
                    if blocksize <= 0:
                        break
                view = memoryview(buf)[:blocksize]
                read = await self.run_in_executor(None, file.readinto, view)  # type: ignore[attr-defined]  # binary files have readinto (asyncio calls it too)
                if not read:
                    break  # end of file
                chunk = view[:read]  # sock is checked and held
                await self._sock_send_rest(sock, chunk, _send_now(sock, chunk))
                sent_total += read
            return sent_total
        finally:
            if sent_total > 0 and hasattr(file, "seek"):
                file.seek(offset + sent_total)
