"""Recipe: uvicorn on uvcffi.

    uvicorn app:app --loop uvcffi:new_event_loop [--workers 2]

uvicorn (0.36+) takes for --loop either one of its names or "module:attr", which it imports
and calls with no arguments to make each loop (Config.get_loop_factory, then asyncio.Runner's
loop_factory): here uvcffi.new_event_loop.  With --workers, every worker process does the
same."""
import signal

import pytest
from recipekit import (
    APPS,
    Server,
    check_said_on_uvcffi,
    check_two_workers,
    exercise,
    free_port,
    python,
    require,
)

LOOP = "uvcffi:new_event_loop"


def uvicorn_argv(port, *extra):
    return python("-m", "uvicorn", "asgi_app:app", "--loop", LOOP,
                  "--host", "127.0.0.1", "--port", port, *extra)


@pytest.fixture(autouse=True)
def _uvicorn():
    require("uvicorn")
    import uvicorn.config

    if not hasattr(uvicorn.config.Config, "get_loop_factory"):
        pytest.skip(f"uvicorn {uvicorn.__version__} predates --loop module:attr "
                    "(loop factories came in uvicorn 0.36)")


def test_loop_option_resolves_to_uvcffi_new_event_loop():
    import uvicorn.config

    import uvcffi

    config = uvicorn.config.Config("asgi_app:app", loop=LOOP)
    assert config.get_loop_factory() is uvcffi.new_event_loop


# uvicorn shuts down, then raises the signal it caught again: SIGTERM's default action ends
# the process; SIGINT's is Python's KeyboardInterrupt, which uvicorn's main catches.
@pytest.mark.parametrize("stop, status", [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 0)],
                         ids=["SIGTERM", "SIGINT"])
def test_uvicorn_loop_uvcffi(tmp_path, stop, status):
    port = free_port()
    with Server(uvicorn_argv(port), tmp_path / "uvicorn.log", cwd=APPS) as server:
        server.wait_listening(port)
        exercise(port, pid=server.pid)
        rc = server.stop(stop)
        log = server.log()
        assert rc == status, log
        check_said_on_uvcffi(log, "startup", [server.pid])
        check_said_on_uvcffi(log, "shutdown", [server.pid])
        assert "Application shutdown complete." in log


@pytest.mark.timeout(240)
def test_uvicorn_workers_2(tmp_path):
    port = free_port()
    with Server(uvicorn_argv(port, "--workers", "2"), tmp_path / "uvicorn.log",
                cwd=APPS) as server:
        workers = check_two_workers(server, port, tmp_path)
        rc = server.stop()
        log = server.log()
        assert rc == 0, log
        check_said_on_uvcffi(log, "shutdown", workers)
