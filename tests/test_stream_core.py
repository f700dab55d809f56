"""The C stream layer (csrc/uvc_stream.c) driven directly through slots, below any transport."""
import errno
import socket

from uvcffi._uv import lib


class Recorder:
    def __init__(self):
        self.data = []
        self.events = []
        self.closed = False

    def _uv_read(self, data):
        self.data.append(data)

    def _uv_event(self, kind, a, b, c):
        self.events.append((kind, a, b))

    def _uv_closed(self):
        self.closed = True


def run_once(loop):
    """One loop iteration that waits 10 ms at most (a bare _run_once may block forever)."""
    loop.call_later(0.01, lambda: None)
    loop._run_once()


def run_until(loop, cond, limit=2000):
    for _ in range(limit):
        if cond():
            return
        run_once(loop)
    raise AssertionError("condition not met")


def test_listen_accept_connect_write_read_shutdown(loop):
    srv_sock = socket.socket()
    srv_sock.bind(("127.0.0.1", 0))
    port = srv_sock.getsockname()[1]
    uv = loop._uv
    server, client = Recorder(), Recorder()
    s_slot = lib.uvc_listener_new(uv, srv_sock.detach(), 1)
    assert s_slot >= 0
    loop._slot_register(s_slot, server)
    assert lib.uvc_listen(uv, s_slot, 16) == 0

    c_slot = lib.uvc_tcp_new(uv)
    loop._slot_register(c_slot, client)
    assert lib.uvc_tcp_connect(uv, c_slot, b"127.0.0.1", port, 0, 0) == 0
    run_until(loop, lambda: client.events and server.events)
    assert client.events[0] == (lib.UVC_EV_CONNECT, 0, 0)
    kind, status, a_slot = server.events[0]
    assert (kind, status) == (lib.UVC_EV_ACCEPT, 0) and a_slot >= 0
    accepted = Recorder()
    loop._slot_register(a_slot, accepted)
    assert lib.uvc_read_start(uv, a_slot) == 0

    payload = bytes(range(256)) * 4096  # 1 MiB: more than the socket takes at once
    sent = lib.uvc_write(uv, c_slot, payload, len(payload))
    assert 0 <= sent <= len(payload)
    assert lib.uvc_shutdown(uv, c_slot) == 0
    run_until(loop, lambda: (lib.UVC_EV_EOF, 0, 0) in accepted.events, limit=100000)
    assert b"".join(accepted.data) == payload
    if sent < len(payload):
        assert (lib.UVC_EV_WRITE_DONE, 0, len(payload) - sent) in client.events
    assert (lib.UVC_EV_SHUTDOWN, 0, 0) in client.events

    for slot in (c_slot, a_slot, s_slot):
        lib.uvc_close(uv, slot)
    run_until(loop, lambda: client.closed and accepted.closed and server.closed)
    assert lib.uvc_active_slots(uv) == 0


def test_connect_refused_and_bad_slot(loop):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    uv = loop._uv
    rec = Recorder()
    slot = lib.uvc_tcp_new(uv)
    loop._slot_register(slot, rec)
    assert lib.uvc_tcp_connect(uv, slot, b"127.0.0.1", port, 0, 0) == 0
    run_until(loop, lambda: rec.events)
    kind, status, _ = rec.events[0]
    assert kind == lib.UVC_EV_CONNECT and -status == errno.ECONNREFUSED
    assert lib.uvc_tcp_connect(uv, slot, b"not an ip", 1, 0, 0) < 0
    # a port outside 0-65535 is refused, not wrapped to its low 16 bits (70000 -> 4464)
    for bad_port in (70000, -1):
        assert lib.uvc_tcp_connect(uv, slot, b"127.0.0.1", bad_port, 0, 0) == -errno.EINVAL
        assert lib.uvc_tcp_connect(uv, slot, b"::1", bad_port, 0, 0) == -errno.EINVAL
    assert lib.uvc_write(uv, 99999, b"x", 1) < 0
    assert lib.uvc_read_start(uv, -1) < 0
    lib.uvc_close(uv, slot)
    run_until(loop, lambda: rec.closed)


def _connected_pair(loop):
    """Two connected TCP slots (client, accepted) with recorders, reading started."""
    srv_sock = socket.socket()
    srv_sock.bind(("127.0.0.1", 0))
    port = srv_sock.getsockname()[1]
    uv = loop._uv
    server, client = Recorder(), Recorder()
    s_slot = lib.uvc_listener_new(uv, srv_sock.detach(), 1)
    loop._slot_register(s_slot, server)
    lib.uvc_listen(uv, s_slot, 16)
    c_slot = lib.uvc_tcp_new(uv)
    loop._slot_register(c_slot, client)
    lib.uvc_tcp_connect(uv, c_slot, b"127.0.0.1", port, 0, 0)
    run_until(loop, lambda: client.events and server.events)
    a_slot = server.events[0][2]
    return (c_slot, client), a_slot, s_slot


