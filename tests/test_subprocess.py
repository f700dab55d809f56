"""subprocess_exec / subprocess_shell: uvcffi's SubprocessTransport against asyncio's
contract (callback order, Popen's options, exit collection, bad input, no leaks)."""
import asyncio
import contextvars
import errno
import gc
import os
import pathlib
import signal
import subprocess
import sys
import time
import warnings

import pytest

import uvcffi
import uvcffi.transports.subprocess as uvsub
from uvcffi._uv import lib

PY = sys.executable


def run(loop, coro, timeout=20):
    """Run ``coro`` on ``loop``, failing (not hanging) after ``timeout`` seconds."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def zombie_children():
    """Pids of this process's children that are zombies."""
    me = str(os.getpid())
    zombies = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] == "Z":
            zombies.append(int(pid))
    return zombies


class Recorder(asyncio.SubprocessProtocol):
    """Records every callback, in order."""

    def __init__(self, loop):
        self.events = []
        self.data = {1: bytearray(), 2: bytearray()}
        self.transport = None
        self.done = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def pipe_data_received(self, fd, data):
        self.data[fd] += data
        if self.events[-1] != ("data", fd):
            self.events.append(("data", fd))

    def pipe_connection_lost(self, fd, exc):
        self.events.append(("pipe_lost", fd, exc))

    def process_exited(self):
        self.events.append(("exited", self.transport.get_returncode()))

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.done.set_result(None)


def test_exec_protocol_order_and_wait_after_connection_lost(loop):
    waited = []

    async def main():
        t, p = await loop.subprocess_exec(
            lambda: Recorder(loop), PY, "-c",
            "import sys; d = sys.stdin.read(); sys.stdout.write(d.upper()); "
            "sys.stderr.write('err'); sys.exit(3)",
        )
        assert isinstance(t, asyncio.SubprocessTransport)
        assert p.events == ["made"]
        assert t.get_pid() > 0 and t.get_extra_info("subprocess").pid == t.get_pid()
        assert t.get_returncode() is None
        stdin = t.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)
        assert isinstance(t.get_pipe_transport(1), asyncio.ReadTransport)
        assert t.get_pipe_transport(3) is None
        stdin.write(b"hello")
        stdin.close()
        code = await t._wait()
        waited.append(list(p.events))
        t.close()
        return t, p, code

    t, p, code = run(loop, main())
    assert code == 3 and t.get_returncode() == 3
    assert bytes(p.data[1]) == b"HELLO" and bytes(p.data[2]) == b"err"
    events = waited[0]
    assert events[0] == "made" and events[-1] == ("lost", None)
    # process_exited and every pipe's connection_lost come before connection_lost, and
    # _wait() (Process.wait()) completes only after it.
    middle = events[1:-1]
    assert ("exited", 3) in middle
    for fd in (0, 1, 2):
        assert ("pipe_lost", fd, None) in middle
    assert middle.index(("pipe_lost", 1, None)) > middle.index(("data", 1))


def test_stdin_pipe_transport_is_a_transport_as_in_asyncio(anyloop):
    # asyncio's get_pipe_transport(0) is its write pipe transport: an asyncio.Transport
    # (so also a ReadTransport) whose reading methods raise NotImplementedError.
    async def main():
        t, p = await anyloop.subprocess_exec(
            lambda: Recorder(anyloop), PY, "-c", "import sys; sys.stdin.read()")
        stdin = t.get_pipe_transport(0)
        for cls in (asyncio.Transport, asyncio.ReadTransport, asyncio.WriteTransport):
            assert isinstance(stdin, cls)
        for method in (stdin.pause_reading, stdin.resume_reading, stdin.is_reading):
            with pytest.raises(NotImplementedError):
                method()
        stdin.write(b"input")
        stdin.close()
        await p.done
        assert t.get_returncode() == 0
        t.close()

    run(anyloop, main())


def test_create_subprocess_exec_communicate_large(loop):
    payload = os.urandom(4 << 20)

    async def main():
        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        out, err = await proc.communicate(payload)
        return proc.returncode, out, err

    code, out, err = run(loop, main())
    assert code == 0 and out == payload and err is None


