"""The contract between the loop and the objects that own its libuv handles.

A handle lives in a numbered slot of the C core.  Its owner (a transport, a server's
listener, a DNS lookup, the fd set) is registered for the slot and receives the slot's
events from the loop's dispatch, through the methods of ``SlotOwner`` (and, for a stream
that reads, ``ReadingOwner``).  Everything an owner may do with the loop goes through the
functions below; no owner touches a private attribute of the loop (tests/test_structure.py
checks the transports' source for it).  The transports import this module and nothing else
of the loop's.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol


class SlotOwner(Protocol):
    """What the loop's dispatch calls on the owner of a slot."""

    def _uv_event(self, kind: int, a: int, b: int, c: int) -> None:
        """An event of the slot's handle (the UVC_EV_* kind and its three numbers; the C
        header of the handle's kind says what they mean)."""

    def _uv_closed(self) -> None:
        """The handle's last event: libuv freed it, and the slot is free from now on."""


class ReadingOwner(SlotOwner, Protocol):
    """The owner of a stream that reads (UVC_EV_READ).  ``_uv_read`` takes each read as
    bytes; an owner that copies reads into a buffer of its own sets it to None and gets
    ``_uv_read_at(offset, length)`` instead, the read in place in the loop's arena (valid
    during the call: ``arena_view()``), and ``_deliver(data)`` for a read kept as bytes
    across iterations (after a Ctrl-C stopped a dispatch)."""

    _uv_read: Callable[[bytes], None] | None

    def _uv_read_at(self, offset: int, length: int) -> None: ...

    def _deliver(self, data: bytes) -> None: ...

    def _uv_readable(self) -> None:
        """Read-into mode (``lib.uvc_readable_start``): the stream has data, EOF or an
        error waiting; the owner reads it with ``lib.uvc_read_into`` into its own buffer."""

    # Read-into mode where the loop reads for the owner: while ``_uv_recv`` is not None,
    # the accelerator's dispatch answers UVC_EV_READABLE itself, reading with
    # ``uvc_stream_recv`` and passing each read to ``_uv_recv`` as bytes (again while reads
    # fill the receive buffer and ``_uv_recv`` stays set), and EOF or an error to
    # ``_uv_recv_ended(n)``.  When it is None, the dispatch calls ``_uv_readable``.
    _uv_recv: Callable[[bytes], object] | None

    def _uv_recv_ended(self, n: int) -> None: ...


# ---- the loop's C core -------------------------------------------------------------------

def uv(loop: Any) -> Any:
    """The loop's C core (a ``uvc_loop_t *`` cdata) for the lib.uvc_* calls."""
    return loop._uv


def arena(loop: Any) -> Any:
    """The read arena as a cffi buffer (slicing it makes bytes)."""
    return loop._arena


def recv_buffer(loop: Any) -> tuple[Any, Any]:
    """The loop's receive buffer (``lib.uvc_recv_buffer``) as (pointer, cffi buffer)."""
    return loop._recv_ptr, loop._recv_buffer


def arena_view(loop: Any) -> memoryview:
    """The read arena as a memoryview (for copies into a buffer of one's own)."""
    return loop._arena_view  # type: ignore[no-any-return]  # the loop is Any here


def loop_buffer(loop: Any, name: str, make: Callable[[], Any]) -> Any:
    """A scratch object that all owners of one kind share on this loop (made by ``make``
    on first use, kept until the loop is collected): TLS's record buffers, say."""
    buffers = loop._owner_buffers
    value = buffers.get(name)
    if value is None:
        value = buffers[name] = make()
    return value


# ---- slots -------------------------------------------------------------------------------

def register_slot(loop: Any, slot: int, owner: SlotOwner) -> None:
    """Make ``owner`` receive the events of the handle in ``slot``."""
    loop._slot_register(slot, owner)


def forget_slot(loop: Any, slot: int) -> None:
    """A request's slot whose memory its owner had freed (requests have no CLOSED event):
    the slot no longer routes events to the owner."""
    loop._slots[slot] = None


def owns_slot(loop: Any, slot: int, owner: SlotOwner) -> bool:
    """True while ``owner`` is the one registered for ``slot``."""
    slots = loop._slots
    return slot < len(slots) and slots[slot] is owner


def close_slot(loop: Any, slot: int) -> None:
    """Close the handle in ``slot``; its owner's _uv_closed() runs when libuv is done."""
    loop._uv_close(slot)


# ---- fds ---------------------------------------------------------------------------------

def claim_fd(loop: Any, fd: int, transport: Any) -> None:
    """``transport`` uses ``fd``: add_reader/add_writer refuse it, as asyncio's do."""
    loop._fd_transports[fd] = transport


def release_fd(loop: Any, fd: int, transport: Any) -> None:
    """``transport`` no longer uses ``fd`` (a newer claim of the number is kept)."""
    loop._forget_fd_transport(fd, transport)


def watch_fd(
    loop: Any, fd: int, which: str, callback: Callable[..., Any], args: tuple[Any, ...]
) -> Any:
    """Run callback(*args) whenever ``fd`` is ready ("reader" or "writer"), through the
    loop's fd set; the fd is registered at once (OSError for a closed one)."""
    return loop._fd_watch(fd, which, callback, args)


def unwatch_fd(loop: Any, fd: int, which: str) -> bool:
    """Stop watch_fd()'s callback for ``fd``; the caller may close the fd right after."""
    return loop._fd_unwatch(fd, which)  # type: ignore[no-any-return]  # the loop is Any here