def test_failing_owner_does_not_stop_dispatch(loop, caplog):
    (c_slot, client), a_slot, s_slot = _connected_pair(loop)
    uv = loop._uv

    class Exploding(Recorder):
        def _uv_read(self, data):
            raise RuntimeError("owner bug")

    second = Recorder()
    loop._slot_register(a_slot, Exploding())
    lib.uvc_read_start(uv, a_slot)
    # a second connection's read lands in the same batch as the failing one
    (c2, _), a2, s2 = _connected_pair(loop)
    loop._slot_register(a2, second)
    lib.uvc_read_start(uv, a2)
    lib.uvc_write(uv, c_slot, b"boom", 4)
    lib.uvc_write(uv, c2, b"fine", 4)
    run_until(loop, lambda: second.data)
    assert second.data == [b"fine"]
    assert "owner bug" in caplog.text


def test_keyboard_interrupt_mid_dispatch_keeps_the_rest(loop):
    (c_slot, client), a_slot, s_slot = _connected_pair(loop)
    (c2, _), a2, s2 = _connected_pair(loop)
    uv = loop._uv
    interrupted = []

    class Interrupting(Recorder):
        def _uv_read(self, data):
            if not interrupted:
                interrupted.append(data)
                raise KeyboardInterrupt
            self.data.append(data)

    first, second = Interrupting(), Recorder()
    loop._slot_register(a_slot, first)
    loop._slot_register(a2, second)
    lib.uvc_read_start(uv, a_slot)
    lib.uvc_read_start(uv, a2)
    lib.uvc_write(uv, c_slot, b"one", 3)
    lib.uvc_write(uv, c2, b"two", 3)
    got_interrupt = False
    for _ in range(1000):
        try:
            run_once(loop)
        except KeyboardInterrupt:
            got_interrupt = True
        if second.data:
            break
    assert got_interrupt
    assert second.data == [b"two"]  # delivered from the backlog, data intact


def test_calls_after_close_fail_cleanly(loop):
    (c_slot, client), a_slot, s_slot = _connected_pair(loop)
    uv = loop._uv
    loop.close()
    assert lib.uvc_write(uv, c_slot, b"x", 1) < 0
    assert lib.uvc_read_start(uv, a_slot) < 0
    assert lib.uvc_close(uv, s_slot) < 0
    assert lib.uvc_wakeup(uv) < 0
    assert lib.uvc_fdset_open(uv) < 0
    assert lib.uvc_fdset_ctl(uv, 0, 0, lib.UVC_READABLE) < 0
    assert lib.uvc_tcp_new(uv) < 0


def test_reads_land_on_cache_lines_in_the_arena():
    """The C core's read arena: every read starts on a 64-byte line (the kernel copies into
    a destination off a line about 4x slower), and reads of one iteration do not overlap."""
    from uvcffi._uv import ffi, lib

    L = lib.uvc_loop_new()
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        arena = lib.uvc_arena(L)
        assert int(ffi.cast("uintptr_t", arena)) % 64 == 0
        slots = []
        for ours, _ in pairs:
            slot = lib.uvc_pipe_new(L, 0)
            assert slot >= 0
            assert lib.uvc_stream_open(L, slot, ours.detach()) == 0  # libuv closes it
            assert lib.uvc_read_start(L, slot) == 0
            slots.append(slot)
        sent = {}
        for i, (slot, (_, peer)) in enumerate(zip(slots, pairs)):
            sent[slot] = bytes([65 + i]) * (1000 + 7 * i)  # odd sizes
            peer.sendall(sent[slot])
        got = {}
        for _ in range(50):
            n = lib.uvc_run_once(L, 10)
            ev = lib.uvc_events(L)
            spans = []
            for k in range(n):
                kind, slot, off, length = (ev[5 * k + j] for j in range(4))
                if kind == lib.UVC_EV_READ:
                    assert off % 64 == 0, off
                    spans.append((off, off + length))
                    got[slot] = got.get(slot, b"") + ffi.buffer(arena + off, length)[:]
            spans.sort()
            assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
            if got == sent:
                break
        assert got == sent
    finally:
        lib.uvc_loop_free(L)
        for ours, peer in pairs:
            ours.close()  # a no-op once detached
            peer.close()


def test_arena_copy_is_exact_at_every_distance():
    """uvc_arena_copy (a read into a protocol's buffer) avoids REP MOVSB when the
    destination lies 1..63 bytes past the source modulo a page; whatever path it takes,
    it copies exactly the bytes asked for and touches nothing around them."""
    from uvcffi._uv import ffi, lib

    L = lib.uvc_loop_new()
    try:
        arena = ffi.buffer(lib.uvc_arena(L), lib.uvc_arena_size(L))
        pattern = bytes(range(251)) * 800  # 200,800 bytes, no period of 64 or 4096
        arena[:len(pattern)] = pattern
        for off in (0, 64, 4096):
            for n in (1, 63, 64, 65, 4095, 4096, 5000, 102400):
                for shift in (0, 4, 16, 31, 32, 63, 64, 100):
                    dst = bytearray(b"\xee" * (n + 8192 + 256))
                    # where the copy must start for (dst - src) % 4096 == shift (the arena
                    # is page-aligned)
                    base = int(ffi.cast("uintptr_t", ffi.from_buffer(dst)))
                    at = (shift + off - base) % 4096 + 4096
                    lib.uvc_arena_copy(L, off, ffi.from_buffer(dst) + at, n)
                    assert dst[at:at + n] == pattern[off:off + n], (off, n, shift)
                    assert dst[:at] == b"\xee" * at and set(dst[at + n:]) == {0xee}
    finally:
        lib.uvc_loop_free(L)