def test_shell_exit_code_and_bytes_command(loop):
    async def main():
        proc = await asyncio.create_subprocess_shell("exit 7")
        a = await proc.wait()
        proc = await asyncio.create_subprocess_shell(b"echo $0", stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        return a, out

    a, out = run(loop, main())
    assert a == 7 and out.strip() == b"/bin/sh"


def test_missing_program_raises_and_leaks_nothing(loop):
    run(loop, asyncio.sleep(0))
    gc.collect()
    before = open_fds()
    slots = lib.uvc_active_slots(loop._uv)
    for program in ("/nonexistent/program", "no-such-program-uvcffi"):
        with pytest.raises(FileNotFoundError) as info:
            run(loop, loop.subprocess_exec(asyncio.SubprocessProtocol, program))
        assert info.value.filename == program
    with pytest.raises(FileNotFoundError):
        run(loop, loop.subprocess_exec(asyncio.SubprocessProtocol, PY, cwd="/nonexistent/dir"))
    with pytest.raises(PermissionError):
        run(loop, loop.subprocess_exec(asyncio.SubprocessProtocol, "/etc/passwd"))
    run(loop, asyncio.sleep(0.01))
    gc.collect()
    assert open_fds() - before == set()
    assert lib.uvc_active_slots(loop._uv) == slots
    assert zombie_children() == []


def _assert_popens_error(loop, args, kw):
    """subprocess_exec(*args, **kw) fails with the OSError Popen(args, **kw) raises."""
    with pytest.raises(OSError) as popen_error:
        subprocess.Popen(args, **kw)
    with pytest.raises(OSError) as ours:
        run(loop, loop.subprocess_exec(asyncio.SubprocessProtocol, *args, **kw))
    assert (type(ours.value), ours.value.args, ours.value.filename) == (
        type(popen_error.value), popen_error.value.args, popen_error.value.filename)


def test_a_program_execve_refuses_is_popens_error_not_run_by_a_shell(loop, tmp_path):
    """A file with neither an ELF header nor #! is OSError(ENOEXEC), as for Popen (libuv's
    uv_spawn child, with glibc's execvp, ran it with /bin/sh).  And "" is Popen's
    PermissionError, not ENOENT."""
    script = tmp_path / "no-shebang"
    script.write_text("echo ran by a shell\n")
    script.chmod(0o755)
    on_path = {"env": {"PATH": str(tmp_path)}}
    for args, kw in (((str(script),), {}), (("no-shebang",), on_path), (("",), on_path)):
        _assert_popens_error(loop, args, kw)


def test_spawn_errors_name_what_popen_names(loop):
    """Popen's filename is the program or cwd as given (bytes, a path object), and cwd (None
    without one) for an error before the exec, such as a bad fd to pass."""
    closed_fd = max(int(fd) for fd in open_fds()) + 100  # (a free low one: Popen's own pipe)
    cases = [((b"/nonexistent/program",), {}), ((pathlib.Path("/nonexistent/program"),), {}),
             (("true",), {"cwd": b"/nonexistent/dir"}),
             (("true",), {"cwd": pathlib.Path("/nonexistent/dir")}),
             (("true",), {"pass_fds": [closed_fd]}),
             (("true",), {"pass_fds": [closed_fd], "cwd": "/"})]
    for args, kw in cases:
        _assert_popens_error(loop, args, kw)


def test_bad_arguments(loop):
    P = asyncio.SubprocessProtocol

    def exec_(*args, **kw):
        return run(loop, loop.subprocess_exec(P, *args, **kw))

    text_mode = ({"universal_newlines": True}, {"bufsize": 4096}, {"text": True},
                 {"encoding": "utf-8"}, {"errors": "strict"})
    for kw in text_mode + ({"shell": True},):
        with pytest.raises(ValueError):
            exec_(PY, **kw)
    for kw in text_mode + ({"shell": False},):
        with pytest.raises(ValueError):
            run(loop, loop.subprocess_shell(P, "true", **kw))
    with pytest.raises(ValueError, match="cmd must be a string"):
        run(loop, loop.subprocess_shell(P, ["ls", "-l"]))
    with pytest.raises(TypeError):
        exec_(42)
    with pytest.raises(TypeError):
        exec_(PY, "-c", "pass", 3.5)
    with pytest.raises(ValueError):
        exec_(PY, "-c", "pass\0")
    with pytest.raises(ValueError):
        exec_(PY, env={"A=B": "1"})
    with pytest.raises(TypeError):
        exec_(PY, not_a_popen_keyword=1)  # Popen's own TypeError
    run(loop, asyncio.sleep(0.01))
    assert zombie_children() == []


@pytest.mark.parametrize("keyword, value", [
    ("start_new_session", None), ("start_new_session", "yes"), ("start_new_session", 1.5),
    ("process_group", None), ("pipesize", -1),  # (keywords PyPy 3.9's Popen does not take)
    ("umask", -1.0), ("pipesize", -1.0),  # (equal to the defaults, but no integers)
])
def test_what_popen_refuses_is_refused(loop, keyword, value):
    """This Python's Popen's TypeError for a value or a keyword it refuses, not a child
    started (a spawn of uvcffi's own once took what compared equal to Popen's defaults)."""
    try:
        subprocess.Popen(["true"], **{keyword: value}).wait()
    except TypeError as exc:
        expected = type(exc)
    else:
        expected = None

    async def main():
        t, p = await loop.subprocess_exec(lambda: Recorder(loop), "true", **{keyword: value})
        await p.done
        t.close()

    if expected is None:
        run(loop, main())
    else:
        with pytest.raises(expected):
            run(loop, main())


def test_signals_and_process_lookup_error(loop):
    async def main():
        t, p = await loop.subprocess_exec(lambda: Recorder(loop), "sleep", "30")
        t.send_signal(signal.SIGTERM)
        code = await t._wait()
        with pytest.raises(ProcessLookupError):
            t.send_signal(signal.SIGTERM)
        with pytest.raises(ProcessLookupError):
            t.kill()
        with pytest.raises(ProcessLookupError):
            t.terminate()
        t.close()
        t2, _ = await loop.subprocess_exec(asyncio.SubprocessProtocol, "sleep", "30")
        t2.kill()
        code2 = await t2._wait()
        t2.close()
        proc = await asyncio.create_subprocess_exec("sleep", "30")
        proc.terminate()
        code3 = await proc.wait()
        with pytest.raises(ProcessLookupError):
            proc.kill()
        return code, code2, code3

    assert run(loop, main()) == (-signal.SIGTERM, -signal.SIGKILL, -signal.SIGTERM)


def test_a_signal_that_is_no_integer_is_a_type_error(loop):
    # As os.kill() in asyncio: neither a ValueError for "x" nor 15.5 sent as 15.
    async def main():
        t, p = await loop.subprocess_exec(lambda: Recorder(loop), "sleep", "30")
        for bad in ("x", "15", 15.5, None):
            with pytest.raises(TypeError):
                t.send_signal(bad)
        # An IntEnum is an integer.  (Not SIGINT: a background job ignores it, and its
        # children inherit that.)
        t.send_signal(signal.SIGTERM)
        await p.done
        t.close()
        return t.get_returncode()

    assert run(loop, main()) == -signal.SIGTERM


def test_a_child_inherits_the_ignored_and_blocked_signals_a_popen_child_inherits(loop):
    """A Popen child keeps what its parent ignores (nohup's SIGHUP, a background job's
    SIGINT, SIGCHLD auto-reaping) and blocks, and so do uvcffi's (libuv's uv_spawn child
    resets both)."""
    status = ["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]

    async def main():
        proc = await asyncio.create_subprocess_exec(*status, stdout=subprocess.PIPE)
        return (await proc.communicate())[0]

    old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
    try:
        popen = subprocess.run(status, stdout=subprocess.PIPE, check=True).stdout
        ours = run(loop, main())
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGHUP, old_hup)
    assert ours == popen


def test_close_kills_a_running_child(loop):
    async def main():
        t, p = await loop.subprocess_exec(lambda: Recorder(loop), "sleep", "30")
        t.close()
        assert t.is_closing()
        await p.done
        return t.get_returncode()

    assert run(loop, main()) == -signal.SIGKILL


def test_stdio_options(loop, tmp_path):
    out_file = tmp_path / "out"

    async def main():
        # DEVNULL in, STDOUT redirect of stderr
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; print(repr(sys.stdin.read())); print('e', file=sys.stderr)",
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        out1, _ = await proc.communicate()
        # a file object and a raw fd as stdout
        with open(out_file, "wb") as f:
            proc = await asyncio.create_subprocess_exec("echo", "to-file", stdout=f)
            await proc.wait()
        r, w = os.pipe()
        proc = await asyncio.create_subprocess_exec("echo", "to-fd", stdout=w)
        await proc.wait()
        os.close(w)
        out2 = os.read(r, 100)
        os.close(r)
        # None: inherited (nothing to check but that it runs)
        proc = await asyncio.create_subprocess_exec("true", stdin=None, stdout=None, stderr=None)
        code = await proc.wait()
        return out1, out2, code

    out1, out2, code = run(loop, main())
    assert out1 == b"''\ne\n"
    assert out_file.read_bytes() == b"to-file\n"
    assert out2 == b"to-fd\n" and code == 0


def test_cwd_env_executable_new_session(loop, tmp_path):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            "pwd", cwd=tmp_path, stdout=subprocess.PIPE
        )
        cwd, _ = await proc.communicate()
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import os; print(os.environ['UVCFFI_X'], 'PATH' in os.environ)",
            env={"UVCFFI_X": "yes"}, stdout=subprocess.PIPE,
        )
        env, _ = await proc.communicate()
        proc = await asyncio.create_subprocess_exec(
            "argv0-name", "-c", "import sys; print(sys.argv[0])", executable=PY,
            stdout=subprocess.PIPE,
        )
        exe, _ = await proc.communicate()
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import os; print(os.getsid(0) == os.getpid())",
            start_new_session=True, stdout=subprocess.PIPE,
        )
        sid, _ = await proc.communicate()
        return cwd, env, exe, sid

    cwd, env, exe, sid = run(loop, main())
    assert cwd.strip() == os.fsencode(str(tmp_path))
    assert env.split() == [b"yes", b"False"]
    assert exe.strip() == b"-c"
    assert sid.strip() == b"True"


