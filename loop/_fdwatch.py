"""Loop methods: add_reader / add_writer, and the fds the loop watches for the sock_*
methods and transports that do not live in libuv (the fd set, csrc/uvc_fdset.h).

Every watched fd is registered in the C core's own epoll set at once, in the call that asks
for it: a closed fd is an OSError there, never an abort in libuv later.
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Callable

from . import _accelerated
from ._errors import check, uv_error
from ._handles import Handle
from ._uv import lib
from .transports import _sockref

if TYPE_CHECKING:

    from _typeshed import FileDescriptorLike
    from typing_extensions import TypeVarTuple, Unpack

    from ._accel import Accel
    _Ts = TypeVarTuple("_Ts")

READABLE = lib.UVC_READABLE
WRITABLE = lib.UVC_WRITABLE
_fdset_ctl = _accelerated.fdset_ctl
_UV_ENOENT = -errno.ENOENT  # uvc_fdset_ctl: the fd left the set (libuv errors are -errno)


def _fd_number(fileobj: FileDescriptorLike) -> int | None:
    """The number an int is, or an object's fileno() gives (maybe negative); None if none."""
    if isinstance(fileobj, int):
        return fileobj
    try:
        return int(fileobj.fileno())
    except (AttributeError, TypeError, ValueError):
        return None


def _fileobj_to_fd(fileobj: FileDescriptorLike) -> int:
    """The fd of an int or of an object with fileno(), as selectors does it."""
    fd = _fd_number(fileobj)
    if fd is None:
        raise ValueError(f"Invalid file object: {fileobj!r}")
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


class _FdWatcher:
    """What one fd is watched for (add_reader/add_writer): its reader and writer handles,
    and the number of the last poll before each was set (see _FdSet._uv_event)."""

    __slots__ = ("fd", "fileobj", "reader", "writer", "mask", "reader_since", "writer_since")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        # What add_reader/add_writer was last given for the fd: remove_reader/remove_writer
        # find a file object closed since by identity (its fileno() is -1 now), as
        # selectors does for asyncio.
        self.fileobj: Any = fd
        self.reader: Handle | None = None
        self.writer: Handle | None = None
        self.mask = 0
        self.reader_since = 0
        self.writer_since = 0


    def __repr__(self) -> str:
        return f"<_FdWatcher fd={self.fd} reader={self.reader!r} writer={self.writer!r}>"


