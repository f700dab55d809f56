"""Keeping a caller's socket open while the loop uses its fd (uvloop does the same).

``socket.socket.close()`` closes the fd only once no ``makefile()`` object refers to it
(``_io_refs``); until then it marks the socket closed and leaves the real close to the last
reference's ``_decref_socketios()``.  The loop takes such a reference for as long as libuv
or a sock_* wait uses the fd: a close() from another task then never pulls the fd from
under libuv (which aborts the process when epoll_ctl meets a closed fd), its number is never
reused by another file while the loop still uses it, and a pending operation finishes (a
sock_connect connects, a sock_recv gets the data the peer sends).  The socket closes for
real when the loop lets go.  (``_io_refs`` is part of socket.socket on every Python 3 and on
PyPy; an object without it, such as a bare _socket.socket, is used unheld.)
"""
from __future__ import annotations

import os
from typing import Any


def hold(sock: Any) -> bool:
    """Take a reference that defers ``sock.close()``; True if one was taken."""
    try:
        sock._io_refs += 1
    except (AttributeError, TypeError):  # not a socket.socket (a test's stand-in, say)
        return False
    return True


def replaced(sock: Any, libuv_fd: int) -> bool:
    """True if ``sock``'s fd was closed under the loop (os.close()) and its number now names
    no file or another one than ``libuv_fd``, libuv's duplicate of it: closing ``sock``
    would close that number, which is no longer the socket's.  The caller detaches it
    instead.  False when there is nothing to compare (``libuv_fd`` < 0)."""
    fd = sock.fileno()
    if fd < 0 or libuv_fd < 0:
        return False
    try:
        mine, now = os.fstat(libuv_fd), os.fstat(fd)
    except OSError:
        return True
    return (mine.st_dev, mine.st_ino) != (now.st_dev, now.st_ino)


def release(sock: Any) -> None:
    """Give back a reference taken by hold(); closes the socket if close() came meanwhile."""
    sock._decref_socketios()