def test_pass_fds_and_close_fds(loop):
    r, w = os.pipe()
    os.set_inheritable(w, True)  # would leak into a child unless close_fds closes it
    code = "import os, sys; fd = int(sys.argv[1]); os.write(fd, b'ok') if %s else " \
           "print(os.path.exists('/proc/self/fd/%%d' %% fd))"

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", code % "True", str(w), pass_fds=(w,)
        )
        await proc.wait()
        got = os.read(r, 10)
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", code % "False", str(w), stdout=subprocess.PIPE
        )
        closed, _ = await proc.communicate()
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", code % "False", str(w), stdout=subprocess.PIPE, close_fds=False
        )
        kept, _ = await proc.communicate()
        return got, closed, kept

    try:
        got, closed, kept = run(loop, main())
    finally:
        os.close(r)
        os.close(w)
    assert got == b"ok"
    assert closed.strip() == b"False" and kept.strip() == b"True"


def test_popen_only_options(loop):
    """Popen's options that libuv's uv_spawn has no equivalent for."""
    marker = []

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import os; print(oct(os.umask(0)))", umask=0o037,
            stdout=subprocess.PIPE,
        )
        umask, _ = await proc.communicate()
        pgid = b"True"
        if sys.version_info >= (3, 11):  # Popen's process_group is new in 3.11
            proc = await asyncio.create_subprocess_exec(
                PY, "-c", "import os; print(os.getpgid(0) == os.getpid())", process_group=0,
                stdout=subprocess.PIPE,
            )
            pgid, _ = await proc.communicate()
        sigpipe = []
        for restore in (True, False):  # Python ignores SIGPIPE: only restoring resets it
            proc = await asyncio.create_subprocess_exec(
                "grep", "SigIgn", "/proc/self/status", restore_signals=restore,
                stdout=subprocess.PIPE,
            )
            out, _ = await proc.communicate()
            sigpipe.append(bool(int(out.split()[1], 16) & (1 << (signal.SIGPIPE - 1))))
        t, p = await loop.subprocess_exec(
            lambda: Recorder(loop), PY, "-c", "import sys; sys.exit(5)",
            preexec_fn=lambda: marker.append("never seen in the parent"),
        )
        assert isinstance(t.get_extra_info("subprocess"), subprocess.Popen)
        await p.done
        code = t.get_returncode()
        t.close()
        return umask, pgid, sigpipe, code

    umask, pgid, sigpipe, code = run(loop, main())
    assert umask.strip() == b"0o37"
    assert pgid.strip() == b"True"
    assert sigpipe == [False, True]
    assert code == 5 and marker == []
    run(loop, asyncio.sleep(0.01))
    assert zombie_children() == []


