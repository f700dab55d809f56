"""Recipe: hypercorn on uvcffi.

hypercorn's --worker-class names its own loops (asyncio, uvloop, trio); its asyncio worker
makes its loop with asyncio.Runner() and so through the event loop policy.  Three ways:

    python -m uvcffi -m hypercorn --workers 0 app:app   # one process, uvcffi's policy
    uvcffi.run(hypercorn.asyncio.serve(app, config))     # from a program
    hypercorn --workers 2 app:app                        # the app module calls uvcffi.install()

With --workers 1 or more, hypercorn starts its workers as new processes (multiprocessing's
spawn), where the policy `python -m uvcffi` installed in the parent is not: they run on
asyncio's own loop unless the app module installs uvcffi when the worker imports it."""
import signal

import pytest
from recipekit import (
    APPS,
    Server,
    assert_uvcffi,
    check_said_on_uvcffi,
    check_two_workers,
    exercise,
    free_port,
    python,
    require,
    said,
)


@pytest.fixture(autouse=True)
def _hypercorn():
    require("hypercorn")


def test_hypercorn_under_python_m_uvcffi(tmp_path):
    port = free_port()
    argv = python("-m", "uvcffi", "-m", "hypercorn", "--workers", "0",
                  "--bind", f"127.0.0.1:{port}", "asgi_app:app")
    with Server(argv, tmp_path / "hypercorn.log", cwd=APPS) as server:
        server.wait_listening(port)
        exercise(port, pid=server.pid)
        rc = server.stop(signal.SIGINT)  # Ctrl-C
        log = server.log()
        assert rc == 0, log
        check_said_on_uvcffi(log, "startup", [server.pid])
        check_said_on_uvcffi(log, "shutdown", [server.pid])


def test_hypercorn_serve_in_uvcffi_run(tmp_path):
    port = free_port()
    argv = python(APPS / "serve_hypercorn.py", port)
    with Server(argv, tmp_path / "hypercorn.log", cwd=APPS) as server:
        server.wait_listening(port)
        exercise(port, pid=server.pid)
        rc = server.stop()
        log = server.log()
        assert rc == 0, log
        check_said_on_uvcffi(log, "startup", [server.pid])
        check_said_on_uvcffi(log, "shutdown", [server.pid])


@pytest.mark.timeout(240)
def test_hypercorn_workers_2_app_installs_uvcffi(tmp_path):
    port = free_port()
    argv = python("-m", "hypercorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
                  "asgi_app_installs:app")
    with Server(argv, tmp_path / "hypercorn.log", cwd=APPS) as server:
        workers = check_two_workers(server, port, tmp_path)
        rc = server.stop()
        log = server.log()
        assert rc == 0, log
        # hypercorn's supervisor returns when its first worker has exited and then
        # terminates the others (SIGTERM, which a worker does not handle), so only the
        # first is sure to get through its lifespan shutdown (the same on asyncio's loop).
        stopped = said(log, "shutdown")
        assert stopped and {info["pid"] for info in stopped} <= workers, log
        for info in stopped:
            assert_uvcffi(info)
