"""connect_read_pipe / connect_write_pipe: uvcffi's pipe transports against asyncio's
contract (callback order, flow control, the reader going away, bad input)."""
import asyncio
import contextvars
import errno
import gc
import logging
import os
import pty
import socket
import tempfile
import warnings

import pytest

from uvcffi._uv import lib


class Flag:
    """asyncio.Event without a loop lookup at creation (Python 3.9's Event wants a current
    loop when it is made)."""

    def __init__(self, loop):
        self._loop = loop
        self._waiter = None
        self._set = False

    def set(self):
        self._set = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self):
        if not self._set:
            self._waiter = self._loop.create_future()
            await self._waiter


def run(loop, coro, timeout=10):
    """Run ``coro`` on ``loop``, failing (not hanging) after ``timeout`` seconds."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def open_fds():
    return set(os.listdir("/proc/self/fd"))


class ReadProto(asyncio.Protocol):
    def __init__(self, loop):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.done = loop.create_future()
        self.got_data = Flag(loop)

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        assert isinstance(data, bytes)
        self.data += data
        if self.events[-1] != "data":
            self.events.append("data")
        self.got_data.set()

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.done.set_result(exc)


class WriteProto(asyncio.BaseProtocol):
    def __init__(self, loop):
        self.events = []
        self.transport = None
        self.done = loop.create_future()
        self.resumed = Flag(loop)

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")
        self.resumed.set()

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.done.set_result(exc)


# ------------------------------------------------------------------ read pipes


def test_read_pipe_data_eof_order(loop):
    r, w = os.pipe()
    pipe = open(r, "rb", buffering=0)
    proto = ReadProto(loop)
    transport, p = run(loop, loop.connect_read_pipe(lambda: proto, pipe))
    assert p is proto and proto.transport is transport
    assert isinstance(transport, asyncio.ReadTransport)
    assert transport.get_extra_info("pipe") is pipe
    assert transport.is_reading()
    os.write(w, b"hello ")
    os.write(w, b"world")
    os.close(w)
    assert run(loop, proto.done) is None
    assert bytes(proto.data) == b"hello world"
    assert proto.events == ["made", "data", "eof", ("lost", None)]
    assert pipe.closed  # the transport closes the pipe object in connection_lost
    assert transport.is_closing()


def test_read_pipe_refuses_regular_file(loop):
    gc.collect()
    before = open_fds()
    with tempfile.TemporaryFile() as f:
        with pytest.raises(ValueError, match="Pipe transport is for pipes/sockets only."):
            run(loop, loop.connect_read_pipe(asyncio.Protocol, f))
        with pytest.raises(ValueError, match="only for pipes, sockets and character devices"):
            run(loop, loop.connect_write_pipe(asyncio.BaseProtocol, f))
    gc.collect()
    assert open_fds() - before == set()
    assert lib.uvc_active_slots(loop._uv) == 0


def test_read_pipe_on_a_device_epoll_cannot_watch_loses_the_connection(loop):
    # /dev/zero passes the character-device check, but epoll refuses it (EPERM): the
    # protocol hears it (asyncio logs the error of its add_reader and says nothing to it).
    async def main():
        contexts = []
        loop.set_exception_handler(lambda _, ctx: contexts.append(ctx))
        lost = loop.create_future()

        class Proto(asyncio.Protocol):
            def connection_lost(self, exc):
                lost.set_result(exc)

        with open("/dev/zero", "rb") as f:
            await loop.connect_read_pipe(Proto, f)
            exc = await lost
        return exc, contexts[0]["message"]

    exc, message = run(loop, main())
    assert isinstance(exc, PermissionError)
    assert message == "Fatal error on pipe transport: its fd cannot be watched"


def test_read_pipe_bad_object(loop):
    with pytest.raises(AttributeError):
        run(loop, loop.connect_read_pipe(asyncio.Protocol, object()))


def test_pause_resume_reading_holds_data(loop):
    r, w = os.pipe()
    proto = ReadProto(loop)
    transport, _ = run(loop, loop.connect_read_pipe(lambda: proto, open(r, "rb", 0)))
    transport.pause_reading()
    assert not transport.is_reading()
    transport.pause_reading()  # no-op
    os.write(w, b"abc")
    for _ in range(5):
        run(loop, asyncio.sleep(0.01))
    assert proto.data == b""
    transport.resume_reading()
    assert transport.is_reading()
    run(loop, proto.got_data.wait())
    assert proto.data == b"abc"
    os.close(w)
    run(loop, proto.done)
    assert proto.events[-2:] == ["eof", ("lost", None)]


def test_pause_in_data_received_loses_nothing(loop):
    """Several reads of one libuv iteration after pause_reading() are held, not dropped."""
    r, w = os.pipe()
    chunks = []

    class Pausing(ReadProto):
        def data_received(self, data):
            super().data_received(data)
            chunks.append(data)
            self.transport.pause_reading()
            loop.call_later(0.001, self.transport.resume_reading)

    proto = Pausing(loop)
    run(loop, loop.connect_read_pipe(lambda: proto, open(r, "rb", 0)))
    payload = os.urandom(1 << 20)

    async def feed():
        view = memoryview(payload)
        while view:
            n = await loop.run_in_executor(None, os.write, w, view[:65536])
            view = view[n:]
        os.close(w)

    run(loop, feed(), timeout=30)
    run(loop, proto.done, timeout=30)
    assert bytes(proto.data) == payload
    assert proto.events[-2:] == ["eof", ("lost", None)]


def test_read_pipe_close(loop):
    r, w = os.pipe()
    pipe = open(r, "rb", 0)
    proto = ReadProto(loop)
    transport, _ = run(loop, loop.connect_read_pipe(lambda: proto, pipe))
    transport.close()
    assert transport.is_closing() and not transport.is_reading()
    transport.close()  # idempotent
    assert run(loop, proto.done) is None
    assert proto.events == ["made", ("lost", None)]
    assert pipe.closed
    os.close(w)
    run(loop, asyncio.sleep(0))
    assert lib.uvc_active_slots(loop._uv) == 0


def test_read_fifo_and_socket(loop, tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(path, os.O_WRONLY)
    proto = ReadProto(loop)
    run(loop, loop.connect_read_pipe(lambda: proto, open(r, "rb", 0)))
    os.write(w, b"fifo")
    os.close(w)
    run(loop, proto.done)
    assert proto.data == b"fifo"

    a, b = socket.socketpair()
    proto = ReadProto(loop)
    run(loop, loop.connect_read_pipe(lambda: proto, a))
    b.sendall(b"sock")
    b.close()
    run(loop, proto.done)
    assert proto.data == b"sock" and proto.events[-2] == "eof"


def test_read_pty_eio_is_not_an_error(loop):
    master, slave = pty.openpty()
    proto = ReadProto(loop)
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    run(loop, loop.connect_read_pipe(lambda: proto, open(master, "rb", 0)))
    os.write(slave, b"tty")
    run(loop, proto.got_data.wait())
    os.close(slave)
    exc = run(loop, proto.done)
    assert proto.data == b"tty"
    assert exc is None or exc.errno == 5  # EOF or EIO, as asyncio: never reported
    assert errors == []


def test_data_received_error_goes_to_exception_handler(loop):
    r, w = os.pipe()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    class Broken(ReadProto):
        def data_received(self, data):
            raise ZeroDivisionError

    proto = Broken(loop)
    transport, _ = run(loop, loop.connect_read_pipe(lambda: proto, open(r, "rb", 0)))
    os.write(w, b"x")
    exc = run(loop, proto.done)
    os.close(w)
    assert isinstance(exc, ZeroDivisionError)
    assert errors and isinstance(errors[0]["exception"], ZeroDivisionError)
    assert errors[0]["transport"] is transport and errors[0]["protocol"] is proto


def test_callbacks_run_in_creation_context(loop):
    var = contextvars.ContextVar("var", default="unset")
    seen = []

    class Ctx(ReadProto):
        def connection_made(self, transport):
            seen.append(var.get())
            super().connection_made(transport)

        def data_received(self, data):
            seen.append(var.get())
            super().data_received(data)

        def connection_lost(self, exc):
            seen.append(var.get())
            super().connection_lost(exc)

    r, w = os.pipe()
    proto = Ctx(loop)

    async def connect():
        var.set("creator")
        await loop.connect_read_pipe(lambda: proto, open(r, "rb", 0))

    run(loop, connect())
    os.write(w, b"x")
    os.close(w)
    run(loop, proto.done)
    assert seen == ["creator"] * 3


def test_fd_of_a_transport_refused_by_add_reader(loop):
    r, w = os.pipe()
    transport, _ = run(loop, loop.connect_read_pipe(asyncio.Protocol, open(r, "rb", 0)))
    with pytest.raises(RuntimeError, match="is used by transport"):
        loop.add_reader(r, lambda: None)
    transport.close()
    run(loop, asyncio.sleep(0.01))
    os.close(w)


def test_unclosed_transport_warns(loop):
    r, w = os.pipe()
    transport, _ = run(loop, loop.connect_read_pipe(asyncio.Protocol, open(r, "rb", 0)))
    assert "open" in repr(transport)
    loop.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del transport
        for _ in range(3):  # PyPy may need more than one pass for objects with __del__
            gc.collect()
    assert any(issubclass(w_.category, ResourceWarning) and "unclosed transport" in str(w_.message)
               for w_ in caught)
    os.close(w)


# ------------------------------------------------------------------ write pipes


def read_all(fd, n):
    out = bytearray()
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def test_write_pipe_flow_control_and_exact_buffer_size(loop):
    r, w = os.pipe()
    proto = WriteProto(loop)
    transport, _ = run(loop, loop.connect_write_pipe(lambda: proto, open(w, "wb", 0)))
    assert isinstance(transport, asyncio.WriteTransport)
    assert transport.get_write_buffer_limits() == (16384, 65536)
    transport.set_write_buffer_limits(high=1000)
    assert transport.get_write_buffer_limits() == (250, 1000)
    payload = os.urandom(1 << 20)
    transport.write(payload)
    pipe_size = 1 << 16  # Linux default pipe capacity
    size = transport.get_write_buffer_size()
    assert 0 < size <= len(payload)
    assert size >= len(payload) - 4 * pipe_size
    assert proto.events == ["made", "pause"]
    # Nothing taken from the pipe yet: the buffered size stays what it was.
    run(loop, asyncio.sleep(0.01))
    assert transport.get_write_buffer_size() == size
    got = run(loop, loop.run_in_executor(None, read_all, r, len(payload)))
    run(loop, proto.resumed.wait())
    assert got == payload
    assert transport.get_write_buffer_size() == 0
    assert proto.events == ["made", "pause", "resume"]
    transport.close()
    assert run(loop, proto.done) is None
    assert os.read(r, 10) == b""
    os.close(r)


def test_write_pipe_bytes_like_and_writelines(loop):
    r, w = os.pipe()
    proto = WriteProto(loop)
    transport, _ = run(loop, loop.connect_write_pipe(lambda: proto, open(w, "wb", 0)))
    transport.write(bytearray(b"ab"))
    transport.write(memoryview(b"xcdx")[1:3])
    transport.write(memoryview(b"e-f-")[::2])  # not contiguous
    transport.writelines([b"g", bytearray(b"h"), memoryview(b"i")])
    transport.write(b"")
    with pytest.raises(TypeError, match="bytes-like"):
        transport.write("text")
    with pytest.raises(TypeError):
        transport.write(None)
    with pytest.raises(ValueError):
        transport.set_write_buffer_limits(high=1, low=2)
    assert transport.can_write_eof()
    transport.write_eof()
    assert transport.is_closing()
    transport.write(b"dropped")  # after the end: silently dropped, as asyncio
    run(loop, proto.done)
    assert read_all(r, 100) == b"abcdefghi"
    os.close(r)


def test_write_pipe_is_a_transport_whose_reading_is_not_implemented(anyloop):
    # asyncio's write pipe transport is an asyncio.Transport (by its flow-control mixin),
    # so isinstance(t, asyncio.Transport) and (asyncio.ReadTransport) hold; the reading
    # methods are ReadTransport's abstract ones, which raise NotImplementedError.
    r, w = os.pipe()
    proto = WriteProto(anyloop)
    transport, _ = run(anyloop, anyloop.connect_write_pipe(lambda: proto, open(w, "wb", 0)))
    for cls in (asyncio.Transport, asyncio.ReadTransport, asyncio.WriteTransport):
        assert isinstance(transport, cls)
    for method in (transport.pause_reading, transport.resume_reading, transport.is_reading):
        with pytest.raises(NotImplementedError):
            method()
    transport.write(b"still writes")
    transport.close()
    assert run(anyloop, proto.done) is None
    assert os.read(r, 100) == b"still writes"
    os.close(r)


def test_sendfile_to_a_write_pipe(loop, tmp_path):
    # uvcffi's sendfile falls back to writing for pipes (asyncio refuses them with
    # RuntimeError); the write pipe's reading methods raising must not get in its way.
    path = tmp_path / "data"
    path.write_bytes(b"abc" * 1000)
    r, w = os.pipe()
    proto = WriteProto(loop)
    transport, _ = run(loop, loop.connect_write_pipe(lambda: proto, open(w, "wb", 0)))
    with open(path, "rb") as f:
        assert run(loop, loop.sendfile(transport, f)) == 3000
    transport.close()
    assert run(loop, loop.run_in_executor(None, read_all, r, 3001)) == b"abc" * 1000
    os.close(r)


def test_sendfile_to_a_read_pipe_is_refused(anyloop, tmp_path):
    # The read end of a pipe has nothing to send a file to: asyncio refuses it with
    # RuntimeError.  uvcffi's fallback took it for a stream, "wrote" the file into the
    # read end (a fatal error that closed the transport) and returned the bytes read.
    path = tmp_path / "data"
    path.write_bytes(b"abc")
    r, w = os.pipe()
    try:
        transport, _ = run(anyloop, anyloop.connect_read_pipe(asyncio.Protocol, open(r, "rb", 0)))
        with open(path, "rb") as f:
            for fallback in (True, False):
                with pytest.raises(RuntimeError, match="not supported"):
                    run(anyloop, anyloop.sendfile(transport, f, fallback=fallback))
            assert f.tell() == 0
        assert not transport.is_closing()
        transport.close()
        run(anyloop, asyncio.sleep(0))
    finally:
        os.close(w)


@pytest.mark.parametrize("name", [
    "write", "writelines", "write_eof", "can_write_eof", "abort",
    "get_write_buffer_size", "get_write_buffer_limits", "set_write_buffer_limits",
])
def test_a_read_pipe_has_no_write_methods(anyloop, name):
    # asyncio's read pipe transport is a ReadTransport only: tr.write is an AttributeError.
    # uvcffi's inherited the stream's, and a write() into the read end was a fatal error
    # that closed the transport.
    r, w = os.pipe()
    try:
        transport, _ = run(anyloop, anyloop.connect_read_pipe(asyncio.Protocol, open(r, "rb", 0)))
        assert not hasattr(transport, name)
        with pytest.raises(AttributeError, match=name):
            getattr(transport, name)
        assert not transport.is_closing()
        transport.close()
        run(anyloop, asyncio.sleep(0))
    finally:
        os.close(w)


def test_close_flushes_then_connection_lost(loop):
    r, w = os.pipe()
    proto = WriteProto(loop)
    transport, _ = run(loop, loop.connect_write_pipe(lambda: proto, open(w, "wb", 0)))
    payload = b"z" * (300 * 1024)
    transport.write(payload)
    transport.close()
    assert transport.is_closing()
    got = run(loop, loop.run_in_executor(None, read_all, r, len(payload) + 1))
    assert got == payload  # all of it, then EOF
    assert run(loop, proto.done) is None
    os.close(r)


def test_abort_drops_the_buffer(loop):
    r, w = os.pipe()
    proto = WriteProto(loop)
    transport, _ = run(loop, loop.connect_write_pipe(lambda: proto, open(w, "wb", 0)))
    transport.write(b"y" * (1 << 20))
    assert transport.get_write_buffer_size() > 0
    transport.abort()
    assert transport.get_write_buffer_size() == 0
    assert run(loop, proto.done) is None
    assert proto.events[-1] == ("lost", None)
    os.close(r)
    run(loop, asyncio.sleep(0.01))
    assert lib.uvc_active_slots(loop._uv) == 0


def test_reader_gone_is_seen_without_writing(loop):
    r, w = os.pipe()
    proto = WriteProto(loop)
    run(loop, loop.connect_write_pipe(lambda: proto, open(w, "wb", 0)))
    run(loop, asyncio.sleep(0))
    os.close(r)
    # No write: the hang-up watch alone must report it (asyncio: None when nothing was
    # buffered).
    assert run(loop, proto.done) is None


def test_reader_gone_with_buffered_data_is_broken_pipe(loop):
    r, w = os.pipe()
    proto = WriteProto(loop)
    transport, _ = run(loop, loop.connect_write_pipe(lambda: proto, open(w, "wb", 0)))
    transport.write(b"q" * (1 << 20))
    assert transport.get_write_buffer_size() > 0
    os.close(r)
    exc = run(loop, proto.done)
    assert isinstance(exc, BrokenPipeError)
    assert transport.get_write_buffer_size() == 0


def test_socket_write_pipe_peer_close(loop):
    a, b = socket.socketpair()
    proto = WriteProto(loop)
    transport, _ = run(loop, loop.connect_write_pipe(lambda: proto, a))
    transport.write(b"1")
    assert b.recv(10) == b"1"
    b.close()
    assert run(loop, proto.done) is None


def test_write_pty(loop):
    master, slave = pty.openpty()
    proto = WriteProto(loop)
    transport, _ = run(loop, loop.connect_write_pipe(lambda: proto, open(slave, "wb", 0)))
    transport.write(b"pty!")
    got = run(loop, loop.run_in_executor(None, os.read, master, 100))
    assert got == b"pty!"
    transport.close()
    run(loop, proto.done)
    os.close(master)


def test_connect_on_closed_loop(loop):
    loop.close()
    r, w = os.pipe()
    with open(r, "rb", 0) as pipe:
        coro = loop.connect_read_pipe(asyncio.Protocol, pipe)
        with pytest.raises(RuntimeError, match="closed"):
            coro.send(None)
    os.close(w)


def test_empty_writes_to_a_closed_pipe_do_not_count(anyloop, caplog):
    # asyncio's write pipe drops b"" before it looks at its state: only writes of data
    # bring the "pipe closed by peer" warning nearer.
    r, w = os.pipe()
    proto = WriteProto(anyloop)
    transport, _ = run(anyloop, anyloop.connect_write_pipe(lambda: proto, open(w, "wb", 0)))
    transport.close()
    assert run(anyloop, proto.done) is None
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        for _ in range(20):
            transport.write(b"")
        transport.write(b"x")
    assert "pipe closed by peer" not in caplog.text
    os.close(r)


@pytest.mark.parametrize("direction", ["read", "write"])
def test_a_pipe_whose_fd_the_user_closed_lets_go_of_the_pipe_when_closed(anyloop, direction):
    # The user os.close()d the pipe object's fd under the transport: closing that object
    # in connection_lost fails with EBADF, reported to the exception handler as asyncio
    # does.  uvcffi's own duplicate of the fd (libuv's) must still close with the
    # transport: the other end then sees the pipe gone (EPIPE / EOF), as on asyncio.
    errors = []
    anyloop.set_exception_handler(lambda loop, context: errors.append(context.get("exception")))
    r, w = os.pipe()
    if direction == "read":
        proto = ReadProto(anyloop)
        connect = anyloop.connect_read_pipe(lambda: proto, open(r, "rb", 0))
        other = w
    else:
        proto = WriteProto(anyloop)
        connect = anyloop.connect_write_pipe(lambda: proto, open(w, "wb", 0))
        other = r
    transport, _ = run(anyloop, connect)
    os.close(transport.get_extra_info("pipe").fileno())
    transport.close()
    assert run(anyloop, proto.done) is None
    run(anyloop, asyncio.sleep(0))  # the pipe object is closed right after connection_lost
    try:
        if direction == "read":
            with pytest.raises(BrokenPipeError):
                os.write(other, b"x")
        else:
            os.set_blocking(other, False)
            assert os.read(other, 10) == b""
    finally:
        os.close(other)
    assert [(type(e), e.errno) for e in errors] == [(OSError, errno.EBADF)]