@pytest.mark.skipif(os.getuid() != 0, reason="changing user needs root")
def test_user_and_group(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", "id -u; id -g", user=65534, group=65534, stdout=subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        return out

    assert run(loop, main()).split() == [b"65534", b"65534"]


def test_popen_path_without_pidfd(loop, monkeypatch):
    """Kernels without pidfd: the Popen path waits in a thread of its own."""
    monkeypatch.setattr(uvsub, "_pidfd_watch", lambda loop, pid: -38)  # UV_ENOSYS

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; sys.exit(4)", umask=0o022
        )
        return await proc.wait()

    assert run(loop, main()) == 4
    assert zombie_children() == []


def test_app_sigchld_handler_survives_spawning(loop):
    """Spawning must not take SIGCHLD from the application's handler (libuv's uv_spawn
    installs its own), and exits must still arrive while that handler is installed."""
    seen = []
    loop.add_signal_handler(signal.SIGCHLD, seen.append, "chld")
    try:
        async def main():
            codes = []
            for i in range(3):
                proc = await asyncio.create_subprocess_exec(PY, "-c", f"exit({i})")
                codes.append(await proc.wait())
            for _ in range(50):
                if seen:
                    break
                await asyncio.sleep(0.01)
            return codes

        assert run(loop, main()) == [0, 1, 2]
        assert seen  # the application's handler ran
    finally:
        loop.remove_signal_handler(signal.SIGCHLD)
    # ... and with SIGCHLD back to its default, exits still come.
    proc_code = run(loop, _exit_code(9))
    assert proc_code == 9


