"""Scenario 8: fds closed under watched operations.

For sock_recv, sock_recv_into, sock_sendall (with a full send buffer), sock_connect (to a
listening socket whose accept queue is full, so the connect waits; and to a port nobody
listens on), sock_accept, add_reader, add_writer, connect_read_pipe, connect_write_pipe,
create_connection(sock=), connect_accepted_socket(sock=), create_server(sock=) and
create_datagram_endpoint(sock=): the socket object (the int fd for add_reader/add_writer,
the pipe's file object for the pipe transports) is closed before the loop first polls it,
while the loop polls it, or after the operation completed; _closed_fd_cases.py has the
cases and says exactly what each phase and outcome is.  Each case runs in a process of its
own (libuv abort()s the process when epoll_ctl fails on an fd it was given: that must fail
one test, not kill pytest), several at a time.

What uvcffi must do: never abort, never hang; an operation on an fd closed while pending
completes (the close deferred until it ends, as uvloop does) or ends with an exception;
add_reader/add_writer on an fd already closed raise OSError (as asyncio's selector does)
and their callbacks never run for a file they were not given; nothing closes an fd the
loop no longer owns and nothing writes to it (a socket made after the close, likely with
the same number, must survive and receive nothing); the loop goes on working, the same
operation works on a new fd.

asyncio's own loop (CPython 3.11.7 and PyPy 3.9 alike; `python _closed_fd_cases.py
asyncio all` prints it), against which these expectations are stricter: it never aborts,
but it hangs wherever the fd leaves its epoll set with the close (the kernel drops a closed
fd from epoll silently, and the selector never learns):
    sock_recv, sock_recv_into, sock_sendall, sock_connect, sock_accept:
        before, polling: hang; after: fine
    sock_connect refused: before: hang; polling, after: ConnectionRefusedError
    add_reader, add_writer: closed: OSError; before, polling, after, before_reused: fine
        (the selector registered the fd at add time: no callback after the close)
    connect_read_pipe: hang in every phase (before: the transport's _add_reader logs
        OSError EBADF through the exception handler)
    connect_write_pipe: the data written after the close goes to whatever file has the
        fd number by then (the socket made after the close, here), connection_lost(None)
    create_connection(sock=), connect_accepted_socket(sock=),
    create_datagram_endpoint(sock=): hang in every phase (before: EBADF logged)
    create_server(sock=): clients refused (the listener is gone), then server.close()
        raises ValueError (Invalid file descriptor: -1)
"""
import concurrent.futures
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _closed_fd_cases as cases  # noqa: E402

# (case, phase) -> the reason of a strict xfail, for a uvcffi bug a case finds: none today.
# On the loop this suite was written against (0fe569e) 24 cases failed, on both runtimes:
# every "before" case of the sock_* methods, add_reader/add_writer and the stream
# transports aborted the process (libuv's deferred epoll_ctl(ADD) met the closed fd);
# sock_* waits on a socket closed while polled hung; create_connection(sock=) and
# connect_accepted_socket(sock=) went deaf once their socket was closed and later closed
# its fd number again (another socket's by then), as server.close() did for
# create_server(sock=); add_reader/add_writer watched the new file of a reused fd number.
# Main fixed them all (56aa8b1, 1d87843: the loop's own epoll set for fds it does not own,
# sockets in use held open until their operation or transport ends).
XFAIL = {}

# Cases run in parallel: most of their time is waiting (for a hang to show, for a SYN to
# be sent again), and each case's timing does not depend on the others.
WORKERS = 4


def params():
    out = []
    for case, phases in cases.CASES.items():
        for phase in phases:
            marks = []
            if (case, phase) in XFAIL:
                marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[(case, phase)]))
            out.append(pytest.param(case, phase, marks=marks, id=f"{case}-{phase}"))
    return out


@pytest.fixture(scope="module")
def reports(request):
    """Run the cases this session selected from this module, several at a time."""
    wanted = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if item.module is request.module and callspec is not None:
            wanted.append((callspec.params["case"], callspec.params["phase"]))
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        futures = {
            key: pool.submit(cases.run_in_subprocess, "uvcffi", *key) for key in wanted
        }
        return {key: f.result() for key, f in futures.items()}


@pytest.mark.parametrize("case, phase", params())
def test_fd_closed_under_operation(reports, case, phase):
    rc, report, stderr = reports[(case, phase)]
    assert rc != "timeout", f"the loop hung (no report in 60 s)\n{stderr}"
    assert rc == 0, f"the process died ({rc}: -6 is SIGABRT)\n{stderr}"
    assert report is not None, stderr
    assert report["outcome"] in ("completed", "exception"), report
    assert report["loop_ok"] and report["again_ok"], report
    assert report["spare_ok"], f"a socket made after the close was closed by the loop: {report}"
    assert report["spare_clean"], f"bytes for the closed fd went to a socket made after: {report}"
    assert report["stalls"] == [], report