class _FdSet:
    """Owner of the fd set's slot (csrc/uvc_fdset.h): runs the callbacks of each ready fd."""

    __slots__ = ("watchers",)

    def __init__(self, watchers: dict[int, _FdWatcher]) -> None:
        self.watchers = watchers

    def _uv_event(self, kind: int, fd: int, events: int, poll: int) -> None:
        # The callbacks run now, with the other I/O callbacks of this iteration.  An error
        # or hang-up reports both: their own read or write then meets it, as they would with
        # a selector reporting the fd ready.
        #
        # Only a handle set before the poll that saw the event runs.  The callbacks that
        # were ready run between the poll and this dispatch, so one of them may already
        # have read what made the fd readable and watched it again (a sock_recv() after
        # another): the new handle would run for data that is gone.  asyncio runs only the
        # handles it found when it polled; the next poll reports the fd if it is still
        # ready.
        watcher = self.watchers.get(fd)
        if watcher is None:
            return  # unwatched by a callback earlier in this iteration
        if events & READABLE:
            r = watcher.reader
            if r is not None and not r._cancelled and watcher.reader_since < poll:
                r._run()
        if events & WRITABLE:
            w = watcher.writer
            if w is not None and not w._cancelled and watcher.writer_since < poll:
                w._run()

    def _uv_read(self, data: bytes) -> None:
        pass

    def _uv_closed(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<_FdSet watching {sorted(self.watchers)}>"


class FdWatchMethods:
    """Mixed into CoreLoop: the fd set and everything that watches fds through it."""

    if TYPE_CHECKING:  # the core loop's (loop/_core.py), which this is mixed into
        _uv: Any
        _closed: bool
        _debug: bool
        _careful: bool
        _accel: Accel | None

        def _check_closed(self) -> None: ...
        def _check_callback(self, callback: object, method: str) -> None: ...
        def _slot_register(self, slot: int, owner: Any) -> None: ...

    def _init_fd_watching(self) -> None:
        self._fd_watchers: dict[int, _FdWatcher] = {}  # fd -> _FdWatcher, for every fd watched now
        self._fd_set_slot: int | None = None  # the fd set's slot, opened by the first watch
        # socket -> references sock_* waits hold (loop/_sockets.py); given back by close()
        self._held_sockets: dict[Any, int] = {}
        # fd -> transport using it: add_reader/add_writer refuse those fds, as asyncio does.
        # A plain dict (the transports drop their entry as they let go of the fd): a weak
        # one cost ~90 bytes more per connection.
        self._fd_transports: dict[int, Any] = {}

    def _teardown_fd_watching(self) -> None:
        held, self._held_sockets = self._held_sockets, {}
        for sock, n in held.items():
            for _ in range(n):
                _sockref.release(sock)
        self._fd_watchers.clear()
        self._fd_set_slot = None
        self._fd_transports.clear()  # the loop holds no transport alive once closed

    def _fd_watching_after_fork(self) -> None:
        """The child's fd set is a fresh epoll set: register what is watched again."""
        for fd, watcher in list(self._fd_watchers.items()):
            if _fdset_ctl(self._uv, fd, 0, watcher.mask) < 0:
                del self._fd_watchers[fd]  # closed in the parent before the fork

    def _forget_fd_transport(self, fd: int, transport: Any) -> None:
        """``transport`` no longer uses ``fd`` (its entry may already be a newer one's)."""
        if self._fd_transports.get(fd) is transport:
            del self._fd_transports[fd]

    def _ensure_fd_no_transport(self, fd: FileDescriptorLike) -> int:
        fileno = _fileobj_to_fd(fd)
        transport = self._fd_transports.get(fileno)
        if transport is not None and not transport.is_closing():
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")
        return fileno

    def _fd_watch(self, fd: int, which: str, callback: Callable[..., object],
                  args: tuple[Any, ...]) -> Handle:
        """Run callback(*args) whenever ``fd`` is ready (``which``: "reader" or "writer"),
        replacing the earlier one; returns its Handle.  The fd is registered at once, so a
        closed fd raises OSError here (see csrc/uvc_fdset.h for why it is not libuv's)."""
        self._check_closed()
        if self._debug:
            self._check_callback(callback, "add_reader" if which == "reader" else "add_writer")
        if self._fd_set_slot is None:
            slot = check(lib.uvc_fdset_open(self._uv))
            self._slot_register(slot, _FdSet(self._fd_watchers))
            self._fd_set_slot = slot
        if self._accel is not None and not self._careful:
            handle = self._accel.handle(callback, args)
        else:
            handle = Handle(callback, args, self, None)  # type: ignore[arg-type]  # a loop
        watcher = self._fd_watchers.get(fd)
        if watcher is None:
            watcher = _FdWatcher(fd)
        bit = READABLE if which == "reader" else WRITABLE
        mask = watcher.mask | bit
        # Told to the kernel even when the mask stays: a watched fd closed without
        # remove_reader left the set, and its number may be a new file's now.
        polls = _fdset_ctl(self._uv, fd, watcher.mask, mask)
        if polls == _UV_ENOENT:
            # So it did: the callbacks it had were the gone file's, and must never run for
            # the one that has the number now (asyncio's selector raises here instead).
            self._fd_drop_watcher(watcher)
            watcher = _FdWatcher(fd)
            mask = bit
            polls = _fdset_ctl(self._uv, fd, 0, mask)
        if polls < 0:
            raise uv_error(polls)
        watcher.mask = mask
        self._fd_watchers[fd] = watcher
        if which == "reader":
            old = watcher.reader
            watcher.reader = handle
            watcher.reader_since = polls
        else:
            old = watcher.writer
            watcher.writer = handle
            watcher.writer_since = polls
        if old is not None:
            old.cancel()
        return handle

    def _fd_unwatch(self, fd: int, which: str) -> bool:
        """Stop running ``fd``'s reader or writer; True if there was one.  The fd leaves
        the set at once, so the caller may close it right after."""
        if self._closed:
            return False
        watcher = self._fd_watchers.get(fd)
        if watcher is None:
            return False
        old = getattr(watcher, which)
        if old is None:
            return False
        setattr(watcher, which, None)
        old.cancel()
        mask = watcher.mask & ~(READABLE if which == "reader" else WRITABLE)
        # A failure means the fd was closed under us: nothing is watched then either.
        if _fdset_ctl(self._uv, fd, watcher.mask, mask) == _UV_ENOENT:
            # Closed, its number maybe another file's: the other callback was the gone
            # file's too, and is not watched any more.
            self._fd_drop_watcher(watcher)
            return True
        watcher.mask = mask
        if not mask:
            del self._fd_watchers[fd]
        return True

    def _fd_drop_watcher(self, watcher: _FdWatcher) -> None:
        """Forget an fd the set no longer holds, and cancel its callbacks."""
        if self._fd_watchers.get(watcher.fd) is watcher:
            del self._fd_watchers[watcher.fd]
        for handle in (watcher.reader, watcher.writer):
            if handle is not None:
                handle.cancel()
        watcher.reader = watcher.writer = None
        watcher.mask = 0

    def _watched_fd(self, fd: FileDescriptorLike) -> int:
        """The fd remove_reader/remove_writer mean: that of ``fd``, or, for a file object
        closed since add_reader/add_writer was given it, the fd it had then."""
        try:
            return self._ensure_fd_no_transport(fd)
        except ValueError:
            if not isinstance(fd, int):
                for watcher in self._fd_watchers.values():
                    if watcher.fileobj is fd:
                        return watcher.fd
            if self._closed and _fd_number(fd) is not None:
                # asyncio checks a closed loop before its selector sees the number: a
                # closed socket (fileno() -1) is "not watched" there, not an error.
                return -1
            raise

    def add_reader(self, fd: FileDescriptorLike, callback: Callable[[Unpack[_Ts]], Any],
                   *args: Unpack[_Ts]) -> None:
        """Call callback(*args) whenever ``fd`` (an int or an object with fileno()) is
        readable; replaces an earlier reader of the same fd."""
        fileno = self._ensure_fd_no_transport(fd)
        self._fd_watch(fileno, "reader", callback, args)
        self._fd_watchers[fileno].fileobj = fd

    def remove_reader(self, fd: FileDescriptorLike) -> bool:
        """Stop watching ``fd`` for reading; True if it was watched.  A file object closed
        while watched is still found (and the fd given up), as with asyncio's selector."""
        return self._fd_unwatch(self._watched_fd(fd), "reader")

    def add_writer(self, fd: FileDescriptorLike, callback: Callable[[Unpack[_Ts]], Any],
                   *args: Unpack[_Ts]) -> None:
        """Call callback(*args) whenever ``fd`` is writable; replaces an earlier writer."""
        fileno = self._ensure_fd_no_transport(fd)
        self._fd_watch(fileno, "writer", callback, args)
        self._fd_watchers[fileno].fileobj = fd

    def remove_writer(self, fd: FileDescriptorLike) -> bool:
        """Stop watching ``fd`` for writing; True if it was watched.  A file object closed
        while watched is still found (and the fd given up), as with asyncio's selector."""
        return self._fd_unwatch(self._watched_fd(fd), "writer")