async def _exit_code(code):
    proc = await asyncio.create_subprocess_exec(PY, "-c", f"exit({code})")
    return await proc.wait()


def test_child_reaped_by_someone_else(loop):
    """Popen-style code reaping the child itself: the transport still finishes, with the
    status that code saw."""
    async def main():
        t, p = await loop.subprocess_exec(lambda: Recorder(loop), "sh", "-c", "exit 6")
        popen = t.get_extra_info("subprocess")
        assert popen.wait() == 6  # blocking waitpid, before the loop looks
        await p.done
        code = t.get_returncode()
        t.close()
        return code

    assert run(loop, main()) == 6


def _wait_until_zombie(pid):
    """Block, without letting the loop run, until child ``pid`` has exited; not reaping it."""
    for _ in range(20000):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return
        time.sleep(0.001)
    raise AssertionError(f"child {pid} never exited")


@pytest.mark.parametrize("method", ["wait", "poll"])
def test_an_exit_found_by_a_poll_reaches_code_that_runs_before_its_events(loop, method):
    """The callbacks that were ready before a poll run before the poll's events are handed
    out.  When that poll finds the child exited, code in those callbacks holding the
    child's Popen still gets its status: the loop must not have reaped it out of sight,
    leaving Popen to report 0 for a child it cannot find."""
    r, w = os.pipe()

    async def main():
        t, p = await loop.subprocess_exec(
            lambda: Recorder(loop), "sh", "-c", "read x; exit 6", stdin=r
        )
        popen = t.get_extra_info("subprocess")
        os.write(w, b"\n")
        _wait_until_zombie(popen.pid)
        await asyncio.sleep(0)  # this wake-up is ready before the poll that finds the exit
        code = getattr(popen, method)()
        await p.done
        t.close()
        return code, t.get_returncode(), ("exited", 6) in p.events, p.events[-1]

    try:
        assert run(loop, main()) == (6, 6, True, ("lost", None))
    finally:
        os.close(r)
        os.close(w)


def test_signals_to_an_exited_child_are_no_error_until_the_transport_finishes(loop):
    """asyncio's send_signal()/terminate()/kill() send nothing to a child that has exited
    (Popen.send_signal) and raise ProcessLookupError only once connection_lost has run:
    `except TimeoutError: proc.kill()` must not fail because the child just exited, be it
    seen by the poll before its event is handled, or with a pipe a grandchild holds open."""
    r, w = os.pipe()
    outcomes = []

    def signal_all(t):
        for send in (t.kill, t.terminate, lambda: t.send_signal(signal.SIGUSR1)):
            try:
                send()
                outcomes.append("no error")
            except ProcessLookupError:
                outcomes.append("ProcessLookupError")

    async def main():
        exited = loop.create_future()

        class Proto(Recorder):
            def process_exited(self):
                super().process_exited()
                exited.set_result(None)

        # The child exits on a first line, leaving a background subshell that keeps stdout
        # open until a second line.  (sh gives a background job /dev/null, hence fd 3.)
        t, p = await loop.subprocess_exec(
            lambda: Proto(loop), "sh", "-c", "read x; exec 3<&0; (read x <&3) & exit 6",
            stdin=r,
        )
        os.write(w, b"\n")
        _wait_until_zombie(t.get_pid())
        await asyncio.sleep(0)  # this wake-up is ready before the poll that finds the exit
        signal_all(t)
        await exited
        signal_all(t)  # exited, stdout still open
        os.write(w, b"\n")
        await p.done
        signal_all(t)  # finished
        t.close()
        return t.get_returncode()

    try:
        assert run(loop, main()) == 6
    finally:
        os.close(r)
        os.close(w)
    assert outcomes == ["no error"] * 6 + ["ProcessLookupError"] * 3


def test_callbacks_run_in_creation_context(loop):
    var = contextvars.ContextVar("var", default="unset")
    seen = set()

    class Ctx(Recorder):
        def connection_made(self, transport):
            seen.add(var.get())
            super().connection_made(transport)

        def pipe_data_received(self, fd, data):
            seen.add(var.get())
            super().pipe_data_received(fd, data)

        def process_exited(self):
            seen.add(var.get())
            super().process_exited()

        def connection_lost(self, exc):
            seen.add(var.get())
            super().connection_lost(exc)

    async def main():
        var.set("creator")
        t, p = await loop.subprocess_exec(lambda: Ctx(loop), "echo", "x", stdin=None)
        await p.done
        t.close()

    run(loop, main())
    assert seen == {"creator"}


def test_cancel_while_connecting_leaves_nothing(loop):
    async def main():
        task = loop.create_task(asyncio.create_subprocess_exec("sleep", "30"))
        loop.call_soon(task.cancel)
        with pytest.raises(asyncio.CancelledError):
            await task

    run(loop, main())
    run(loop, asyncio.sleep(0.05))
    assert zombie_children() == []


def test_a_pipe_that_cannot_be_connected_fails_the_start_without_hanging(loop, monkeypatch):
    """Connecting the child's stderr fails (EMFILE): subprocess_exec() kills the child and
    raises that error.  The unconnected pipe kept the transport from ever finishing, so the
    wait for the killed child hung (as on asyncio 3.11), and its fd stayed open."""
    def start():
        return asyncio.create_subprocess_exec(
            "cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    run(loop, run(loop, start()).communicate(b""))  # what the loop opens once is open now
    gc.collect()
    before = open_fds()
    connect_read_pipe = loop.connect_read_pipe

    async def stderr_fails(factory, pipe):
        if factory().fd == 2:
            raise OSError(errno.EMFILE, "Too many open files")
        return await connect_read_pipe(factory, pipe)

    monkeypatch.setattr(loop, "connect_read_pipe", stderr_fails)
    with pytest.raises(OSError) as info:
        run(loop, start())
    assert info.value.errno == errno.EMFILE
    run(loop, asyncio.sleep(0.01))
    gc.collect()
    assert open_fds() == before
    assert zombie_children() == []


# PyPy 3.9's subprocess forks where CPython's uses vfork, and a fork costs in proportion to the
# parent's memory: 300 spawns took 3.6 s in a 305 MB PyPy process and 11 s in an 850 MB one
# (asyncio's loop the same), and the suite's process grows past that, where 1,000 spawns took
# over two minutes on a loaded machine.  A leak or a zombie shows per spawn: 300 find it too.
SPAWN_ROUNDS = 50 if sys.implementation.name == "cpython" else 15


def test_many_spawns_no_zombies_no_fd_leak(loop):
    async def one():
        proc = await asyncio.create_subprocess_exec(
            "true", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        await proc.communicate()
        return proc.returncode

    async def main():
        codes = []
        for _ in range(SPAWN_ROUNDS):  # 20 at a time: 1,000 in all on CPython
            codes += await asyncio.gather(*[one() for _ in range(20)])
        return codes

    # The first spawn makes libuv's SIGCHLD plumbing (its signal pipes): not a leak.
    assert run(loop, one()) == 0
    run(loop, asyncio.sleep(0))
    gc.collect()
    before = open_fds()
    codes = run(loop, main(), timeout=120)
    run(loop, asyncio.sleep(0.01))
    gc.collect()
    assert codes == [0] * (20 * SPAWN_ROUNDS)
    assert open_fds() - before == set()
    assert zombie_children() == []
    assert lib.uvc_active_slots(loop._uv) < 10


def test_a_child_left_running_survives_its_loop():
    # A program starts a child, keeps no reference to it and returns: once the loop has
    # closed and the transport is collected, the child runs on, as with asyncio (whose
    # child watcher holds the transport until the child exits; checked by hand: run on
    # asyncio here, its transport's ResourceWarning surfaces in some later test).
    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "import time; time.sleep(60)")
        return proc.pid

    pid = uvcffi.run(main())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # "unclosed transport"
        gc.collect()
    # Still running (not a zombie): the loop's closing left it alone.  Once it exits the
    # thread the closing loop left behind reaps it (see the test after _gone below).
    with open(f"/proc/{pid}/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[0] != "Z"
    os.kill(pid, signal.SIGTERM)
    assert _gone(pid), f"child {pid} left a zombie"
    with warnings.catch_warnings():
        # PyPy finalizes the transport's Popen a collection later; reaped here, it would
        # warn "subprocess ... is still running" in some later test.
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
        gc.collect()


def _gone(pid, bound=30.0):
    """Wait (at most ``bound`` seconds) until ``pid`` has been reaped by someone else:
    True once /proc has no such process (a zombie still has its entry)."""
    import time
    deadline = time.monotonic() + bound
    while os.path.exists(f"/proc/{pid}"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_child_running_when_its_loop_closes_is_reaped_when_it_exits():
    # libuv stops watching the child when the loop closes; asyncio's child watcher reaps
    # such a child whenever it exits.  Left alone it was a zombie for the process's life.
    kept = []

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import time; time.sleep(60)")
        kept.append(proc)  # the program keeps it: the transport is not collected
        return proc.pid

    pid = uvcffi.run(main())
    os.kill(pid, signal.SIGTERM)
    assert _gone(pid), f"child {pid} left a zombie"
    assert pid not in zombie_children()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # "unclosed transport"
        kept.clear()
        gc.collect()


def test_kill_after_the_loop_closed_still_kills():
    # As on asyncio: the transport still reaches its child by pid (it was "no such
    # process", with the child left running).
    loop = uvcffi.new_event_loop()

    async def main():
        return await loop.subprocess_exec(
            asyncio.SubprocessProtocol, PY, "-c", "import time; time.sleep(60)")

    transport, _ = loop.run_until_complete(main())
    pid = transport.get_pid()
    loop.close()
    transport.kill()
    assert _gone(pid), f"child {pid} still there"
    transport.kill()  # gone: nothing is sent, nothing raised (asyncio's Popen.send_signal)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        transport.close()
        del transport
        gc.collect()


def test_subprocess_extra_args_as_asyncio(anyloop):
    # asyncio's 'subprocess' extra is its Popen: args is the shell command string, or the
    # tuple of program and arguments.
    async def main():
        args = []
        for start in (lambda: anyloop.subprocess_shell(lambda: Recorder(anyloop), "exit 0"),
                      lambda: anyloop.subprocess_exec(lambda: Recorder(anyloop), "true", "x")):
            transport, protocol = await start()
            args.append(transport.get_extra_info("subprocess").args)
            await protocol.done
            transport.close()
        return tuple(args)

    assert run(anyloop, main()) == ("exit 0", ("true", "x"))
